"""The JSON endpoints the pages read: runs, a tree, a job, an entity's history, the tail.

Each reads through :mod:`llamalogger.queries`, the same functions the CLI runs, on a
read-only connection, after its parameters are checked (:mod:`._params`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import queries
from ._database import ReadOnlyDatabase
from ._json import json_bytes
from ._params import BadRequest, check_known, integer, moment, text, token_safe
from ._tree_data import no_gc_pauses, tree_data

__all__ = ["STATUSES", "api_routes", "json_response"]

#: The runs filter: ``failed`` is any failure in the tree (as ``llamalog runs --failed``);
#: the others are the root job's own status.
STATUSES = ("failed", "succeeded", "cancelled", queries.UNFINISHED)
_MAX_PAGE = 10_000
_RUN_PARAMS = ("name", "status", "since", "until", "id", "page", "limit")


class NotFound(LookupError):
    """Nothing names what the request asked for: answered with 404."""


def _database(request: Request) -> ReadOnlyDatabase:
    database: ReadOnlyDatabase = request.app.state.database
    return database


def _schema(request: Request) -> str:
    schema: str = request.app.state.schema
    return schema


def _path(request: Request, name: str) -> str:
    return token_safe(name, str(request.path_params[name]))


def _runs(request: Request) -> dict[str, Any]:
    params = request.query_params
    check_known(params, _RUN_PARAMS)
    status = text(params, "status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}, not {status[:40]!r}")
    since, until = moment(params, "since"), moment(params, "until")
    if since is not None and until is not None and since > until:
        raise BadRequest("since must not be later than until")
    page = integer(params, "page", default=0, low=0, high=_MAX_PAGE)
    limit = integer(params, "limit", default=50, low=1, high=200)
    wanted = text(params, "id")
    schema = _schema(request)
    with _database(request).connection() as conn:
        root = None if wanted is None else queries.root_of(conn, wanted, schema=schema)
        found = []
        if wanted is None or root is not None:
            found = queries.runs(
                conn,
                since=since,
                until=until,
                failed=status == "failed",
                status=None if status in (None, "failed") else status,
                name=text(params, "name"),
                root=root,
                limit=limit + 1,  # one more than shown says whether a next page exists
                offset=page * limit,
                schema=schema,
            )
    return {
        "runs": [run.to_dict() for run in found[:limit]],
        "page": page,
        "limit": limit,
        "more": len(found) > limit,
        "id_root": root,
    }


def _tree(request: Request) -> dict[str, Any]:
    check_known(request.query_params, ())
    job_id = _path(request, "job_id")
    schema = _schema(request)
    with no_gc_pauses():
        with _database(request).connection() as conn:
            root = queries.root_of(conn, job_id, schema=schema)
            tree = None if root is None else queries.job_tree(conn, root, schema=schema)
        if tree is None:
            raise NotFound(f"no job {job_id!r}: no event, record or tree names it")
        return tree_data(tree, asked=job_id)


def _traceback(failed: list[dict[str, Any]]) -> str | None:
    """The traceback of the job's last ``FAILED`` event that carries one."""
    for event in reversed(failed):
        details = event.get("details")
        if isinstance(details, dict) and details.get("exception"):
            return str(details["exception"])
    return None


def _entities(
    attempts: list[queries.JobAttempt], events: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """The entities a job names: its records' entity, its events' subjects and objects."""
    seen: dict[tuple[str, str], None] = {}
    for attempt in attempts:
        if attempt.entity_type and attempt.entity_id:
            seen[attempt.entity_type, attempt.entity_id] = None
    for event in events:
        for kind, ident in (("entity_type", "entity_id"), ("related_type", "related_id")):
            if event.get(kind) and event.get(ident):
                seen[str(event[kind]), str(event[ident])] = None
    return [{"type": kind, "id": ident} for kind, ident in seen]


def _job(request: Request) -> dict[str, Any]:
    """What the job panel adds to the tree the page already holds (status, times, parent
    and counts are there): the records' details, the events, the traceback, the entities.
    Indexed look-ups by job id only, so opening a job of a 50,000-job tree stays cheap."""
    params = request.query_params
    check_known(params, ("events",))
    limit = integer(params, "events", default=200, low=0, high=5000)
    job_id = _path(request, "job_id")
    schema = _schema(request)
    with _database(request).connection() as conn:
        root = queries.root_of(conn, job_id, schema=schema)
        if root is None:
            raise NotFound(f"no job {job_id!r}: no event, record or tree names it")
        attempts = queries.job_records(conn, job_id, schema=schema)
        events = queries.job_events(conn, job_id, limit=limit, schema=schema)
        failed = queries.job_events(conn, job_id, category="FAILED", schema=schema)
    return {
        "job_id": job_id,
        "root_job_id": root,
        "attempts": [attempt.to_dict() for attempt in attempts],
        "event_rows": events,
        "traceback": _traceback(failed),
        "entities": _entities(attempts, events + failed),
    }


def _entity(request: Request) -> dict[str, Any]:
    params = request.query_params
    check_known(params, ("limit",))
    limit = integer(params, "limit", default=1000, low=1, high=10_000)
    kind, ident = _path(request, "entity_type"), _path(request, "entity_id")
    with _database(request).connection() as conn:
        rows = queries.entity_history(conn, kind, ident, schema=_schema(request))
    return {"type": kind, "id": ident, "total": len(rows), "events": rows[-limit:]}


def _tail(request: Request) -> dict[str, Any]:
    params = request.query_params
    check_known(params, ("root", "after", "limit"))
    root = text(params, "root")
    after = params.get("after")
    limit = integer(params, "limit", default=50, low=1, high=1000)
    after_id = None if not after else integer(params, "after", default=0, low=0, high=2**63 - 1)
    with _database(request).connection() as conn:
        rows = queries.recent_events(
            conn, limit=limit, root_job_id=root, after_id=after_id, schema=_schema(request)
        )
    last = rows[-1]["id"] if rows else after_id
    return {"events": rows, "last_id": last, "at": dt.datetime.now(dt.UTC).isoformat()}


def json_response(value: Any, status_code: int = 200) -> Response:
    return Response(json_bytes(value), status_code=status_code, media_type="application/json")


def _endpoint(handler: Callable[[Request], Mapping[str, Any]]) -> Callable[[Request], Response]:
    """A route answering ``handler``'s data as JSON; refusals as 400 and 404 with a message."""

    def respond(request: Request) -> Response:
        try:
            return json_response(handler(request))
        except BadRequest as exc:
            return json_response({"error": str(exc)}, status_code=400)
        except NotFound as exc:
            return json_response({"error": str(exc)}, status_code=404)

    return respond


def api_routes() -> list[Route]:
    return [
        Route("/api/runs", _endpoint(_runs)),
        Route("/api/tree/{job_id:path}", _endpoint(_tree)),
        Route("/api/jobs/{job_id:path}", _endpoint(_job)),
        Route("/api/entities/{entity_type}/{entity_id:path}", _endpoint(_entity)),
        Route("/api/tail", _endpoint(_tail)),
    ]
