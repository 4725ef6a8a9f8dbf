"""``llamalog serve``: a read-only view of the job trees in a browser.

:func:`create_app` gives the ASGI app, for any ASGI server; :func:`serve` runs it with
uvicorn, as the command does. Both need the ``web`` extra (``pip install
'llamalogger[web]'``: Starlette and uvicorn), imported when first used.
:func:`tree_html` writes one run as a self-contained page and needs neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._export import tree_html

if TYPE_CHECKING:
    from ._app import create_app
    from ._serve import TOKEN_ENV, serve

__all__ = ["TOKEN_ENV", "create_app", "serve", "tree_html"]


def __getattr__(name: str) -> Any:
    # The server's parts load on first use, so `llamalog tree --html` needs no extra.
    if name == "create_app":
        from ._app import create_app

        return create_app
    if name in ("serve", "TOKEN_ENV"):
        from . import _serve

        return getattr(_serve, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
