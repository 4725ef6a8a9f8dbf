"""What every benchmark script needs: a server and a scratch schema it removes afterwards."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql

from llamalogger.schema import migrate


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[str]:
    """``dsn``, else ``$LLAMALOG_DSN``, else a temporary embedded PostgreSQL."""
    dsn = dsn or os.environ.get("LLAMALOG_DSN")
    if dsn:
        yield dsn
        return
    from llamalogger.embedded import EmbeddedPostgres

    with EmbeddedPostgres(ephemeral=True) as server:
        yield server.dsn


@contextlib.contextmanager
def scratch_schema(dsn: str | None) -> Iterator[tuple[str, str, str]]:
    """(dsn, schema, server version) for a freshly migrated schema, dropped at the end."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with database(dsn) as target:
        with psycopg.connect(target, autocommit=True) as conn:
            migrate(conn, schema=schema)
            row = conn.execute("SHOW server_version").fetchone()
        try:
            yield target, schema, str(row[0]) if row else "?"
        finally:
            with psycopg.connect(target, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# --- fault benchmarks: a server that may be stopped, and the table as ground truth ----------

MACHINE_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN_APP = "faultbench-admin"  # the bench's own sessions: never terminated by it


class Server:
    """A PostgreSQL the fault benchmarks write to, and (maybe) stop and start.

    ``embedded``: an ephemeral server of our own, always restartable. ``machine``: the
    machine's cluster, restarted with ``pg_ctlcluster`` only when ``allow_restart``.
    """

    def __init__(self, kind: str, dsn: str, *, can_restart: bool, embedded: object = None) -> None:
        self.kind = kind
        self.dsn = dsn
        self.can_restart = can_restart
        self._embedded = embedded
        self.version = "?"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit session of the bench (not the logger's), failing fast when down."""
        return psycopg.connect(
            self.dsn, autocommit=True, connect_timeout=2, application_name=ADMIN_APP
        )

    def accepting(self) -> bool:
        try:
            with self.admin():
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        if not self.can_restart:
            raise RuntimeError("this server may not be restarted (see --allow-restart)")
        if self._embedded is not None:
            self._embedded.stop_server()  # type: ignore[attr-defined]
        else:
            _pg_ctlcluster("stop")

    def start(self) -> float:
        """Start the server; returns the monotonic time at which it accepted a connection."""
        if self._embedded is not None:
            self._embedded.start_server()  # type: ignore[attr-defined]
        else:
            _pg_ctlcluster("start")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.accepting():
                return time.monotonic()
            time.sleep(0.01)
        raise RuntimeError("the server did not accept connections within 60 s of its start")

    def ensure_up(self) -> None:
        if not self.accepting() and self.can_restart:
            self.start()


def _pg_ctlcluster(action: str) -> None:
    import subprocess

    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", action],
        check=True,
        timeout=120,
    )


@contextlib.contextmanager
def fault_server(
    kind: str, *, allow_restart: bool = False, dsn: str = MACHINE_DSN
) -> Iterator[Server]:
    """The server named by ``--server`` (``machine``: the one at ``dsn``); a machine server
    stopped by the bench is always started again before this returns."""
    if kind == "machine":
        server = Server("machine", dsn, can_restart=allow_restart)
        try:
            server.version = _version(server)
            yield server
        finally:
            if allow_restart and not server.accepting():
                server.start()
        return
    from llamalogger.embedded import EmbeddedPostgres

    with EmbeddedPostgres(ephemeral=True) as embedded:
        server = Server("embedded", embedded.dsn, can_restart=True, embedded=embedded)
        server.version = _version(server)
        yield server


def _version(server: Server) -> str:
    with server.admin() as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


@contextlib.contextmanager
def migrated_schema(server: Server) -> Iterator[str]:
    """A freshly migrated schema on ``server``, dropped at the end (the server brought back
    first if a scenario left it down)."""
    schema = f"fb_{uuid.uuid4().hex[:10]}"
    with server.admin() as conn:
        migrate(conn, schema=schema)
    try:
        yield schema
    finally:
        server.ensure_up()
        with contextlib.suppress(psycopg.OperationalError), server.admin() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def stored_rows(server: Server, schema: str, run: str, **match: str) -> tuple[int, int]:
    """(rows, distinct events) of ``run`` in the table: events carry ``run`` and a number
    ``n`` (plus ``p``, the process, where several log) in their details."""
    query = sql.SQL(
        "SELECT count(*), count(DISTINCT (details->>'p', details->>'n')) FROM {}.llama_log "
        "WHERE details->>'run' = %s"
    ).format(sql.Identifier(schema))
    params: list[str] = [run]
    for key, value in match.items():
        query += sql.SQL(" AND details->>{} = %s").format(sql.Literal(key))
        params.append(value)
    with server.admin() as conn:
        row = conn.execute(query, params).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


class CommitWatch:
    """Polls ``max(id)`` from a separate session: when did a new row become visible?"""

    def __init__(self, server: Server, schema: str) -> None:
        self._server = server
        self._query = sql.SQL("SELECT coalesce(max(id), 0) FROM {}.llama_log").format(
            sql.Identifier(schema)
        )
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def top(self) -> int | None:
        """The highest committed id, or None while the server cannot be reached."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._server.admin()
            row = self._conn.execute(self._query).fetchone()
            return int(row[0]) if row else 0  # type: ignore[call-overload]
        except psycopg.OperationalError:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return None

    def first_commit_after(self, top: int, since: float, limit: float) -> float | None:
        """Seconds from ``since`` until a row above ``top`` is visible; None within ``limit``."""
        deadline = since + limit
        while time.monotonic() < deadline:
            now_top = self.top()
            if now_top is not None and now_top > top:
                return time.monotonic() - since
            time.sleep(0.005)
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
