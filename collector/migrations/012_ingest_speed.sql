-- Less work per stored event (bench/bench_ingest.py).
-- The factory panels read state intervals since 011; no query reads events by factory any more,
-- and this index cost a fifth of every event insert.
DROP INDEX IF EXISTS events_factory_state_ts;
