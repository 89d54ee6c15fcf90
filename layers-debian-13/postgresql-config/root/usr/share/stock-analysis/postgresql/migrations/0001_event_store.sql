-- 0001 event_store: the append-only event store.
-- Applied by /usr/lib/stock-analysis/postgresql-migrate in one transaction, as
-- the NOLOGIN role stock_analysis_owner (so the application user cannot drop
-- or disable the immutability trigger), and recorded in public.schema_migrations.
--
-- Fixed against the reference schema:
--  * immutability is a trigger refusing UPDATE, DELETE and TRUNCATE (the
--    reference's CHECK (false) refused every INSERT);
--  * UNIQUE (aggregate_type, aggregate_id, event_version) gives optimistic
--    concurrency: two writers appending the same version, one fails;
--  * no server settings here (they live in conf.d, where they take effect);
--  * no password here (first boot sets it from the instance's secret).

CREATE SCHEMA event_store;
COMMENT ON SCHEMA event_store IS 'stock-analysis event store (append-only events, snapshots, catalog)';

CREATE TABLE event_store.events (
    event_id        uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    event_type      varchar(255) NOT NULL,
    aggregate_type  varchar(255) NOT NULL,
    aggregate_id    uuid         NOT NULL,
    event_version   integer      NOT NULL CHECK (event_version > 0),
    event_data      jsonb        NOT NULL,
    metadata        jsonb        NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz  NOT NULL DEFAULT now(),
    created_by      varchar(255) NOT NULL DEFAULT 'system',
    CONSTRAINT events_aggregate_version_key
        UNIQUE (aggregate_type, aggregate_id, event_version)
);
-- The unique constraint's index also serves "all events of an aggregate in order".
CREATE INDEX events_event_type_created_at_idx ON event_store.events (event_type, created_at);
CREATE INDEX events_created_at_idx ON event_store.events (created_at);

CREATE FUNCTION event_store.refuse_event_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'event_store.events is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Append a compensating event instead.';
END;
$$;

CREATE TRIGGER events_no_update_delete
    BEFORE UPDATE OR DELETE ON event_store.events
    FOR EACH ROW EXECUTE FUNCTION event_store.refuse_event_change();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON event_store.events
    FOR EACH STATEMENT EXECUTE FUNCTION event_store.refuse_event_change();

CREATE TABLE event_store.snapshots (
    snapshot_id        uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregate_type     varchar(255) NOT NULL,
    aggregate_id       uuid         NOT NULL,
    aggregate_version  integer      NOT NULL CHECK (aggregate_version > 0),
    snapshot_data      jsonb        NOT NULL,
    created_at         timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT snapshots_aggregate_version_key
        UNIQUE (aggregate_type, aggregate_id, aggregate_version)
);

CREATE TABLE event_store.event_types (
    event_type      varchar(255) PRIMARY KEY,
    schema_version  integer      NOT NULL DEFAULT 1,
    json_schema     jsonb,
    description     text,
    created_at      timestamptz  NOT NULL DEFAULT now(),
    updated_at      timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE event_store.projections (
    projection_name           varchar(255) PRIMARY KEY,
    last_processed_event_id   uuid,
    last_processed_timestamp  timestamptz,
    projection_version        integer      NOT NULL DEFAULT 1,
    status                    varchar(50)  NOT NULL DEFAULT 'active',
    error_message             text,
    updated_at                timestamptz  NOT NULL DEFAULT now()
);

-- The application may append and read events, and keep snapshots, the event
-- type catalog and projection checkpoints; it may not change or remove events.
GRANT USAGE ON SCHEMA event_store TO stock_analysis_user;
GRANT SELECT, INSERT ON event_store.events TO stock_analysis_user;
GRANT SELECT, INSERT, DELETE ON event_store.snapshots TO stock_analysis_user;
GRANT SELECT, INSERT, UPDATE ON event_store.event_types TO stock_analysis_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON event_store.projections TO stock_analysis_user;
