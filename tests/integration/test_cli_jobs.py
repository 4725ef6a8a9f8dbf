"""The operator's commands on a real tree: ``runs``, ``tree`` of any job, ``show``, and what
they print about failures, retries, unfinished and silent jobs, and hostile text.

Events and job records are written by the real ``LlamaLogger``; the unfinished job is one
whose process died inside it (a forked child ending with ``os._exit``). Only a run from three
days ago is inserted with parameterised SQL: the logger cannot date a record back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import sql

from llamalogger import Category, JobContext, LlamaLogger, new_job_id
from llamalogger.cli import main

# An id and a name a hostile message could carry: a terminal title, a screen clear, a
# forged line, a carriage return, a C1 CSI and a right-to-left override.
HOSTILE_ID = "evil\x1b]0;retitled\x07\x1b[2J\nforged line\r\x9b31m\u202e"
HOSTILE_NAME = "name\x1b]0;owned\x07"
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e")


@attrs.frozen
class Album:
    """The ids of an import tree with one of each shape a tree can hold."""

    root: str
    artists: list[str]
    failed: str  # enrich-track: left by a ValueError; its record says failed
    retried: str  # fetch-lyrics: attempt 1 retried, attempt 2 succeeded
    killed: str  # transcode: events, no record (its process was killed)
    silent: str  # check-rights: a record, no events
    hostile: str  # HOSTILE_ID, named HOSTILE_NAME
    unfinished_root: str  # nightly-sync: a second run, events only
    old_root: str  # a run from three days ago, a record only
    root_seconds: float  # the root's real duration, from its record


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _insert_record(conn: psycopg.Connection[Any], schema: str, **values: Any) -> None:
    values = {"attempt": 1, "pid": 4242, "host": "elsewhere", **values}
    query = sql.SQL("INSERT INTO {}.llama_job ({}) VALUES ({})").format(
        sql.Identifier(schema),
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    conn.execute(query, list(values.values()))


def _killed_inside_a_job(dsn: str, schema: str, name: str, parent: JobContext | None) -> str:
    """A job whose process dies inside it (still running, as far as anyone can tell): its
    event is delivered, its end never comes, so it has no record."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: log, deliver, die without leaving the job
        try:
            logger = LlamaLogger(dsn, schema=schema)
            with logger.job(name, parent=parent) as job:
                logger.log(Category.UPDATED, "transcoding started", entity=("track", 3))
                delivered = logger.flush(timeout=10)
                os.write(write, job.job_id.encode() if delivered else b"")
                os._exit(0)
        finally:
            os._exit(1)
    os.close(write)
    with os.fdopen(read, "rb") as said:
        job_id = said.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert job_id, "the child's event was not delivered"
    return job_id


def _record_seconds(dsn: str, schema: str, job_id: str) -> float:
    query = sql.SQL(
        "SELECT extract(epoch FROM ended_at - started_at) FROM {}.llama_job WHERE job_id = %s"
    ).format(sql.Identifier(schema))
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, (job_id,)).fetchone()
    assert row is not None
    return float(row[0])


@pytest.fixture
def album(dsn: str, schema: str) -> Album:
    with LlamaLogger(dsn, schema=schema) as logger:
        with logger.job("import-album") as root:
            logger.created(("album", 1))
            artists = []
            for number in range(3):
                with logger.job("link-artist") as artist:
                    logger.linked(("artist", number), ("album", 1))
                artists.append(artist.job_id)
            try:
                with logger.job("enrich-track", entity=("track", 3), request_id="r-1") as failed:
                    logger.log(Category.ENRICHED, "tempo found", entity=("track", 3))
                    raise ValueError("no key for track 3")
            except ValueError:
                pass
            retried = new_job_id()
            for attempt in (1, 2):
                with logger.task_job("fetch-lyrics", job_id=retried, attempt=attempt):
                    logger.log(Category.ENRICHED, f"attempt {attempt}", entity=("track", 3))
                    if attempt == 1:
                        logger.task_outcome("retried", error=TimeoutError("slow"))
            assert logger.flush(timeout=10)
            killed = _killed_inside_a_job(dsn, schema, "transcode", root)
            with logger.job(HOSTILE_NAME, job_id=HOSTILE_ID):
                logger.log(Category.UPDATED, "message \x1b[31mred\r\x9b", entity=("track", "t\x07"))
            with logger.job("check-rights") as silent:
                pass
            time.sleep(0.3)  # the root works for a while: its duration is its record's, not 0 ms
        assert logger.flush(timeout=10)
    unfinished_root = _killed_inside_a_job(dsn, schema, "nightly-sync", None)
    with psycopg.connect(dsn, autocommit=True) as conn:
        old_root = new_job_id()
        three_days_ago = _now() - dt.timedelta(days=3)
        _insert_record(
            conn, schema, job_id=old_root, root_job_id=old_root, job_name="old-import",
            status="succeeded", started_at=three_days_ago,
            ended_at=three_days_ago + dt.timedelta(seconds=90),
        )  # fmt: skip
    return Album(
        root=root.job_id,
        artists=artists,
        failed=failed.job_id,
        retried=retried,
        killed=killed,
        silent=silent.job_id,
        hostile=HOSTILE_ID,
        unfinished_root=unfinished_root,
        old_root=old_root,
        root_seconds=_record_seconds(dsn, schema, root.job_id),
    )


def _run(capsys: pytest.CaptureFixture[str], dsn: str, schema: str, *argv: str) -> list[str]:
    code = main([*argv, "--dsn", dsn, "--schema", schema])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for raw in RAW:
        assert raw not in captured.out
    return captured.out.splitlines()


def _duration(seconds: float) -> str:
    from llamalogger.cli._render import duration_text

    return duration_text(seconds)


class TestRuns:
    def test_runs_lists_roots_newest_first_with_status_duration_events_and_failures(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        lines = _run(capsys, dsn, schema, "runs")
        assert lines[0].split() == [
            "STARTED", "(UTC)", "STATUS", "DURATION", "EVENTS", "FAILED", "NAME", "JOB",
        ]  # fmt: skip
        assert len(lines) == 3  # the run of three days ago is outside the default 24 h
        unfinished, finished = lines[1], lines[2]
        assert "running/unfinished" in unfinished
        assert unfinished.endswith(f"nightly-sync  {album.unfinished_root}")
        assert " so far " in unfinished
        # events: album 1, artists 3, enrich 2 (ENRICHED, FAILED), lyrics 2, transcode 1,
        # hostile 1 = 10; failed: enrich-track only.
        fields = finished.split()
        assert fields[2] == "succeeded"
        assert finished.endswith(f"import-album  {album.root}")
        assert f"  {_duration(album.root_seconds)}  " in finished
        assert album.root_seconds >= 0.3
        assert fields[-4:-2] == ["10", "1"]

    def test_since_failed_name_and_limit_filter(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        def roots(*argv: str) -> list[str]:
            return [line.split()[-1] for line in _run(capsys, dsn, schema, "runs", *argv)[1:]]

        assert roots("--since", "7d") == [album.unfinished_root, album.root, album.old_root]
        assert roots("--since", "all", "-n", "2") == [album.unfinished_root, album.root]
        assert roots("--failed") == [album.root]
        assert roots("--name", "old-import", "--since", "all") == [album.old_root]
        (none,) = _run(capsys, dsn, schema, "runs", "--name", "nothing-of-that-name")
        assert none.startswith("no runs named 'nothing-of-that-name' since ")

    def test_json_carries_every_field(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        found = json.loads("\n".join(_run(capsys, dsn, schema, "runs", "--json")))
        assert [run["job_id"] for run in found] == [album.unfinished_root, album.root]
        finished = found[1]
        assert finished["status"] == "succeeded"
        assert finished["name"] == "import-album"
        assert finished["events"] == 10
        assert finished["failures"] == 1
        assert finished["attempts"] == 1
        assert finished["seconds"] == pytest.approx(album.root_seconds, abs=1e-6)
        assert dt.datetime.fromisoformat(finished["ended_at"]) > dt.datetime.fromisoformat(
            finished["started_at"]
        )
        assert found[0]["status"] == "unfinished"
        assert found[0]["ended_at"] is None


class TestTree:
    def test_a_child_id_shows_the_whole_tree_with_the_child_marked(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        lines = _run(capsys, dsn, schema, "tree", album.failed)
        assert lines[0] == f"job {album.failed} is in the tree of root {album.root}:"
        assert lines[1] == (
            f"import-album {album.root}  succeeded  {_duration(album.root_seconds)}  [CREATED 1]"
        )
        body = lines[2:]
        assert len(body) == 8  # 3 artists, enrich, lyrics, transcode, hostile, silent
        by_job = {job: line for line in body for job in _ids(album) if f" {job}  " in line}
        assert by_job[album.failed].endswith(
            "  [ENRICHED 1, FAILED 1]  ValueError: no key for track 3  ◀ asked"
        )
        assert "  failed  " in by_job[album.failed]
        assert "  succeeded after 2 attempts  " in by_job[album.retried]
        assert "  [ENRICHED 2]" in by_job[album.retried]
        assert "  running/unfinished  " in by_job[album.killed]
        assert " of events so far  [UPDATED 1]" in by_job[album.killed]
        assert by_job[album.silent].endswith("  [no events]")
        assert by_job[album.silent].startswith("└── check-rights ")  # ended last
        assert "  succeeded  " in by_job[album.silent]
        assert sum("◀ asked" in line for line in lines) == 1

    def test_the_root_id_needs_no_header_and_marks_the_root(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        lines = _run(capsys, dsn, schema, "tree", album.root)
        assert lines[0].startswith(f"import-album {album.root}  succeeded  ")
        assert lines[0].endswith("◀ asked")

    def test_failures_beneath_a_collapsed_branch_are_counted(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        lines = _run(capsys, dsn, schema, "tree", album.root, "--max-children", "2")
        assert len(lines) == 4
        assert lines[1].startswith(f"├── link-artist {album.artists[0]}  succeeded  ")
        assert lines[2].startswith(f"├── link-artist {album.artists[1]}  succeeded  ")
        # the third artist, enrich (failed), lyrics, transcode, hostile, silent
        assert lines[3] == "└── … and 6 more: 6 jobs, 7 events, 1 failed"
        lines = _run(capsys, dsn, schema, "tree", album.failed, "--max-children", "0")
        assert lines[-1] == "└── … and 8 more: 8 jobs, 9 events, 1 failed  ◀ asked"

    def test_failed_keeps_only_the_branches_that_hold_a_failure(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        lines = _run(capsys, dsn, schema, "tree", album.root, "--failed")
        assert len(lines) == 2
        assert lines[1].startswith(f"└── enrich-track {album.failed}  failed  ")
        assert lines[1].endswith("ValueError: no key for track 3")

    def test_json_carries_status_times_errors_attempts_and_events(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        tree = json.loads("\n".join(_run(capsys, dsn, schema, "tree", album.retried, "--json")))
        assert tree["job_id"] == album.root
        assert tree["status"] == "succeeded"
        assert tree["seconds"] == pytest.approx(album.root_seconds, abs=1e-6)
        assert tree["failures"] == 1
        children = {child["job_id"]: child for child in tree["children"]}
        assert len(children) == 8
        lyrics = children[album.retried]
        assert lyrics["asked"] is True
        assert [a["status"] for a in lyrics["attempts"]] == ["retried", "succeeded"]
        assert lyrics["attempts"][0]["error_type"] == "TimeoutError"
        assert lyrics["attempts"][0]["host"] == socket.gethostname()
        assert lyrics["counts"] == {"ENRICHED": 2}
        failed = children[album.failed]
        assert (failed["status"], failed["error_type"], failed["error_message"]) == (
            "failed",
            "ValueError",
            "no key for track 3",
        )
        assert failed["events"] == 2
        assert failed["attempts"][0]["entity_id"] == "3"
        assert failed["attempts"][0]["details"] == {"request_id": "r-1"}
        assert children[album.killed]["status"] == "unfinished"
        assert children[album.killed]["ended_at"] is None
        assert children[album.silent]["events"] == 0
        assert children[album.silent]["status"] == "succeeded"
        assert children[album.hostile]["name"] == HOSTILE_NAME  # JSON escapes; values intact
        only_failed = json.loads(
            "\n".join(_run(capsys, dsn, schema, "tree", album.root, "--json", "--failed"))
        )
        assert [child["job_id"] for child in only_failed["children"]] == [album.failed]

    def test_an_unknown_id_is_one_line_and_exit_1(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["tree", "nope", "--dsn", dsn, "--schema", schema]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            f"llamalog: error: no job 'nope' in schema '{schema}': "
            "no event, record or tree names it\n"
        )


def _ids(album: Album) -> list[str]:
    return [album.failed, album.retried, album.killed, album.silent, *album.artists]


class TestShow:
    def test_a_failed_job_with_its_record_place_events_and_traceback(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        lines = _run(capsys, dsn, schema, "show", album.failed)
        assert lines[0] == f"job {album.failed}  enrich-track"
        fields = dict(
            line.strip().split(None, 1) for line in lines[1:] if not line.startswith("    ")
        )
        assert fields["status"] == "failed"
        assert fields["error"] == "ValueError: no key for track 3"
        assert fields["process"] == f"pid {os.getpid()} on {socket.gethostname()}"
        assert fields["entity"] == "track 3"
        assert fields["details"] == '{"request_id": "r-1"}'
        assert fields["parent"] == f"{album.root} import-album"
        assert fields["root"] == f"{album.root} import-album"
        assert fields["ended"] != "-"
        assert lines[lines.index("  children   0") + 1] == "  events     2"
        events = [line for line in lines if line.startswith("    2")]
        assert len(events) == 2
        assert "ENRICHED track 3  tempo found" in events[0]
        assert "FAILED   track 3  ValueError: no key for track 3" in events[1]
        traceback = lines[lines.index("  traceback of its FAILED event") + 1 :]
        assert traceback[0] == "    Traceback (most recent call last):"
        assert any('raise ValueError("no key for track 3")' in line for line in traceback)
        assert traceback[-1] == "    ValueError: no key for track 3"

    def test_a_retried_task_lists_its_attempts(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        lines = _run(capsys, dsn, schema, "show", album.retried)
        assert lines[1] == "  status     succeeded after 2 attempts"
        attempts = lines[lines.index("  attempts") + 1 :][:2]
        assert attempts[0].split()[:2] == ["1", "retried"]
        assert attempts[0].endswith(f"pid {os.getpid()}  TimeoutError: slow")
        assert attempts[1].split()[:2] == ["2", "succeeded"]

    def test_an_unfinished_job_says_it_has_no_record(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        lines = _run(capsys, dsn, schema, "show", album.killed)
        assert lines[1] == "  status     running/unfinished"
        assert lines[2].endswith("(first event)")
        assert lines[3] == "  ended      -"
        assert "  record     none: the job has not ended, or its process was killed" in lines

    def test_a_silent_job_and_json(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        lines = _run(capsys, dsn, schema, "show", album.silent)
        assert lines[1] == "  status     succeeded"
        assert "  events     0" in lines
        shown = json.loads("\n".join(_run(capsys, dsn, schema, "show", album.failed, "--json")))
        assert shown["status"] == "failed"
        assert shown["parent"] == {"job_id": album.root, "name": "import-album"}
        assert shown["root"] == {"job_id": album.root, "name": "import-album"}
        assert [event["category"] for event in shown["event_rows"]] == ["ENRICHED", "FAILED"]
        assert "ValueError: no key for track 3" in shown["traceback"]

    def test_an_unknown_job_is_one_line(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["show", "nope", "--dsn", dsn, "--schema", schema]) == 1
        assert capsys.readouterr().err.count("\n") == 1


class TestHostileText:
    """Ids, names and messages from a hostile message never reach the terminal raw."""

    ESCAPED_ID = "evil\\x1b]0;retitled\\x07\\x1b[2J\\nforged line\\r\\x9b31m\\u202e"

    def test_tree_and_show_escape_every_control_character(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        lines = _run(capsys, dsn, schema, "tree", album.root)
        hostile = [line for line in lines if self.ESCAPED_ID in line]
        assert len(hostile) == 1  # one line: no forged second line
        assert "name\\x1b]0;owned\\x07 " in hostile[0]
        lines = _run(capsys, dsn, schema, "show", HOSTILE_ID)
        assert lines[0] == f"job {self.ESCAPED_ID}  name\\x1b]0;owned\\x07"
        assert any("message \\x1b[31mred\\r\\x9b" in line for line in lines)
        assert any("track t\\x07" in line for line in lines)

    def test_status_tail_history_and_json_escape_too(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        for argv in (
            ["status", "-n", "20"],
            ["tail", "--no-follow", "-n", "20"],
            ["history", "track", "t\x07"],
            ["history", "track", "t\x07", "--json"],
            ["tree", album.root, "--json"],
            ["show", HOSTILE_ID, "--json"],
        ):
            out = "\n".join(_run(capsys, dsn, schema, *argv))
            assert ("\\x1b" in out) or ("\\u001b" in out), argv
        # JSON stays JSON: the values come back intact.
        shown = json.loads("\n".join(_run(capsys, dsn, schema, "show", HOSTILE_ID, "--json")))
        assert shown["job_id"] == HOSTILE_ID

    def test_an_error_quoting_a_hostile_id_is_escaped(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["tree", "x\x1b[2J\ny", "--dsn", dsn, "--schema", schema]) == 1
        err = capsys.readouterr().err
        assert err.startswith("llamalog: error: no job 'x\\x1b[2J\\ny' ")
        assert "\x1b" not in err
        assert err.count("\n") == 1
        assert main(["--debug", "tree", "x\x1b[2J", "--dsn", dsn, "--schema", schema]) == 1
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):")
        assert "\x1b" not in err
        assert "no job 'x\\x1b[2J'" in err


class TestTailRoot:
    def test_no_follow_with_an_unknown_root_is_an_error(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert (
            main(["tail", "--root", "nope", "--no-follow", "--dsn", dsn, "--schema", schema]) == 1
        )
        assert capsys.readouterr().err == (
            f"llamalog: error: no job or run 'nope' in schema '{schema}'\n"
        )

    def test_a_child_id_is_not_a_root_and_the_error_names_its_root(
        self, dsn: str, schema: str, album: Album, capsys: pytest.CaptureFixture[str]
    ) -> None:
        argv = ["tail", "--root", album.failed, "--no-follow", "--dsn", dsn, "--schema", schema]
        assert main(argv) == 1
        assert capsys.readouterr().err == (
            f"llamalog: error: '{album.failed}' is not a root job: its root is '{album.root}'\n"
        )

    def test_following_an_unknown_root_says_so_then_follows_it(self, dsn: str, schema: str) -> None:
        """A tail started before its run: said once on standard error, then the run's
        events are printed as they come."""
        root = new_job_id()
        process = subprocess.Popen(
            [sys.executable, "-m", "llamalogger.cli", "tail", "--root", root,
             "--interval", "0.05", "--dsn", dsn, "--schema", schema],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert process.stderr is not None
            assert process.stdout is not None
            said = process.stderr.readline()
            assert (
                said
                == f"llamalog: no job or run '{root}' yet; following it anyway (Ctrl-C stops)\n"
            )
            with LlamaLogger(dsn, schema=schema) as logger, logger.job("late", job_id=root):
                logger.created(("album", 5))
            assert "album 5" in process.stdout.readline()
            assert process.poll() is None  # still following
        finally:
            process.terminate()
            process.wait(timeout=10)


class TestEscapeFunctions:
    """The two functions every command prints through (no database needed)."""

    @pytest.mark.parametrize(
        ("raw", "shown"),
        [
            ("\x1b]0;t\x07", "\\x1b]0;t\\x07"),  # ESC, BEL
            ("a\nb\rc\td", "a\\nb\\rc\\td"),  # line forging, column shifting
            ("\x00\x7f\x85\x9b", "\\x00\\x7f\\x85\\x9b"),  # NUL, DEL, C1 (NEL, CSI)
            ("abc\u202edcba\u2066\u2028", "abc\\u202edcba\\u2066\\u2028"),  # bidi, separator
            ("Björk: Jóga ✓", "Björk: Jóga ✓"),  # printable text is left alone
        ],
    )
    def test_visible_escapes_what_a_terminal_would_act_on(self, raw: str, shown: str) -> None:
        from llamalogger.cli._escape import visible

        assert visible(raw) == shown

    @pytest.mark.parametrize("indented", [False, True])
    def test_json_text_is_valid_json_without_raw_controls(self, indented: bool) -> None:
        from llamalogger.cli._escape import json_text

        value = {
            "id": HOSTILE_ID,
            "name": "Björk",
            "when": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            "huge": 2**70,  # beyond orjson: the standard library writes it
            "nested": [{"x": "\x9b"}],
        }
        text = json_text(value, indented=indented)
        for raw in (*RAW, "\n" if not indented else "\x00"):
            assert raw not in text
        assert "Björk" in text
        decoded = json.loads(text)
        assert decoded["id"] == HOSTILE_ID
        assert decoded["huge"] == 2**70
        assert decoded["when"] == "2026-01-01 00:00:00+00:00"
        assert decoded["nested"] == [{"x": "\x9b"}]
        # orjson's path (no huge int) decodes to the same values as the fallback's
        without_huge = {key: item for key, item in value.items() if key != "huge"}
        del decoded["huge"]
        assert json.loads(json_text(without_huge, indented=indented)) == decoded
