# Shell helpers for the first-boot steps (sourced; POSIX sh).
# Every function is idempotent: calling it again with the same arguments
# changes nothing.

log() { echo "${STEP:-firstboot}: $*"; }
die() { echo "${STEP:-firstboot}: ERROR: $*" >&2; exit 1; }

# make_secret FILE GROUP: a random 64-hex-digit secret in FILE, mode 0640 root:GROUP.
# An existing non-empty FILE is kept (this is what makes a resumed first boot
# and a second boot change nothing). Written to a temporary file, flushed and
# renamed, so a cut-off boot never leaves a half-written secret.
make_secret() {
    _file=$1 _group=$2
    if [ -s "$_file" ]; then
        log "secret $_file exists, kept"
    else
        _tmp=$(mktemp "$_file.XXXXXX")
        head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' > "$_tmp"
        chown "root:$_group" "$_tmp"
        chmod 0640 "$_tmp"
        sync "$_tmp"
        mv -f "$_tmp" "$_file"
        log "secret $_file created"
    fi
    chown "root:$_group" "$_file"
    chmod 0640 "$_file"
}

# read_secret FILE: print the secret (no trailing newline).
read_secret() { tr -d '\n' < "$1"; }

# write_file FILE MODE OWNER:GROUP < content: replace FILE only if the content
# differs (atomically), then enforce mode and owner.
write_file() {
    _file=$1 _mode=$2 _owner=$3
    _tmp=$(mktemp "$_file.XXXXXX")
    cat > "$_tmp"
    if [ -e "$_file" ] && cmp -s "$_tmp" "$_file"; then
        rm -f "$_tmp"
    else
        chown "$_owner" "$_tmp"; chmod "$_mode" "$_tmp"; sync "$_tmp"
        mv -f "$_tmp" "$_file"
        log "wrote $_file"
    fi
    chown "$_owner" "$_file"; chmod "$_mode" "$_file"
}

# wait_until SECONDS WHAT COMMAND...: run COMMAND every second until it succeeds.
wait_until() {
    _limit=$1 _what=$2; shift 2
    _i=0
    until "$@" >/dev/null 2>&1; do
        _i=$((_i + 1))
        [ "$_i" -lt "$_limit" ] || die "$_what: not ready after $_limit s"
        sleep 1
    done
    log "$_what: ready"
}

# as_user USER COMMAND...: run COMMAND as a system user (no PAM session, no
# log noise; unlike su/runuser).
as_user() {
    _u=$1; shift
    setpriv --reuid="$_u" --regid="$_u" --init-groups --reset-env "$@"
}

# start_unit UNIT: start a unit (no-op when it runs) and fail if it does not.
start_unit() {
    systemctl start "$1" || { systemctl status --no-pager "$1" >&2 || true; die "could not start $1"; }
}
