-- llamalogger 0004: rows written without a root_job_id (by code written for 0001, imports, plain
-- SQL) get one on insert, computed from the rows already present by the backfill rules; then
-- the rows that arrived while no trigger existed are backfilled.
--
-- Names are unqualified on purpose: the runner sets search_path to the target schema.
-- squawk-ignore-file require-timeout-settings -- the runner sets lock_timeout and statement_timeout before every step

-- step: fill_function | transaction | none
-- The rules of docs/design.md section 4, walking up from the new row's job:
--   * a job that already has a row with a root shares it (every row of a job has one root);
--   * otherwise its parent is the parent_job_id of its earliest row, or of this row when it
--     is the job's first;
--   * a job without a parent is the root; a parent job with no rows of its own is the root;
--   * a walk that comes back to a job it passed is a cycle: the row stays NULL (unresolved).
CREATE OR REPLACE FUNCTION llama_log_fill_root_job_id()
RETURNS trigger
LANGUAGE plpgsql
-- As for the backfill function: unqualified names resolve in the schema the trigger belongs to.
SET search_path FROM CURRENT
AS $fn$
DECLARE
    v_job varchar(100) := NEW.job_id;
    v_root varchar(100);
    v_parent varchar(100);
    v_seen text[] := ARRAY[]::text[];
BEGIN
    LOOP
        SELECT l.root_job_id INTO v_root
        FROM llama_log AS l
        WHERE l.job_id = v_job AND l.root_job_id IS NOT NULL
        LIMIT 1;
        IF v_root IS NOT NULL THEN
            NEW.root_job_id := v_root;
            RETURN NEW;
        END IF;
        IF v_job = ANY (v_seen) THEN
            RETURN NEW;  -- a cycle: unresolved, as the backfill leaves it
        END IF;
        v_seen := v_seen || v_job::text;
        -- "id + 0": order within the job's own rows (found through the job_id index), never
        -- a walk along the primary key looking for a job that may have no rows at all.
        SELECT l.parent_job_id INTO v_parent
        FROM llama_log AS l
        WHERE l.job_id = v_job
        ORDER BY l.id + 0
        LIMIT 1;
        IF NOT FOUND THEN
            IF v_job IS DISTINCT FROM NEW.job_id THEN
                NEW.root_job_id := v_job;  -- a parent job with no rows of its own
                RETURN NEW;
            END IF;
            v_parent := NEW.parent_job_id;  -- the job's first row decides its parent
        END IF;
        IF v_parent IS NULL THEN
            NEW.root_job_id := v_job;
            RETURN NEW;
        END IF;
        v_job := v_parent;
    END LOOP;
END;
$fn$;

-- step: fill_trigger | transaction | SHARE ROW EXCLUSIVE on llama_log, for a catalog change only
-- The WHEN condition is checked before the function is called: rows that arrive with their
-- root (everything LlamaLogger writes) or without a job never call it.
CREATE OR REPLACE TRIGGER llama_log_fill_root_job_id
    BEFORE INSERT ON llama_log
    FOR EACH ROW
    WHEN (NEW.root_job_id IS NULL AND NEW.job_id IS NOT NULL)
    EXECUTE FUNCTION llama_log_fill_root_job_id();

-- step: backfill_late_rows | backfill | row locks of one batch at a time
