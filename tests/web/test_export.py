"""``llamalog tree ID --html FILE``: one self-contained page whose only code is its own,
allowed by hash; strings from the database stay data. (test_browser.py opens it.)"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llamalogger.cli import main

from .conftest import HOSTILE_NAME, PWN, Album, tree_jobs


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@pytest.fixture
def exported(dsn: str, album_schema: tuple[str, Album], tmp_path: Path) -> str:
    target = tmp_path / "run.html"
    schema, album = album_schema
    assert (
        main(["tree", album.failed, "--dsn", dsn, "--schema", schema, "--html", str(target)]) == 0
    )
    return target.read_text(encoding="utf-8")


def test_only_its_own_script_and_style_may_run_by_their_hashes(exported: str) -> None:
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', exported)
    assert policy is not None
    scripts = re.findall(r"<script>(.*?)</script>", exported, flags=re.S)
    styles = re.findall(r"<style>(.*?)</style>", exported, flags=re.S)
    assert len(scripts) == 1
    assert len(styles) == 1
    assert f"script-src {_sha256(scripts[0])};" in policy.group(1)
    assert f"style-src {_sha256(styles[0])};" in policy.group(1)
    assert "unsafe-inline" not in policy.group(1)
    assert "http" not in policy.group(1)  # nothing fetched from anywhere


def test_the_data_is_inert_json_holding_the_hostile_strings(
    exported: str, album_schema: tuple[str, Album]
) -> None:
    album = album_schema[1]
    markup = exported.split('id="tree-data">', maxsplit=1)[0]
    assert PWN not in markup  # only in the data
    assert "<script>window" not in exported
    assert "onerror=" not in exported.replace("onerror=\\", "")  # only escaped, inside JSON
    data_text = re.search(
        r'<script type="application/json" id="tree-data">(.*?)</script>', exported, re.S
    )
    assert data_text is not None
    assert "<" not in data_text.group(1)
    data = json.loads(data_text.group(1))
    assert (data["asked"], data["jobs"]["id"][0]) == (album.failed, album.root)
    assert HOSTILE_NAME in [job["name"] for job in tree_jobs(data).values()]


def test_an_unknown_job_writes_nothing(
    dsn: str, album_schema: tuple[str, Album], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "none.html"
    args = ["tree", "no-such-job", "--dsn", dsn, "--schema", album_schema[0], "--html"]
    assert main([*args, str(target)]) == 1
    assert not target.exists()
    assert "no job 'no-such-job'" in capsys.readouterr().err


def test_the_export_needs_no_web_extra() -> None:
    """Only the package's own assets: importing it loads neither Starlette nor uvicorn."""
    code = (
        "import sys; from llamalogger.web import tree_html; "
        "print(sorted(m for m in ('starlette', 'uvicorn') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
