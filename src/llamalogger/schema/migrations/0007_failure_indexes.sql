-- llamalogger 0007: partial indexes on the failures, so that `llamalog runs --failed` (and
-- queries.runs(failed=True)) finds the failed runs by reading the failures alone, instead of
-- every job record and every event (4.1 s over 10,000 runs and 1,000,000 events before).
--
-- Names are unqualified on purpose: the runner sets search_path to the target schema.
-- squawk-ignore-file require-timeout-settings -- the runner sets lock_timeout and statement_timeout before every step

-- step: failed_job_index | concurrently | SHARE UPDATE EXCLUSIVE on llama_job (writers and readers go on)
-- The runner drops an invalid index of this name (left by a killed run) before building it again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS llama_job_failed_idx ON llama_job (root_job_id)
    WHERE status = 'failed';

-- step: failed_event_index | concurrently | SHARE UPDATE EXCLUSIVE on llama_log (writers and readers go on)
-- The runner drops an invalid index of this name (left by a killed run) before building it again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS llama_log_failed_idx ON llama_log (root_job_id, job_id)
    WHERE category = 'FAILED';
