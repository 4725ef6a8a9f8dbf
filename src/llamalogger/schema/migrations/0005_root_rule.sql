-- llamalogger 0005: the root-resolution rule in one function, llama_log_job_roots(), called by
-- the insert trigger of 0004, by the backfill function of 0002 and by the batched backfill
-- (`llamalog backfill`, the backfill steps), which until now each spelled the rule out.
-- Nothing in the table changes: three function definitions, no lock on llama_log.
--
-- Names are unqualified on purpose: the runner sets search_path to the target schema.
-- squawk-ignore-file require-timeout-settings -- the runner sets lock_timeout and statement_timeout before every step

-- step: job_roots_function | transaction | none
-- The root of each of p_jobs and of every job above them (docs/design.md section 4):
--   * a job that already has a row with a root shares it (every row of a job has one root);
--   * otherwise its parent is the parent_job_id of its earliest row (lowest id); a job with
--     no rows yet, p_new_job, takes p_new_parent: the row being inserted is its first;
--   * a job without a parent is a root; a parent job with no rows of its own is the root;
--   * otherwise a job's root is its parent's root, however deep;
--   * jobs on or below a cycle get no row here (unresolved).
--
-- Walks up from p_jobs through the job_id index (UNION, not ALL, ends the walk on a cycle),
-- then descends from the jobs whose root is known: each job has one parent, so the descent
-- reaches each job once and needs neither a depth limit nor cycle detection; the jobs it never
-- reaches are exactly those on or below a cycle. The batched backfill runs this same text as a
-- temporary function while the schema is older than 0005 (see schema/_backfill.py).
CREATE OR REPLACE FUNCTION llama_log_job_roots(
    p_jobs varchar[],
    p_new_job varchar DEFAULT NULL,
    p_new_parent varchar DEFAULT NULL
)
-- varchar without a length: PostgreSQL ignores the lengths of arguments and results anyway,
-- and the recursive query below needs one type throughout.
RETURNS TABLE (job_id varchar, root varchar)
LANGUAGE plpgsql
STABLE
-- Captures the search_path the runner set, so the unqualified names below resolve against the
-- schema this function was created in, whatever the caller's search_path is.
SET search_path FROM CURRENT
AS $fn$
-- job_id and root name the result columns too; in the query they always mean columns.
#variable_conflict use_column
DECLARE
    v_root varchar;
BEGIN
    -- The trigger's usual case, a later row of a job that has its root, in one look-up: the
    -- first rule on its own, which the query below would apply all the same, at twice the cost
    -- of a whole insert.
    IF cardinality(p_jobs) = 1 THEN
        SELECT l.root_job_id INTO v_root FROM llama_log AS l
        WHERE l.job_id = p_jobs[1] AND (l.root_job_id IS NOT NULL) IS TRUE
        LIMIT 1;
        IF v_root IS NOT NULL THEN
            job_id := p_jobs[1];
            root := v_root;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY
    WITH RECURSIVE up (job_id, parent, root) AS (
        -- One step below each asked-for job, so that the lookup below is written once.
        SELECT NULL::varchar, asked.job_id, NULL::varchar
        FROM unnest(p_jobs) AS asked (job_id)
        WHERE asked.job_id IS NOT NULL
        UNION
        SELECT up.parent,
               CASE
                   WHEN known.root IS NOT NULL THEN NULL
                   WHEN earliest.has_rows THEN earliest.parent
                   WHEN up.parent = p_new_job THEN p_new_parent
               END::varchar,
               known.root::varchar
        FROM up
        -- "IS TRUE" keeps the root_job_id index out of it: while a backfill runs, few rows
        -- have a root and that index looks cheap, but then every look-up reads all of them.
        LEFT JOIN LATERAL (
            SELECT l.root_job_id AS root FROM llama_log AS l
            WHERE l.job_id = up.parent AND (l.root_job_id IS NOT NULL) IS TRUE
            LIMIT 1
        ) AS known ON true
        -- "id + 0": order within the job's own rows (found through the job_id index), never
        -- a walk along the primary key looking for a job that may have no rows at all.
        LEFT JOIN LATERAL (
            SELECT l.parent_job_id AS parent, true AS has_rows
            FROM llama_log AS l
            WHERE known.root IS NULL AND l.job_id = up.parent
            ORDER BY l.id + 0
            LIMIT 1
        ) AS earliest ON true
        WHERE up.parent IS NOT NULL AND up.root IS NULL
    ),
    tree (job_id, root) AS (
        SELECT j.job_id, coalesce(j.root, j.job_id)
        FROM up AS j
        WHERE j.job_id IS NOT NULL AND (j.root IS NOT NULL OR j.parent IS NULL)
        UNION ALL
        SELECT child.job_id, tree.root
        FROM up AS child
        JOIN tree ON child.parent = tree.job_id
        WHERE child.job_id IS NOT NULL AND child.root IS NULL
    )
    SELECT tree.job_id, tree.root FROM tree;
END;
$fn$;

-- step: fill_function_calls_rule | transaction | none
-- The trigger of 0004 keeps its name and its WHEN condition; its function now asks the rule.
CREATE OR REPLACE FUNCTION llama_log_fill_root_job_id()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
BEGIN
    SELECT r.root INTO NEW.root_job_id
    FROM llama_log_job_roots(ARRAY[NEW.job_id], NEW.job_id, NEW.parent_job_id) AS r
    WHERE r.job_id = NEW.job_id;
    RETURN NEW;  -- no row from the rule: a cycle, unresolved (NULL)
END;
$fn$;

-- step: backfill_function_calls_rule | transaction | none
-- 0002's function for scripts: the same result columns, in one transaction, through the rule.
CREATE OR REPLACE FUNCTION llama_log_backfill_root_job_id()
RETURNS TABLE (filled bigint, orphans bigint, unresolved bigint, total bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
DECLARE
    v_filled bigint;
BEGIN
    UPDATE llama_log AS l
    SET root_job_id = r.root
    FROM llama_log_job_roots(ARRAY(
        SELECT DISTINCT p.job_id FROM llama_log AS p
        WHERE p.root_job_id IS NULL AND p.job_id IS NOT NULL
    )) AS r
    WHERE l.job_id = r.job_id
      AND l.root_job_id IS NULL;
    GET DIAGNOSTICS v_filled = ROW_COUNT;

    RETURN QUERY
        SELECT v_filled,
               count(*) FILTER (WHERE l.job_id IS NULL),
               count(*) FILTER (WHERE l.job_id IS NOT NULL AND l.root_job_id IS NULL),
               count(*)
        FROM llama_log AS l;
END;
$fn$;
