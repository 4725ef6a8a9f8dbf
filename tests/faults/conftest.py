"""Fault injection: a TCP proxy that may be cut (the server that may be stopped,
``restartable_server``, is a shared fixture: ``tests/fixtures/restartable.py``).

* ``tcp_proxy``: a factory for a threaded proxy on 127.0.0.1 in front of any server (its Unix
  socket or its TCP address). ``cut()`` closes every connection both ways and refuses new ones
  until ``restore()``; ``hold()`` stalls them instead; every proxy stops at teardown.

Every wait here is bounded, and all traffic stays on the loopback interface.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

# Upper bounds for anything the proxy waits on: a slow machine must make a test fail, not hang.
_CONNECT_TIMEOUT = 2.0
_POLL_INTERVAL = 0.05  # how often idle threads look at their stop flags
_JOIN_TIMEOUT = 5.0


# --- the TCP proxy ---------------------------------------------------------------------------


Upstream = str | tuple[str, int]  # a Unix socket path, or (host, port)


def upstream_of(dsn: str) -> Upstream:
    """Where a libpq DSN points: the Unix socket file of a socket directory, or (host, port)."""
    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or "/tmp")  # libpq's default socket directory
    port = int(params.get("port") or 5432)
    if host.startswith("/"):
        return str(Path(host) / f".s.PGSQL.{port}")
    return (host, port)


class _Link:
    """One proxied connection: the client's socket and ours to the server."""

    def __init__(
        self, client: socket.socket, server: socket.socket, flowing: threading.Event
    ) -> None:
        self.client = client
        self.server = server
        self._flowing = flowing
        self._severed = False
        self.thread = threading.Thread(target=self._pump, name="tcp-proxy-link", daemon=True)

    def _pump(self) -> None:
        other = {self.client: self.server, self.server: self.client}
        with selectors.DefaultSelector() as selector:
            selector.register(self.client, selectors.EVENT_READ)
            selector.register(self.server, selectors.EVENT_READ)
            try:
                while not self._severed:
                    if not self._flowing.wait(_POLL_INTERVAL):
                        continue  # held: bytes wait in the kernel's buffers, nobody is told
                    for key, _ in selector.select(_POLL_INTERVAL):
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = source.recv(65536)
                        if not data:
                            return
                        other[source].sendall(data)
            except OSError:
                return  # either side went away, or cut() shut the sockets down
            finally:
                self.close()

    def sever(self) -> None:
        """Wake the pump and end the connection on both sides."""
        self._severed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    """Forwards connections from 127.0.0.1:<port> to ``upstream``, until cut or held.

    ``cut()`` is a broken network: both ends see the connection closed at once, and new
    connections are closed as soon as they are accepted. ``hold()`` is a stalled one: nothing
    is closed, bytes simply stop moving (new connections too) until ``restore()``.
    """

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(_POLL_INTERVAL)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._cut = False
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopping = False
        self.accepted = 0
        self.refused = 0  # connections closed at once because the proxy was cut
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._acceptor.start()

    def dsn_for(self, dsn: str) -> str:
        """``dsn``'s user, password and database, reached through this proxy."""
        params = conninfo_to_dict(dsn)
        user = quote(str(params.get("user") or "postgres"), safe="")
        password = str(params.get("password") or "")
        auth = f"{user}:{quote(password, safe='')}" if password else user
        dbname = quote(str(params.get("dbname") or params.get("user") or "postgres"), safe="")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = self.upstream
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = self.upstream
        sock.settimeout(_CONNECT_TIMEOUT)
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            raise
        return sock

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed
            with self._lock:
                refuse = self._cut or self._stopping
                self.refused += refuse
            if refuse:
                client.close()
                continue
            try:
                server = self._connect_upstream()
            except OSError:
                client.close()
                continue
            # Blocking sends with a bound: a stuck peer ends the link instead of the test.
            client.settimeout(_CONNECT_TIMEOUT)
            server.settimeout(_CONNECT_TIMEOUT)
            link = _Link(client, server, self._flowing)
            with self._lock:
                if self._cut or self._stopping:  # cut while we were connecting upstream
                    self.refused += 1
                    link.close()
                    continue
                self._links.append(link)
                self.accepted += 1
            link.thread.start()

    def connections(self) -> int:
        """Links currently forwarding."""
        with self._lock:
            self._links = [link for link in self._links if link.thread.is_alive()]
            return len(self._links)

    def cut(self) -> int:
        """Close every open connection both ways and refuse new ones; returns how many were cut."""
        with self._lock:
            self._cut = True
            links, self._links = self._links, []
        for link in links:
            link.sever()
        for link in links:
            link.thread.join(_JOIN_TIMEOUT)
        return len(links)

    def hold(self) -> None:
        """Stop moving bytes on every connection, old and new, without closing any."""
        self._flowing.clear()

    def restore(self) -> None:
        """Accept and forward connections again (after ``cut()`` or ``hold()``)."""
        with self._lock:
            self._cut = False
        self._flowing.set()

    def close(self) -> None:
        self._stopping = True
        self.cut()
        self._acceptor.join(_JOIN_TIMEOUT)
        self._listener.close()


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[str], TcpProxy]]:
    """``tcp_proxy(dsn)`` starts a proxy in front of the server ``dsn`` names.

    Use ``proxy.dsn_for(dsn)`` as the logger's DSN, then ``proxy.cut()`` / ``proxy.restore()``.
    """
    proxies: list[TcpProxy] = []

    def start(dsn: str) -> TcpProxy:
        proxy = TcpProxy(upstream_of(dsn))
        proxies.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in proxies:
            proxy.close()
