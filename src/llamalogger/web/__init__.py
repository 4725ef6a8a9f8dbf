"""``llamalog serve``: a read-only view of the job trees in a browser.

Needs the ``web`` extra (``pip install 'llamalogger[web]'``: Starlette and uvicorn).
:func:`create_app` gives the ASGI app, for any ASGI server; :func:`serve` runs it with
uvicorn, as the command does; :func:`tree_html` writes one run as a self-contained page.
"""

from __future__ import annotations

from ._app import create_app
from ._export import tree_html
from ._serve import TOKEN_ENV, serve

__all__ = ["TOKEN_ENV", "create_app", "serve", "tree_html"]
