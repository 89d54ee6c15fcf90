#!/bin/sh
# Runs at build time in a chroot of the stack below (after every apt layer that
# runs maintainer scripts). A template must not carry anything that has to be
# unique per container: those are made at first boot (firstboot.d/*).
set -eu

# ssl-cert's postinst (a dependency of postgresql-common) makes a snakeoil pair
# and a hash link to it. Proxmox would replace it, but only if present; nothing
# here uses TLS (PostgreSQL has ssl = off and listens on loopback).
rm -f /etc/ssl/certs/ssl-cert-snakeoil.pem /etc/ssl/private/ssl-cert-snakeoil.key
find /etc/ssl/certs -maxdepth 1 -type l ! -exec test -e {} \; -print -delete

# rabbitmq-server's postinst makes the Erlang cookie; first boot makes a new one.
rm -f /var/lib/rabbitmq/.erlang.cookie /root/.erlang.cookie

# Never carried: SSH host keys (no SSH server is installed; Proxmox writes keys
# itself when /etc/ssh exists), systemd's random seed and credential secret.
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub \
      /var/lib/systemd/random-seed /var/lib/systemd/credential.secret

# The machine id must be empty (or absent): Proxmox deletes it at create, and
# an empty one makes systemd treat the next boot as the first boot.
if [ -s /etc/machine-id ]; then : > /etc/machine-id; fi
rm -f /var/lib/dbus/machine-id

# postgresql-preseed must have stopped the package from creating a cluster, of
# whichever major version the distribution ships (15 on Debian 12, 17 on 13).
found=""
for d in /etc/postgresql /var/lib/postgresql/[0-9]*; do
    if [ -d "$d" ] && [ -n "$(ls -A "$d")" ]; then found="$found $d"; fi
done
if [ -n "$found" ]; then
    echo "scrub: a PostgreSQL cluster exists at build time (${found# }); postgresql-preseed did not take effect" >&2
    exit 1
fi
