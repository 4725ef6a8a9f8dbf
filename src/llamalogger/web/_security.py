"""What every response of the web view carries and every request must show.

* Security headers on every response: a Content-Security-Policy allowing only the view's
  own scripts and styles (no inline code, so a string from the database that got into the
  page could not run), no framing, no sniffing, no referrer.
* Without a token (the default, on a loopback address), requests must name a loopback
  Host: a web page elsewhere cannot read the view through DNS rebinding.
* With a token (required on any other address), every request carries it: the
  ``X-Llamalog-Token`` header, ``Authorization: Bearer``, or the cookie set when a page is
  first opened with ``?token=``; compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import urlencode

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "LOOPBACK_HOSTS", "TOKEN_COOKIE", "Guard"]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_COOKIE = "llamalog_token"  # noqa: S105 - the cookie's name, not a secret
_TOKEN_HEADER = "x-llamalog-token"  # noqa: S105 - a header's name


def _host_name(host_header: str) -> str:
    """The host of a ``Host`` header, without its port (``[::1]:8765`` -> ``::1``)."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """ASGI middleware: the headers, then the host or the token rule, before any route."""

    def __init__(
        self, app: ASGIApp, *, token: str | None, allowed_hosts: Iterable[str] = LOOPBACK_HOSTS
    ) -> None:
        self._app = app
        self._token = token.encode() if token else None
        self._hosts = frozenset(host.lower() for host in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers[name] = value
            await send(message)

        refusal = self._refusal(Request(scope))
        app = self._app if refusal is None else refusal
        await app(scope, receive, send_with_headers)

    def _refusal(self, request: Request) -> Response | None:
        if self._token is None:
            host = _host_name(request.headers.get("host", "")).lower()
            if host not in self._hosts:
                return PlainTextResponse("unexpected Host header", status_code=400)
            return None
        if self._matches(
            request.headers.get(_TOKEN_HEADER)
            or _bearer(request.headers.get("authorization"))
            or request.cookies.get(TOKEN_COOKIE)
        ):
            return None
        given = request.query_params.get("token")
        if request.method == "GET" and self._matches(given):
            # First visit with ?token=: keep it in a cookie and drop it from the address bar.
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            # One leading slash: "//host/..." would send the browser to another site.
            target = "/" + request.url.path.lstrip("/") + (f"?{urlencode(rest)}" if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(
                TOKEN_COOKIE, given or "", httponly=True, samesite="strict", path="/"
            )
            return response
        return PlainTextResponse(
            "a token is required: open the address llamalog serve printed (with ?token=...)",
            status_code=401,
        )

    def _matches(self, given: str | None) -> bool:
        assert self._token is not None
        return given is not None and hmac.compare_digest(given.encode(), self._token)


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None
