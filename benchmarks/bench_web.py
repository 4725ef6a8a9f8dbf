"""The web view at scale: the runs page over 10,000 roots on the server, and trees in
headless Chromium (the demo's 7,000 jobs, and 50,000 jobs opened collapsed).

    python benchmarks/bench_web.py [--dsn DSN] [--roots 10000] [--chromium /usr/bin/chromium]
                                   [--only runs|trees]

1. **Runs page, server time.** 10,000 imports (a root and 4 child jobs each, 10 events
   each, 1 % with a failed child) are loaded with COPY; then ``GET /api/runs`` is timed in
   process through Starlette's test client (routing, parameter checks, the CLI's
   ``runs()`` query on a read-only connection, JSON), for the first page, the failed
   filter, a name filter, page 50 and a task id; medians of 21 requests.
2. **Demo-size tree in Chromium.** ``llamalog demo --tracks 2000`` (7,000 jobs, written by the
   real logger) is served by ``llamalog serve`` in its own process; Chromium opens its run
   page. Interactive: the tree is drawn and the selected job's panel loaded, in ms from
   navigation start as the page records it (and when the driver sees it); medians of 5.
3. **50,000 jobs.** A tree of 50,000 job records (a root, 250 children, 199 grandchildren
   each) opens collapsed; then a branch is expanded (199 rows drawn), and "expand all" is
   clicked (children drawn 200 per level at most). The longest main-thread task (Long Tasks
   API) shows whether the page ever froze.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from _support import scratch_schema
from psycopg import sql

from llamalogger.cli._demo import run_demo
from llamalogger.web import create_app

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
JOB_COLUMNS = (
    "job_id, parent_job_id, root_job_id, job_name, status, attempt, started_at, ended_at,"
    " error_type, error_message"
)
LOG_COLUMNS = "logged_at, category, level, message, job_id, parent_job_id, root_job_id, job_name"


def load_runs(dsn: str, schema: str, roots: int) -> tuple[str, str]:
    """``roots`` imports of 5 jobs and 10 events each; returns a root and a child's id."""
    rng = random.Random(7)
    records, events = [], []
    some_root = some_child = ""
    for number in range(roots):
        root = str(uuid.uuid4())
        start = START + dt.timedelta(seconds=number * 10)
        failing = rng.random() < 0.01
        for index in range(4):
            child = str(uuid.uuid4())
            failed = failing and index == 3
            begin = start + dt.timedelta(seconds=index)
            status, error = ("failed", "no key") if failed else ("succeeded", None)
            records.append(
                (
                    child,
                    root,
                    root,
                    "import-track",
                    status,
                    1,
                    begin,
                    begin + dt.timedelta(seconds=1),
                    error and "ValueError",
                    error,
                )
            )
            for event in range(2):
                at = begin + dt.timedelta(milliseconds=event)
                events.append(
                    (at, "CREATED", "info", "track created", child, root, root, "import-track")
                )
            some_child = child
        records.append(
            (
                root,
                None,
                root,
                f"import-{number % 20}",
                "succeeded",
                1,
                start,
                start + dt.timedelta(seconds=5),
                None,
                None,
            )
        )
        events.extend(
            (start, "CREATED", "info", "album created", root, None, root, "import")
            for _ in range(2)
        )
        some_root = root
    rng.shuffle(events)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        for table, columns, rows in (
            ("llama_job", JOB_COLUMNS, records),
            ("llama_log", LOG_COLUMNS, events),
        ):
            target = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
                sql.Identifier(schema), sql.Identifier(table), sql.SQL(columns)
            )
            with cur.copy(target) as copy:
                for row in rows:
                    copy.write_row(row)
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("llama_job", "llama_log"):
            conn.execute(
                sql.SQL("VACUUM ANALYZE {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            )
    return some_root, some_child


def time_runs_page(dsn: str, schema: str, roots: int) -> None:
    from starlette.testclient import TestClient

    started = time.perf_counter()
    _, child = load_runs(dsn, schema, roots)
    print(
        f"loaded {roots:,} runs ({roots * 5:,} job records, {roots * 10:,} events) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    cases = {
        "first page (50 runs)": "/api/runs",
        "status=failed": "/api/runs?status=failed",
        "name=import-7": "/api/runs?name=import-7",
        "page 50": "/api/runs?page=50",
        "a child job's id": f"/api/runs?id={child}",
        "since one hour of runs": "/api/runs?since="
        + (START + dt.timedelta(seconds=roots * 10 - 3600)).isoformat().replace("+", "%2B"),
    }
    with TestClient(create_app(dsn, schema=schema), base_url="http://127.0.0.1") as client:
        for label, url in cases.items():
            times = []
            for _ in range(21):
                began = time.perf_counter()
                response = client.get(url)
                times.append(time.perf_counter() - began)
                assert response.status_code == 200, response.text
            shown = len(response.json()["runs"])
            low, high = min(times) * 1000, max(times) * 1000
            print(
                f"  GET {label:24} {statistics.median(times) * 1000:7.1f} ms median "
                f"(min {low:.1f}, max {high:.1f}; {shown} runs)"
            )


@contextmanager
def served(dsn: str, schema: str) -> Iterator[str]:
    """``llamalog serve`` in its own process, as a user runs it: the browser driver's Python
    must not share the server's interpreter (and its lock)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    command = [sys.executable, "-m", "llamalogger.cli", "serve", "--dsn", dsn]
    server = subprocess.Popen([*command, "--schema", schema, "--port", str(port)])
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llamalog serve did not start (exit code {server.poll()})")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


# The longest main-thread task, and when the job panel's facts appear (what "interactive"
# waits for), seen from inside the page: the driver notices it later, by up to hundreds of ms
# on a loaded machine.
LONG_TASKS = """
window.__longest = 0;
new MutationObserver(() => {
  if (!window.__ready && document.querySelector(".job-panel dl.facts")) {
    window.__ready = performance.now();
  }
}).observe(document, { subtree: true, childList: true });
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    window.__longest = Math.max(window.__longest, entry.duration);
  }
}).observe({ type: "longtask", buffered: true });
"""


def open_tree(browser: Any, url: str) -> tuple[float, float, float, Any]:
    """ms from navigation start until the tree and the job panel are drawn (in the page,
    and as the driver sees it); the longest task."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.add_init_script(LONG_TASKS)
    page.goto(url)
    page.wait_for_selector(".job-panel dl.facts", timeout=60_000)
    seen = page.evaluate("performance.now()")
    ready = page.evaluate("window.__ready")
    return ready, seen, page.evaluate("window.__longest"), (context, page)


def time_click(page: Any, selector: str, wait_for: str) -> float:
    began = page.evaluate("performance.now()")
    page.click(selector)
    page.wait_for_selector(wait_for, timeout=60_000)
    return float(page.evaluate("performance.now()")) - began


def load_big_tree(dsn: str, schema: str, children: int, grandchildren: int) -> str:
    root = str(uuid.uuid4())
    rows = [
        (
            root,
            None,
            root,
            "big-import",
            "succeeded",
            1,
            START,
            START + dt.timedelta(hours=1),
            None,
            None,
        )
    ]
    for number in range(children):
        child = str(uuid.uuid4())
        begin = START + dt.timedelta(seconds=number * 10)
        rows.append(
            (
                child,
                root,
                root,
                "import-track",
                "succeeded",
                1,
                begin,
                begin + dt.timedelta(seconds=9),
                None,
                None,
            )
        )
        for leaf in range(grandchildren):
            at = begin + dt.timedelta(milliseconds=leaf * 40)
            rows.append(
                (
                    str(uuid.uuid4()),
                    child,
                    root,
                    "enrich",
                    "succeeded",
                    1,
                    at,
                    at + dt.timedelta(milliseconds=30),
                    None,
                    None,
                )
            )
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        target = sql.SQL("COPY {}.llama_job ({}) FROM STDIN").format(
            sql.Identifier(schema), sql.SQL(JOB_COLUMNS)
        )
        with cur.copy(target) as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
    return root


def server_times(dsn: str, schema: str, trees: dict[str, str]) -> None:
    """The server's share of opening a run page: the tree and the root's panel (medians of 5)."""
    from starlette.testclient import TestClient

    with TestClient(create_app(dsn, schema=schema), base_url="http://127.0.0.1") as client:
        for label, root in trees.items():
            for kind in ("tree", "jobs"):
                times, size = [], 0
                for _ in range(5):
                    began = time.perf_counter()
                    response = client.get(f"/api/{kind}/{root}")
                    times.append(time.perf_counter() - began)
                    size = len(response.content)
                print(
                    f"  server: GET /api/{kind}/ of the {label}: "
                    f"{statistics.median(times) * 1000:6.0f} ms ({size / 1e6:.2f} MB)"
                )


def time_trees(dsn: str, schema: str, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    started = time.perf_counter()
    demo = run_demo(dsn, schema=schema, tracks=2000)
    jobs = sum(1 for _ in demo.tree.walk())
    print(
        f"demo --tracks 2000: {jobs:,} jobs, {demo.events:,} events "
        f"written in {time.perf_counter() - started:.1f} s"
    )
    big = load_big_tree(dsn, schema, 250, 199)
    server_times(dsn, schema, {"demo tree": demo.root_job_id, "50,000-job tree": big})
    with served(dsn, schema) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        readies, seens, longest = [], [], []
        for _ in range(5):
            ready, seen, long_task, (context, _page) = open_tree(
                browser, f"{url}/jobs/{demo.root_job_id}"
            )
            readies.append(ready)
            seens.append(seen)
            longest.append(long_task)
            context.close()
        print(
            f"  demo tree interactive: {statistics.median(readies):6.0f} ms from navigation "
            f"(runs {min(readies):.0f}-{max(readies):.0f}; seen by the driver at "
            f"{statistics.median(seens):.0f}); longest task {statistics.median(longest):.0f} ms"
        )
        ready, seen, long_task, (context, page) = open_tree(browser, f"{url}/jobs/{big}")
        rows = page.locator(".job").count()
        print(
            f"  50,000-job tree interactive, collapsed: {ready:6.0f} ms ({rows} rows drawn; "
            f"seen by the driver at {seen:.0f}); longest task {long_task:.0f} ms"
        )
        page.evaluate("window.__longest = 0")
        branch = time_click(page, ".job:nth-child(2) .toggle", ".job:nth-child(201)")
        print(
            f"  expand one branch (199 rows): {branch:6.0f} ms; "
            f"longest task {page.evaluate('window.__longest'):.0f} ms"
        )
        page.evaluate("window.__longest = 0")
        before = page.locator(".job").count()
        level = time_click(page, "#expand-level", f".job:nth-child({before + 1000})")
        rows = page.locator(".job").count()
        print(
            f"  expand a level ({rows - before:,} more rows): {level:6.0f} ms; "
            f"longest task {page.evaluate('window.__longest'):.0f} ms"
        )
        context.close()
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--roots", type=int, default=10_000)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--only", choices=("runs", "trees"), help="one of the two parts")
    args = parser.parse_args()
    if args.only != "trees":
        with scratch_schema(args.dsn) as (dsn, schema, version):
            print(f"PostgreSQL {version}")
            time_runs_page(dsn, schema, args.roots)
    if args.only != "runs":
        with scratch_schema(args.dsn) as (dsn, schema, version):
            print(f"PostgreSQL {version}")
            time_trees(dsn, schema, args.chromium)


if __name__ == "__main__":
    main()
