# First-boot step 40: Erlang cookie, RabbitMQ start, topology check, the
# application user, no guest.
. /usr/lib/stock-analysis/firstboot-lib.sh

VHOST=/stock-analysis
APP_USER=stock-analysis
SECRET=/etc/stock-analysis/secrets/rabbitmq.password
COOKIE=/var/lib/rabbitmq/.erlang.cookie

# 1. The Erlang cookie (shared secret of the node and its CLI tools), 0400 rabbitmq.
if [ -s "$COOKIE" ]; then
    log "Erlang cookie exists, kept"
else
    tmp=$(mktemp "$COOKIE.XXXXXX")
    od -An -v -tx1 -N 32 /dev/urandom | tr -d ' \n' | tr '0-9a-f' 'A-P' > "$tmp"
    [ "$(wc -c < "$tmp")" -eq 64 ] || die "could not make the Erlang cookie"
    chown rabbitmq:rabbitmq "$tmp"; chmod 0400 "$tmp"; sync "$tmp"
    mv -f "$tmp" "$COOKIE"
    log "Erlang cookie created"
fi
chown rabbitmq:rabbitmq "$COOKIE"; chmod 0400 "$COOKIE"

make_secret "$SECRET" stock-analysis

# 2. Start the node; it imports /etc/rabbitmq/definitions.json while booting.
# rabbitmqctl as the rabbitmq user (its cookie), without su's PAM session noise;
# -s: no table headers.
rmq() {
    as_user rabbitmq env HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmqctl -s "$@"
}
# rmq_password COMMAND USER: add_user, change_password or authenticate_user with
# the password on stdin. Exactly these two arguments, no -s: since 3.13
# rabbitmqctl's shell wrapper lets the CLI read stdin only when it sees
# `COMMAND USER` alone (it counts "$@"); with one more argument it starts the
# CLI with -noinput and the read never returns (RabbitMQ 4.0 on Debian 13 hung
# here). 3.10 reads stdin either way. Its prompt and banner go to /dev/null; a
# time limit turns any future hang into a failed step that says so.
rmq_password() {
    as_user rabbitmq timeout 120 env HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmqctl "$1" "$2" >/dev/null
}
start_unit epmd.socket
start_unit rabbitmq-server.service
wait_until 180 "RabbitMQ node rabbit@localhost" rmq await_startup

if ! rmq list_vhosts | grep -qx "$VHOST"; then
    log "vhost $VHOST missing after boot: importing the definitions now"
    rmq import_definitions /etc/rabbitmq/definitions.json
fi
rmq list_vhosts | grep -qx "$VHOST" || die "vhost $VHOST does not exist"

# 3. The application user: password from the instance secret, fed on stdin
#    (never in argv or in a file RabbitMQ reads), rights on its vhost only,
#    no tags (not administrator, no management UI).
if rmq list_users | awk '{print $1}' | grep -qx "$APP_USER"; then
    if read_secret "$SECRET" | rmq_password authenticate_user "$APP_USER" 2>/dev/null; then
        log "user $APP_USER exists with the instance password"
    else
        read_secret "$SECRET" | rmq_password change_password "$APP_USER" \
            || die "could not set the password of $APP_USER"
        log "user $APP_USER: password set from $SECRET"
    fi
else
    read_secret "$SECRET" | rmq_password add_user "$APP_USER" || die "could not add user $APP_USER"
    log "user $APP_USER created"
fi
rmq set_user_tags "$APP_USER"
rmq set_permissions -p "$VHOST" "$APP_USER" '.*' '.*' '.*'
# Nowhere else: drop any permission on other vhosts.
for vh in $(rmq list_user_permissions "$APP_USER" | awk '{print $1}'); do
    [ "$vh" = "$VHOST" ] || rmq clear_permissions -p "$vh" "$APP_USER"
done

# 4. No default guest user.
if rmq list_users | awk '{print $1}' | grep -qx guest; then
    rmq delete_user guest
    log "user guest deleted"
fi

# 5. Prove it: the application user authenticates with the instance password.
read_secret "$SECRET" | rmq_password authenticate_user "$APP_USER" \
    || die "$APP_USER cannot authenticate with the instance password"
log "RabbitMQ ready: vhost $VHOST, user $APP_USER, $(rmq list_queues -p "$VHOST" name | wc -l) queues"
