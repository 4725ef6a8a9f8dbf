-- llamalogger 0003: a record of the spill files replayed into llama_log.
--
-- A writer that cannot reach the database keeps its batches in spill files on local disk and
-- replays them later. Each replay inserts the file's id here in the same transaction as its
-- rows, so a file whose replay committed but was not yet deleted (the process died in between)
-- is recognised by the primary key and never written twice. A writer role needs INSERT here
-- as well as on llama_log.
--
-- Names are unqualified on purpose: the runner sets search_path to the target schema.
-- squawk-ignore-file require-timeout-settings -- the runner sets lock_timeout and statement_timeout before every step

-- step: spill_replays | transaction | none (creates a new table only)

-- squawk-ignore prefer-robust-stmts -- one step in one transaction with its record: applied whole or not at all
CREATE TABLE llama_log_spill_replays (
    spill_id    text PRIMARY KEY,
    -- squawk-ignore prefer-bigint-over-int -- the events of one spill file, at most one batch
    events      integer NOT NULL,
    replayed_at timestamptz NOT NULL DEFAULT now()
);
