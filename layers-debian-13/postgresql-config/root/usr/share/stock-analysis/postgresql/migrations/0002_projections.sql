-- 0002 projections: read models derived from the events.
--
-- projections.portfolio_positions: one row per symbol over the open positions
-- (aggregate_type 'Position'; the latest of PositionOpened / PositionUpdated /
-- PositionClosed per position decides, closed positions drop out).
-- Fixed against the reference: the view has a UNIQUE index (symbol), without
-- which REFRESH MATERIALIZED VIEW CONCURRENTLY is refused.

CREATE SCHEMA projections;
COMMENT ON SCHEMA projections IS 'stock-analysis read models (materialized views over event_store.events)';

CREATE MATERIALIZED VIEW projections.portfolio_positions AS
WITH latest AS (
    SELECT DISTINCT ON (e.aggregate_id)
           e.aggregate_id,
           e.event_type,
           e.event_data,
           e.created_at
      FROM event_store.events e
     WHERE e.aggregate_type = 'Position'
       AND e.event_type IN ('PositionOpened', 'PositionUpdated', 'PositionClosed')
     ORDER BY e.aggregate_id, e.event_version DESC
)
SELECT l.event_data ->> 'symbol'                                   AS symbol,
       sum((l.event_data ->> 'quantity')::numeric)                AS quantity,
       CASE WHEN sum((l.event_data ->> 'quantity')::numeric) = 0 THEN NULL
            ELSE sum((l.event_data ->> 'quantity')::numeric
                     * (l.event_data ->> 'average_price')::numeric)
                 / sum((l.event_data ->> 'quantity')::numeric)
       END                                                        AS average_price,
       sum((l.event_data ->> 'current_value')::numeric)           AS current_value,
       max(l.created_at)                                          AS last_updated
  FROM latest l
 WHERE l.event_type <> 'PositionClosed'
   AND l.event_data ? 'symbol'
 GROUP BY l.event_data ->> 'symbol'
WITH DATA;

CREATE UNIQUE INDEX portfolio_positions_symbol_key ON projections.portfolio_positions (symbol);

-- Refresh every materialized view without blocking readers. SECURITY DEFINER:
-- REFRESH needs ownership, which the application user does not have.
CREATE FUNCTION projections.refresh_materialized_views() RETURNS void
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY projections.portfolio_positions;
END;
$$;
REVOKE ALL ON FUNCTION projections.refresh_materialized_views() FROM PUBLIC;

GRANT USAGE ON SCHEMA projections TO stock_analysis_user;
GRANT SELECT ON projections.portfolio_positions TO stock_analysis_user;
GRANT EXECUTE ON FUNCTION projections.refresh_materialized_views() TO stock_analysis_user;
