"""What every ``python`` snippet in README.md and docs/*.md prints and stores, on every test server.

The snippets of one file run in order in one namespace, with ``LLAMALOG_DSN`` and
``LLAMALOG_SCHEMA`` pointing at a freshly migrated schema, so they read like a session. After
each snippet:

* what it printed is compared with what the document shows: a ``text`` block right after the
  snippet (before any other code block), or the comment after a ``print(...)`` line; in both,
  ``…`` or ``...`` (with the letters joined to it, as in a shortened id ``0194…a1``) stands
  for any text, and a line of only ``…`` for any lines. A snippet the document shows no output
  for must print nothing;
* every ``LlamaLogger`` in the namespace is flushed and the rows the snippet stored are compared
  with ``STORED`` (one line per row, job ids named ``J1``, ``J2`` … in a fixed order);
  a snippet missing from ``STORED`` must store nothing;
* the ``test_*`` functions it defines (the testing example of docs/api.md) are called.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from llamalogger import LlamaLogger

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
# "…" or "..." and the letters, digits and dashes joined to it: any text.
ELLIPSIS = re.compile(r"[\w-]*(?:…|\.\.\.)[\w-]*")

# (document, snippet number): the rows it stores, as `row_line` writes them.
STORED: dict[tuple[str, int], list[str]] = {
    ("README.md", 1): [
        "CREATED info 'album 12 created' album:12 | J1 import-album <- - ^J1"
        " | {'title': 'Blue Train'}",
        "ENRICHED info 'tempo detected' track:9 | J2 enrich-track <- - ^J2 | {'bpm': 128}",
        "LINKED info 'artist 7 linked to album 12' artist:7 -> album:12 | J3 link-artist <- J1 ^J1",
        "LINKED info 'artist 8 linked to album 12' artist:8 -> album:12 | J4 link-artist <- J1 ^J1",
        "SKIPPED debug 'cover art already present' album:12 | J1 import-album <- - ^J1",
        "UPDATED info 'transcoded to opus' track:9 | J5 transcode <- J1 ^J1",
    ],
    ("api.md", 1): [
        "CREATED info 'album 1 created' album:1 | J1 import-album <- - ^J1",
    ],
    ("api.md", 2): [  # the task's FAILED row, under the job that sent the message
        "FAILED error 'LookupError: cover art too small' | J1 fetch_cover <- J2 ^J2 | "
        "{'exception': '…LookupError: cover art too small', 'exception_type': 'LookupError', "
        "'exception_message': 'cover art too small'}",
    ],
    ("concepts.md", 2): [
        "CREATED info 'album 12 created' album:12 | J1 import-album <- - ^J1",
        "CREATED info 'artist found' artist:7 | J1 import-album <- - ^J1"
        " | {'source': 'musicbrainz'}",
        "FAILED error 'lyrics service timed out' track:9 | J1 import-album <- - ^J1",
        "LINKED info 'artist 7 linked to album 12' artist:7 -> album:12 | J1 import-album <- - ^J1",
        "MATCHED info 'recording matched' track:9 | J1 import-album <- - ^J1 | {'score': 0.97}",
    ],
    ("concepts.md", 3): [  # each thread's job is a child of the job that started it
        "UPDATED info 'transcoded' track:1 | J1 transcode <- J2 ^J2",
        "UPDATED info 'transcoded' track:2 | J3 transcode <- J2 ^J2",
        "UPDATED info 'transcoded' track:3 | J4 transcode <- J2 ^J2",
        "UPDATED info 'transcoded' track:4 | J5 transcode <- J2 ^J2",
    ],
    ("concepts.md", 4): [
        "MATCHED info 'file matched' file:a.flac | J1 scan-folder <- J2 ^J2",
        "MATCHED info 'file matched' file:b.flac | J1 scan-folder <- J2 ^J2",
    ],
    ("concepts.md", 5): [  # the job's context on every event; FAILED carries the entity
        "CREATED info 'album 12 created' album:12 | J1 import-album <- - ^J1"
        " | {'batch': 'nightly-0612'}",
        "FAILED error 'TimeoutError: tempo service timed out' track:9"
        " | J2 enrich-track <- J1 ^J1 | {'batch': 'nightly-0612', 'exception': '…TimeoutError:"
        " tempo service timed out', 'exception_type': 'TimeoutError', 'exception_message':"
        " 'tempo service timed out'}",
    ],
    ("design.md", 1): [
        "CREATED info 'album 12 created' album:12 | J1 import-album <- - ^J1",
        "LINKED info 'artist 7 linked to album 12' artist:7 -> album:12 | J2 link-artist <- J1 ^J1",
        "UPDATED info 'transcoded to opus' track:9 | J3 transcode <- J1 ^J1 | {'codec': 'opus'}",
    ],
    ("integrations.md", 1): [
        "CREATED info 'album created' album:12 | J1 import-album <- - ^J1 | {'title': 'Blue'}",
        "FAILED error 'cover art missing' album:12 | J1 import-album <- - ^J1"
        " | {'exception': '…TimeoutError: cover art service timed out'}",
        "LINKED info 'artist linked' artist:7 -> album:12 | J2 link-artist <- J1 ^J1",
        "LINKED info 'artist linked' artist:8 -> album:12 | J3 link-artist <- J1 ^J1",
    ],
    ("integrations.md", 3): [
        "ENRICHED info 'tempo detected for track 9' track:9 | J1 enrich-track <- - ^J1"
        " | {'bpm': 128, 'logger': 'worker.tracks'}",
        "FAILED error 'lyrics missing' track:9 | J1 enrich-track <- - ^J1"
        " | {'logger': 'worker.tracks', 'exception': '…TimeoutError: lyrics service timed out'}",
    ],
    ("integrations.md", 5): [  # the task's job is the child of the job that applied it
        "ENRICHED info 'cover found' album:12 | J1 docs_integrations.fetch_cover <- J2 ^J2",
        "FAILED error 'LookupError: cover art too small'"
        " | J1 docs_integrations.fetch_cover <- J2 ^J2"
        " | {'exception': '…LookupError: cover art too small', 'exception_type': 'LookupError',"
        " 'exception_message': 'cover art too small'}",
    ],
    ("integrations.md", 7): [  # one Dramatiq message, retried once: one job
        "ENRICHED info 'cover found' album:12 | J1 fetch_cover <- J2 ^J2",
        "ENRICHED info 'cover found' album:12 | J1 fetch_cover <- J2 ^J2",
        "FAILED error 'LookupError: cover art too small' | J1 fetch_cover <- J2 "
        "^J2 | {'exception': '…LookupError: cover art too small', "
        "'exception_type': 'LookupError', 'exception_message': 'cover art too "
        "small'}",
        "SKIPPED warning 'attempt 1 failed, retrying: cover art too small' | J1 "
        "fetch_cover <- J2 ^J2 | {'reason': 'cover art too small', 'attempt': 1, "
        "'max_retries': 1, 'exception_type': 'LookupError'}",
    ],
    ("queries.md", 1): [
        "CREATED info 'album 12 created' album:12 | J1 import-album <- - ^J1",
        "CREATED info 'track 9 created' track:9 | J2 import-track <- J1 ^J1",
        "ENRICHED info 'tempo detected' track:9 | J3 enrich-track <- J2 ^J1 | {'bpm': 128}",
        "LINKED info 'artist 7 linked to track 9' artist:7 -> track:9 | J2 import-track <- J1 ^J1",
    ],
    ("queries.md", 2): [
        "CREATED info 'album 12 created' album:12 | J1 import-album <- - ^J1",
        "CREATED info 'track 9 created' track:9 | J1 import-album <- - ^J1",
    ],
}
# At most this many lines of prose between a snippet and the text block that is its output.
OUTPUT_GAP = 4


@attrs.frozen
class Snippet:
    number: int
    code: str
    shown_output: str | None  # the text block after it, if the document has one


def snippets(path: Path) -> list[Snippet]:
    found: list[Snippet] = []
    text = path.read_text(encoding="utf-8")
    previous_end: int | None = None  # the end of the last python snippet, while no other
    for match in FENCE.finditer(text):  # code block followed it
        language, body = match.groups()
        between = text[previous_end : match.start()] if previous_end is not None else ""
        if language == "python":
            found.append(Snippet(len(found) + 1, body, None))
            previous_end = match.end()
            continue
        prose = [line for line in between.splitlines() if line.strip()]
        if language == "text" and previous_end is not None and len(prose) <= OUTPUT_GAP:
            found[-1] = attrs.evolve(found[-1], shown_output=body)
        previous_end = None
    return found


def _pattern(expected: str) -> re.Pattern[str]:
    """A regex for printed text as a document shows it (see the module docstring)."""
    parts = []
    for line in expected.splitlines():
        if line.strip() in {"…", "..."}:
            parts.append(r"(?:[^\n]*\n)*?")
            continue
        pieces = ELLIPSIS.split(line)
        escaped = [re.escape(piece) for piece in pieces]
        parts.append(".*?".join(escaped) + r"\n")
    return re.compile("".join(parts))


def printed_comments(code: str) -> str | None:
    """The output a snippet announces in ``print(...)  # output`` comments, if any."""
    lines = []
    for line in code.splitlines():
        match = re.match(r"\s*print\(.*\)\s*#\s?(.*)$", line)
        if match:
            lines.append(match.group(1) + "\n")
    return "".join(lines) or None


def check_printed(path: Path, snippet: Snippet, printed: str) -> None:
    expected = snippet.shown_output or printed_comments(snippet.code)
    where = f"{path.name} snippet {snippet.number}"
    if expected is None:
        assert printed == "", f"{where} prints output the document does not show:\n{printed}"
        return
    assert _pattern(expected).fullmatch(printed), (
        f"{where} printed\n{printed}\nbut the document shows\n{expected}"
    )


# --- rows ------------------------------------------------------------------------------


def new_rows(dsn: str, schema: str, after_id: int) -> list[dict[str, Any]]:
    query = sql.SQL(
        "SELECT *, category::text AS category FROM {}.llama_log WHERE id > %s ORDER BY id"
    ).format(sql.Identifier(schema))
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, [after_id]).fetchall()


def _ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # By what the row says, not by insert order or id: threads may log in any order.
    def key(row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(
            str(row[column] or "")
            for column in ("category", "job_name", "entity_type", "entity_id", "message")
        )

    return sorted(rows, key=key)


def _details(details: dict[str, Any] | None) -> str:
    if not details:
        return ""
    shown = dict(details)
    if "exception" in shown:  # a traceback: its last line says enough
        shown["exception"] = "…" + str(shown["exception"]).rstrip().splitlines()[-1]
    return f" | {shown!r}"


def row_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per row: ``CATEGORY level 'message' entity -> related | J<n> name <- parent
    ^root | details``, with job ids named by their first appearance in ``_ordered`` rows."""
    names: dict[str, str] = {}

    def name(job_id: str | None) -> str:
        if job_id is None:
            return "-"
        return names.setdefault(job_id, f"J{len(names) + 1}")

    lines = []
    for row in _ordered(rows):
        subject = f" {row['entity_type']}:{row['entity_id']}" if row["entity_type"] else ""
        related = f" -> {row['related_type']}:{row['related_id']}" if row["related_type"] else ""
        job = name(row["job_id"])
        hierarchy = (
            f"{job} {row['job_name']} <- {name(row['parent_job_id'])} ^{name(row['root_job_id'])}"
            if row["job_id"] is not None
            else "no job"
        )
        lines.append(
            f"{row['category']} {row['level']} {row['message']!r}{subject}{related}"
            f" | {hierarchy}{_details(row['details'])}"
        )
    return lines


@contextlib.contextmanager
def _printed() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer


def _loggers(namespace: dict[str, object]) -> list[LlamaLogger]:
    return [value for value in namespace.values() if isinstance(value, LlamaLogger)]


def _defined_tests(code: str) -> list[str]:
    tree = ast.parse(code)
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]


# --- the tests --------------------------------------------------------------------------


def test_the_documents_have_snippets() -> None:
    assert len(snippets(ROOT / "README.md")) >= 1
    assert sum(len(snippets(path)) for path in DOCUMENTS) >= 5


def test_every_stored_expectation_names_a_snippet() -> None:
    """An entry of STORED that matches no snippet means the documents changed under it."""
    count = {path.name: len(snippets(path)) for path in DOCUMENTS}
    assert [key for key in STORED if key[1] > count.get(key[0], 0)] == []


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_snippets_print_and_store_what_the_documents_say(
    path: Path, dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMALOG_DSN", dsn)
    monkeypatch.setenv("LLAMALOG_SCHEMA", schema)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    last_id = 0
    try:
        for snippet in snippets(path):
            compiled = compile(snippet.code, f"{path.name} snippet {snippet.number}", "exec")
            with _printed() as printed:
                exec(compiled, namespace)
                for test in _defined_tests(snippet.code):
                    namespace[test]()  # type: ignore[operator]
            check_printed(path, snippet, printed.getvalue())
            for logger in _loggers(namespace):
                assert logger.flush(timeout=10)
            rows = new_rows(dsn, schema, last_id)
            last_id = max([last_id, *(row["id"] for row in rows)])
            assert row_lines(rows) == STORED.get((path.name, snippet.number), []), (
                f"{path.name} snippet {snippet.number} stored other rows than STORED says"
            )
    finally:
        for logger in _loggers(namespace):
            logger.close()
