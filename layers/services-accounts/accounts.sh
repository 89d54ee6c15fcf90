#!/bin/sh
# Runs at build time in a chroot. systemd-sysusers at boot reads the same file,
# so the account is also (re)made if /etc/passwd ever loses it.
set -eu
install -d -m 0755 /usr/lib/sysusers.d
cat > /usr/lib/sysusers.d/stock-analysis.conf <<'CONF'
# stock-analysis services (see docs/stock-analysis.md). Fixed ids: 950 is
# below the range systemd-sysusers allocates from (999 down) in this template
# and above the one adduser allocates from (100 up).
g stock-analysis 950
u stock-analysis 950:950 "stock-analysis services" /var/lib/stock-analysis /usr/sbin/nologin
CONF
systemd-sysusers /usr/lib/sysusers.d/stock-analysis.conf
test "$(id -u stock-analysis):$(id -g stock-analysis)" = "950:950"
