"""``llamalog tree ID --html FILE``: one run as a single HTML file to attach anywhere.

The tree's data sits in a ``<script type="application/json">`` element (never executed;
``<``, ``>`` and ``&`` escaped so no string can close it), and the view's own script and
stylesheet are inlined under a Content-Security-Policy that allows exactly those two by
their SHA-256 hashes: nothing else in the file can run, whatever the data holds.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources

from ..queries import JobNode
from ._json import json_bytes
from ._tree_data import tree_data

__all__ = ["tree_html"]

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llamalog run</title>
<style>{style}</style>
</head>
<body data-page="export">
<header class="top"><span class="brand">llamalog</span></header>
<main id="main"><p class="loading">Loading…</p></main>
<script type="application/json" id="tree-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def _inert_json(value: object) -> str:
    """JSON that cannot end its ``<script>`` element or start a comment in it."""
    text = json_bytes(value).decode("utf-8")
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def tree_html(tree: JobNode, *, asked: str | None = None) -> str:
    """The page of ``tree`` (its timeline and its tree, ``asked`` selected)."""
    script, style = _asset("app.js"), _asset("app.css")
    policy = (
        f"default-src 'none'; script-src {_hash(script)}; style-src {_hash(style)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    return _PAGE.format(
        policy=policy, style=style, script=script, data=_inert_json(tree_data(tree, asked=asked))
    )
