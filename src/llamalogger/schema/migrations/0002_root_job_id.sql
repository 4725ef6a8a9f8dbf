-- llamalogger 0002: the dual hierarchy's root_job_id, the LINKED category, its index, the backfill
-- function, and the backfill of existing rows, as online steps.
--
-- Each "-- step:" line starts a step: its name, how the runner runs it, and the lock it takes.
-- "transaction" steps run in a transaction of their own under a short lock_timeout, retried
-- with backoff; "concurrently" steps run outside a transaction; "backfill" is the runner's
-- batched backfill (no SQL here). Every step is recorded when it is done, so a re-run resumes.
--
-- Names are unqualified on purpose: the runner sets search_path to the target schema.
-- squawk-ignore-file require-timeout-settings -- the runner sets lock_timeout and statement_timeout before every step

-- step: linked_category | transaction | a brief lock on the enum type only
-- Allowed inside a transaction since PostgreSQL 12, as long as nothing here uses the new value
-- before commit (nothing does).
-- squawk-ignore require-enum-value-ordering -- LINKED comes last, as in the reference enum; nothing sorts by category
ALTER TYPE llama_log_category ADD VALUE IF NOT EXISTS 'LINKED';

-- step: root_job_id_column | transaction | ACCESS EXCLUSIVE on llama_log, for a catalog change only
-- Nullable without a default: a catalog change, no table rewrite, so the lock lasts a moment.
-- squawk-ignore prefer-text-field -- varchar(100) is the reference schema's type, like job_id
ALTER TABLE llama_log ADD COLUMN IF NOT EXISTS root_job_id varchar(100);

-- step: backfill_function | transaction | none
-- Fills root_job_id where it is NULL, job by job (docs/design.md section 4):
--   * a job's parent is the parent_job_id of its earliest row (lowest id);
--   * a job without a parent is a root; a parent job with no rows of its own is taken as the root;
--   * otherwise a job's root is its parent's root, however deep;
--   * jobs on or below a cycle stay NULL (unresolved); rows without a job_id stay NULL (orphans).
--
-- Set-based rather than walking up from every job: descending from the roots reaches each job
-- exactly once through its single parent, so the recursion needs neither a depth limit nor cycle
-- detection; the jobs it never reaches are exactly those on or below a cycle.
CREATE OR REPLACE FUNCTION llama_log_backfill_root_job_id()
RETURNS TABLE (filled bigint, orphans bigint, unresolved bigint, total bigint)
LANGUAGE plpgsql
-- Captures the search_path the runner set, so the unqualified names below resolve against the
-- schema this function was created in, whatever the caller's search_path is.
SET search_path FROM CURRENT
AS $fn$
DECLARE
    v_filled bigint;
BEGIN
    -- A second call in the same transaction would otherwise find the ON COMMIT DROP table still there.
    DROP TABLE IF EXISTS pg_temp.llama_log_backfill_jobs;

    CREATE TEMPORARY TABLE llama_log_backfill_jobs ON COMMIT DROP AS
        SELECT DISTINCT ON (l.job_id) l.job_id, l.parent_job_id AS parent
        FROM llama_log AS l
        WHERE l.job_id IS NOT NULL
        ORDER BY l.job_id, l.id;

    -- The key serves the "is the parent a known job" test, the parent index the descent.
    ALTER TABLE pg_temp.llama_log_backfill_jobs ADD PRIMARY KEY (job_id);
    CREATE INDEX ON pg_temp.llama_log_backfill_jobs (parent);
    ANALYZE pg_temp.llama_log_backfill_jobs;

    WITH RECURSIVE tree (job_id, root) AS (
        SELECT j.job_id, coalesce(j.parent, j.job_id)
        FROM pg_temp.llama_log_backfill_jobs AS j
        WHERE j.parent IS NULL
           OR NOT EXISTS (
               SELECT FROM pg_temp.llama_log_backfill_jobs AS p WHERE p.job_id = j.parent
           )
        UNION ALL
        SELECT child.job_id, tree.root
        FROM pg_temp.llama_log_backfill_jobs AS child
        JOIN tree ON child.parent = tree.job_id
    )
    UPDATE llama_log AS l
    SET root_job_id = tree.root
    FROM tree
    WHERE l.job_id = tree.job_id
      AND l.root_job_id IS NULL;
    GET DIAGNOSTICS v_filled = ROW_COUNT;

    DROP TABLE pg_temp.llama_log_backfill_jobs;

    RETURN QUERY
        SELECT v_filled,
               count(*) FILTER (WHERE l.job_id IS NULL),
               count(*) FILTER (WHERE l.job_id IS NOT NULL AND l.root_job_id IS NULL),
               count(*)
        FROM llama_log AS l;
END;
$fn$;

-- step: root_job_id_index | concurrently | SHARE UPDATE EXCLUSIVE on llama_log (writers and readers go on)
-- The runner drops an invalid index of this name (left by a killed run) before building it again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS llama_log_root_job_id_idx ON llama_log (root_job_id);

-- step: backfill_root_job_id | backfill | row locks of one batch at a time
