#!/bin/sh
# Runs once at build time in a chroot of base-os. Only what files cannot express lives here.
set -eu

# en_US.UTF-8 for PostgreSQL (initdb --locale) and the system default; C.UTF-8 is built in.
sed -i 's/^# *\(en_US\.UTF-8 UTF-8\)$/\1/' /etc/locale.gen
grep -qx 'en_US.UTF-8 UTF-8' /etc/locale.gen
locale-gen
localedef --list-archive | grep -qix 'en_US.utf8'
