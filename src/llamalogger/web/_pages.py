"""The pages: one HTML shell per kind of page, and the static assets that fill it.

The shell holds no data at all: the script reads the address, asks the JSON API, and
builds the page with ``textContent`` and DOM nodes, never by parsing HTML. So no string
from the database is ever interpreted as markup, whatever it contains.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["PAGES", "page_routes"]

#: Each page's name (the script's ``data-page``) and its title.
PAGES = {"runs": "Runs", "run": "Run", "entity": "Entity", "tail": "Tail"}

_SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · llamalog</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
<body data-page="{page}">
<header class="top"><a class="brand" href="/">llamalog</a>
<nav><a href="/">Runs</a><a href="/tail">Tail</a></nav></header>
<main id="main"><p class="loading">Loading…</p></main>
</body>
</html>
"""


def _shell(page: str) -> HTMLResponse:
    return HTMLResponse(_SHELL.format(page=page, title=PAGES[page]))


def _page(page: str) -> Callable[[Request], Response]:
    def respond(request: Request) -> Response:
        return _shell(page)

    return respond


def _static_directory() -> str:
    return str(resources.files(__package__).joinpath("static"))


def page_routes() -> list[BaseRoute]:
    return [
        Route("/", _page("runs")),
        Route("/jobs/{job_id:path}", _page("run")),
        Route("/entities/{entity_type}/{entity_id:path}", _page("entity")),
        Route("/tail", _page("tail")),
        Mount("/static", StaticFiles(directory=_static_directory()), name="static"),
    ]
