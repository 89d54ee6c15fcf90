# First-boot step 10: accounts and the secrets directory.
. /usr/lib/stock-analysis/firstboot-lib.sh

# The account is made at build time (services-accounts layer); this keeps a
# container whose /etc/passwd lost it working. No-op otherwise.
systemd-sysusers /usr/lib/sysusers.d/stock-analysis.conf

# Instance secrets: the directory is readable by the stock-analysis group
# (the services), each file 0640 root:<group that needs it>.
install -d -m 0750 -o root -g stock-analysis /etc/stock-analysis/secrets
log "secrets directory /etc/stock-analysis/secrets ready"
