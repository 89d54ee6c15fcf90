# First-boot step 20: the PostgreSQL cluster (of the one major version installed), roles,
# database and schema.
. /usr/lib/stock-analysis/firstboot-lib.sh

V=$(/usr/lib/stock-analysis/postgresql-major) C=main
DB=stock_analysis_event_store
APP=stock_analysis_user
OWNER=stock_analysis_owner
SECRET=/etc/stock-analysis/secrets/postgresql.password
CONF=/etc/postgresql/$V/$C
DATA=/var/lib/postgresql/$V/$C

make_secret "$SECRET" stock-analysis

# 1. The cluster (its system identifier, WAL and catalog are per instance).
if [ -f "$DATA/global/pg_control" ] && [ -f "$CONF/postgresql.conf" ]; then
    log "cluster $V/$C exists"
else
    if [ -e "$CONF" ] || [ -e "$DATA" ]; then
        # A cluster without pg_control never started: no data can be lost.
        log "removing the incomplete cluster $V/$C an interrupted boot left"
        systemctl stop "postgresql@$V-$C" 2>/dev/null || true
        pg_dropcluster "$V" "$C" 2>/dev/null || rm -rf "$CONF" "$DATA"
    fi
    log "creating cluster $V/$C (en_US.UTF-8, UTF8, data checksums)"
    pg_createcluster --locale en_US.UTF-8 --encoding UTF8 --start-conf auto "$V" "$C" \
        -- --auth-local=peer --auth-host=scram-sha-256 --data-checksums
fi
write_file "$CONF/conf.d/00-stock-analysis.conf" 0644 postgres:postgres \
    < /usr/share/stock-analysis/postgresql/stock-analysis.conf
write_file "$CONF/pg_hba.conf" 0640 postgres:postgres \
    < /usr/share/stock-analysis/postgresql/pg_hba.conf
/usr/lib/stock-analysis/postgresql-tune "$V" "$C"

# The generator adds postgresql@$V-main to postgresql.service from now on.
systemctl daemon-reload
start_unit "postgresql@$V-$C"
wait_until 120 "PostgreSQL $V/$C" as_user postgres pg_isready -q

psql_su() { as_user postgres /usr/bin/psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# 2. Roles: a NOLOGIN owner of the schema objects, and the application user.
psql_su -d postgres <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$OWNER') THEN
        CREATE ROLE $OWNER NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$APP') THEN
        CREATE ROLE $APP LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT 90;
    END IF;
END
\$\$;
SQL

# The password comes from the instance secret, fed on stdin (never in argv).
# Set only when there is none or a login with it fails, so that running this
# step again changes nothing.
app_login() {
    PGPASSWORD=$(read_secret "$SECRET") PGCONNECT_TIMEOUT=5 \
        /usr/bin/psql -X -q -w -h 127.0.0.1 -U "$APP" -d postgres -c 'SELECT 1' >/dev/null 2>&1
}
has_password=$(psql_su -d postgres -At -c "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = '$APP'")
if [ "$has_password" = t ] && app_login; then
    log "role $APP: password already matches the instance secret"
else
    { printf "ALTER ROLE %s WITH LOGIN PASSWORD '" "$APP"; read_secret "$SECRET"; printf "';\n"; } \
        | psql_su -d postgres
    log "role $APP: password set from $SECRET"
fi

# 3. The database, owned by the application user.
if [ "$(psql_su -d postgres -At -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    psql_su -d postgres -c "CREATE DATABASE $DB OWNER $APP ENCODING 'UTF8' LC_COLLATE 'en_US.UTF-8' LC_CTYPE 'en_US.UTF-8' TEMPLATE template0"
    log "database $DB created"
else
    log "database $DB exists"
fi
psql_su -d "$DB" <<SQL
REVOKE ALL ON DATABASE $DB FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE $DB TO $APP;
-- TEMPORARY: REFRESH MATERIALIZED VIEW CONCURRENTLY (run as the owner) needs it.
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE $DB TO $OWNER;
ALTER ROLE $APP IN DATABASE $DB SET search_path = event_store, projections, public;
SQL

# 4. The schema, as versioned migrations.
/usr/lib/stock-analysis/postgresql-migrate

# 5. Prove it: the application user logs in over TCP with the secret and sees the schema.
PGPASSWORD=$(read_secret "$SECRET") /usr/bin/psql -X -q -w -h 127.0.0.1 -U "$APP" -d "$DB" -At \
    -c 'SELECT count(*) FROM event_store.events' >/dev/null \
    || die "$APP cannot read event_store.events with the instance password"
log "database $DB ready for $APP"
