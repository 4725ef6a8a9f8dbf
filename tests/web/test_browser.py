"""End to end in a real browser: Playwright drives the system's Chromium (headless, no
browser downloaded) against the view served by uvicorn on a real server.

Every test also checks that no hostile string ran: ``window.__pwned`` stays unset and no
dialog opens. The runs-to-traceback walk writes the screenshot docs/web.md shows.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from llamalogger import Category, LlamaLogger

from .conftest import HOSTILE_ENTITY_ID, HOSTILE_NAME, HOSTILE_TYPE, Served

CHROMIUM = os.environ.get("LLAMALOG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "serve-run.png"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"Chromium is not installed ({CHROMIUM} is missing)"
)
expect = sync_api.expect


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that records dialogs and script errors; after the test, nothing hostile
    may have run in it."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    dialogs: list[str] = []
    errors: list[str] = []
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    pwned = tab.evaluate("() => window.__pwned")
    context.close()
    assert pwned is None, "a hostile string ran as script"
    assert dialogs == []
    assert errors == []


def test_runs_filter_failed_open_run_expand_traceback_and_entity(page: Any, served: Served) -> None:
    album = served.album
    page.goto(served.url + "/")
    expect(page.locator("tr.run")).to_have_count(2)
    page.select_option("#f-status", "failed")
    page.click("form.filters button[type=submit]")
    expect(page.locator("tr.run")).to_have_count(1)
    assert "status=failed" in page.url
    page.click("tr.run a.run-name")
    expect(page).to_have_url(re.compile("/jobs/"))
    expect(page.locator(".run-summary h1")).to_contain_text("import-album")
    # The failed branch is open: the failed job is in view; other branches are collapsed.
    failed_row = page.locator(f'.job[data-id="{album.failed}"]')
    expect(failed_row).to_be_visible()
    expect(page.locator(f'.job[data-id="{album.retried}"] .retried')).to_be_visible()
    expect(page.locator(f'.job[data-id="{album.unfinished}"] .bar.unfinished')).to_be_visible()
    # Collapse all, then open a level, then one branch by its toggle.
    page.click("#collapse-all")
    expect(failed_row).to_have_count(0)
    track_row = page.locator(f'.job[data-id="{album.track}"]')
    expect(track_row).to_be_visible()
    page.click("#collapse-all")
    track_row.locator(".toggle").click()
    expect(failed_row).to_be_visible()
    page.click("#collapse-all")
    page.click("#expand-level")
    expect(failed_row).to_be_visible()
    failed_row.click()
    expect(page).to_have_url(served.url + "/jobs/" + quote(album.failed, safe=""))
    expect(page.locator(".traceback-text")).to_contain_text("ValueError: no key for track 9")
    page.screenshot(path=str(SCREENSHOT))
    page.locator(".job-panel a.entity-link", has_text="track 9").first.click()
    expect(page).to_have_url(served.url + "/entities/track/9")
    expect(page.locator("tr.event.failed")).to_have_count(1)
    page.locator("tr.event.failed a.run-link").click()
    expect(page.locator(".run-summary h1")).to_contain_text("import-album")


def test_the_url_names_the_job_so_it_can_be_shared(page: Any, served: Served) -> None:
    page.goto(served.url + "/jobs/" + quote(served.album.retried, safe=""))
    selected = page.locator(".job.selected")
    expect(selected).to_have_attribute("data-id", served.album.retried)
    expect(page.locator(".job-panel table.attempts tbody tr")).to_have_count(2)


def test_the_tail_grows_while_a_logger_writes(page: Any, served: Served, dsn: str) -> None:
    page.goto(served.url + "/tail")
    rows = page.locator("tr.event")
    expect(rows.first).to_be_visible()
    before = rows.count()
    with LlamaLogger(dsn, schema=served.schema) as logger, logger.job("tail-check"):
        for number in range(3):
            logger.log(Category.UPDATED, f"live event {number}", entity=("track", "live"))
        assert logger.flush(timeout=10)
    expect(page.locator("tr.event", has_text="live event 2")).to_be_visible()
    assert rows.count() == before + 3


def test_hostile_rows_render_as_text_and_run_nothing(page: Any, served: Served) -> None:
    page.goto(served.url + "/jobs/" + quote(served.album.hostile, safe=""))
    panel = page.locator(".job-panel")
    expect(panel.locator("h2")).to_contain_text(HOSTILE_NAME)
    expect(page.locator(".job.selected .name")).to_have_text(HOSTILE_NAME)
    link = panel.locator("a.entity-link", has_text=HOSTILE_ENTITY_ID).first
    href = link.get_attribute("href")
    assert href is not None
    assert href.startswith("/entities/javascript%3A")
    link.click()
    expect(page.locator("h1")).to_contain_text(f"{HOSTILE_TYPE} {HOSTILE_ENTITY_ID}")
    expect(page.locator("tr.event")).to_have_count(2)
    # The 1 MB message is cut on the page, whole on request, and the page still works.
    page.goto(served.url + "/jobs/" + quote(served.album.unfinished, safe=""))
    expect(page.locator(".job-panel button.more").first).to_be_visible()
    page.locator(".job-panel button.more").first.click()
    expect(page.locator(".job-panel td.message").nth(1)).to_contain_text("x" * 1000)
    page.goto(served.url + "/tail?root=" + quote(served.album.root, safe=""))
    expect(page.locator("tr.event").first).to_be_visible()


def test_the_exported_file_draws_the_tree_and_runs_nothing_else(
    page: Any, served: Served, dsn: str, tmp_path: Path
) -> None:
    from llamalogger.cli import main

    target = tmp_path / "run.html"
    status = main(
        [
            "tree",
            served.album.hostile,
            "--dsn",
            dsn,
            "--schema",
            served.schema,
            "--html",
            str(target),
        ]
    )
    assert status == 0
    page.goto(target.as_uri())
    expect(page.locator(".run-summary h1")).to_contain_text("import-album")
    expect(page.locator(".job.selected .name")).to_have_text(HOSTILE_NAME)
    expect(page.locator(f'.job[data-id="{served.album.failed}"]')).to_be_visible()
