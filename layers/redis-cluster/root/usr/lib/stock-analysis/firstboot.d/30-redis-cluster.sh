# First-boot step 30: the Redis password, the three nodes, the cluster.
. /usr/lib/stock-analysis/firstboot-lib.sh

PORTS="6379 6380 6381"
SECRET=/etc/stock-analysis/secrets/redis.password

make_secret "$SECRET" stock-analysis
# The nodes read the password from auth.conf (root:redis 0640).
{ printf 'requirepass '; read_secret "$SECRET"; printf '\nmasterauth '; read_secret "$SECRET"; printf '\n'; } \
    | write_file /etc/redis/cluster/auth.conf 0640 root:redis

# REDISCLI_AUTH keeps the password out of argv.
REDISCLI_AUTH=$(read_secret "$SECRET"); export REDISCLI_AUTH
rc() { _p=$1; shift; redis-cli --no-auth-warning -h 127.0.0.1 -p "$_p" "$@"; }
info_field() { rc "$1" cluster info | tr -d '\r' | sed -n "s/^$2://p"; }

for p in $PORTS; do
    start_unit "redis-cluster@$p.service"
done
for p in $PORTS; do
    wait_until 60 "redis node $p" sh -c "redis-cli --no-auth-warning -h 127.0.0.1 -p $p ping | grep -qx PONG"
done

cluster_ok() {
    for p in $PORTS; do
        [ "$(info_field "$p" cluster_state)" = ok ] || return 1
        [ "$(info_field "$p" cluster_slots_assigned)" = 16384 ] || return 1
        [ "$(info_field "$p" cluster_known_nodes)" = 3 ] || return 1
    done
}

if cluster_ok; then
    log "cluster formed earlier: state ok, 16384 slots, 3 nodes"
else
    # Not (fully) formed: a first boot cut off during 'cluster create'. The
    # nodes hold no data yet, so start them over from scratch.
    for p in $PORTS; do
        keys=$(rc "$p" dbsize)
        [ "$keys" = 0 ] || die "node $p holds $keys keys but the cluster is not formed; not touching it"
        if [ "$(info_field "$p" cluster_known_nodes)" != 1 ] || [ "$(info_field "$p" cluster_slots_assigned)" != 0 ]; then
            log "node $p: resetting a half-formed cluster state"
            rc "$p" cluster reset hard >/dev/null
        fi
    done
    log "forming the cluster: $PORTS, 3 masters, no replicas"
    # shellcheck disable=SC2046
    redis-cli --no-auth-warning --cluster create $(for p in $PORTS; do printf '127.0.0.1:%s ' "$p"; done) \
        --cluster-replicas 0 --cluster-yes
    wait_until 60 "cluster state ok on all nodes" cluster_ok
fi
log "cluster: $(info_field 6379 cluster_state), $(info_field 6379 cluster_slots_assigned) slots, $(info_field 6379 cluster_size) masters"
