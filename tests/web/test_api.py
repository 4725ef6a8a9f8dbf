"""The web view's JSON API on a real server: runs, trees, jobs, entities, the tail, and
the refusals (400, 404), each through Starlette's test client."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from starlette.testclient import TestClient

from .conftest import (
    BIG_MESSAGE,
    DEPTH,
    HOSTILE_ENTITY_ID,
    HOSTILE_MESSAGE,
    HOSTILE_NAME,
    HOSTILE_TYPE,
    Album,
    tree_jobs,
)


def _get(client: TestClient, url: str, **params: Any) -> Any:
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


class TestRuns:
    def test_roots_newest_first_with_status_duration_events_and_failures(
        self, client: TestClient, album: Album
    ) -> None:
        data = _get(client, "/api/runs")
        assert [run["job_id"] for run in data["runs"]] == [album.other_root, album.root]
        other, root = data["runs"]
        assert (root["name"], root["status"], root["failures"]) == ("import-album", "succeeded", 1)
        assert root["events"] >= 10
        assert root["seconds"] > 0
        assert (other["name"], other["failures"], data["more"]) == ("nightly-sync", 0, False)

    def test_filters_by_status_name_time_and_any_job_or_task_id(
        self, client: TestClient, album: Album
    ) -> None:
        def roots(**params: Any) -> list[str]:
            return [run["job_id"] for run in _get(client, "/api/runs", **params)["runs"]]

        assert roots(status="failed") == [album.root]  # a failure anywhere in its tree
        assert roots(status="succeeded") == [album.other_root, album.root]
        assert roots(status="unfinished") == []
        assert roots(name="nightly-sync") == [album.other_root]
        assert roots(id=album.retried) == [album.root]  # a task's id finds its tree
        assert roots(id=album.unfinished) == [album.root]
        assert roots(id="no-such-job") == []
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        assert roots(since=later) == []
        assert roots(until="2000-01-01T00:00:00") == []
        assert roots(since="2000-01-01T00:00:00Z", until=later) == [album.other_root, album.root]

    def test_pages_of_runs(self, client: TestClient, album: Album) -> None:
        first = _get(client, "/api/runs", limit=1)
        second = _get(client, "/api/runs", limit=1, page=1)
        third = _get(client, "/api/runs", limit=1, page=2)
        assert [run["job_id"] for run in first["runs"] + second["runs"]] == [
            album.other_root,
            album.root,
        ]
        assert (first["more"], second["more"], third["runs"], third["more"]) == (
            True, False, [], False
        )  # fmt: skip


class TestTree:
    def test_any_job_gives_its_whole_tree_with_statuses_retries_and_unfinished_jobs(
        self, client: TestClient, album: Album
    ) -> None:
        data = _get(client, f"/api/tree/{album.failed}")
        assert data["asked"] == album.failed
        jobs = tree_jobs(data)
        root = jobs[data["jobs"]["id"][0]]
        assert (root["id"], root["status"], root["failed"]) == (album.root, "succeeded", False)
        failed, retried, unfinished = (
            jobs[album.failed], jobs[album.retried], jobs[album.unfinished]
        )  # fmt: skip
        assert (failed["status"], failed["failed"], failed["error_type"]) == (
            "failed", True, "ValueError"
        )  # fmt: skip
        assert failed["error_message"] == "no key for track 9"
        assert failed["parent_id"] == album.track  # the page counts it on the branch above
        assert [job["id"] for job in jobs.values() if job["failed"]] == [album.failed]
        assert (retried["retried"], retried["attempts"], retried["status"]) == (
            True, 2, "succeeded"
        )  # fmt: skip
        assert (unfinished["status"], unfinished["end"]) == ("unfinished", None)
        assert sum(unfinished["counts"].values()) == 2
        assert unfinished["start"] < unfinished["last"]  # drawn from its events
        assert unfinished["seconds"] == pytest.approx(
            (unfinished["last"] - unfinished["start"]) / 1000, abs=1e-6
        )  # its span so far; a finished job's the page computes from its end
        assert (failed["end"] > failed["start"], failed["last"], failed["seconds"]) == (
            True, None, None
        )  # fmt: skip
        assert jobs[album.hostile]["name"] == HOSTILE_NAME

    def test_an_unknown_job_is_404_with_a_message(self, client: TestClient) -> None:
        response = client.get("/api/tree/no-such-job")
        assert response.status_code == 404
        assert "no-such-job" in response.json()["error"]


class TestJob:
    def test_a_failed_job_has_its_attempts_traceback_entities_and_root(
        self, client: TestClient, album: Album
    ) -> None:
        job = _get(client, f"/api/jobs/{album.failed}")
        assert [(a["status"], a["error_type"]) for a in job["attempts"]] == [
            ("failed", "ValueError")
        ]
        assert "Traceback (most recent call last)" in job["traceback"]
        assert "ValueError: no key for track 9" in job["traceback"]
        assert job["root_job_id"] == album.root
        assert {"type": "track", "id": "9"} in job["entities"]
        assert [e["category"] for e in job["event_rows"]] == ["ENRICHED", "FAILED"]

    def test_a_retried_task_has_both_attempts(self, client: TestClient, album: Album) -> None:
        job = _get(client, f"/api/jobs/{album.retried}")
        assert [(a["attempt"], a["status"]) for a in job["attempts"]] == [
            (1, "retried"),
            (2, "succeeded"),
        ]

    def test_events_are_limited_on_request(self, client: TestClient, album: Album) -> None:
        job = _get(client, f"/api/jobs/{album.unfinished}", events=1)
        assert (len(job["event_rows"]), job["attempts"]) == (1, [])  # unfinished: no record


class TestEntity:
    def test_history_as_subject_and_object_with_failures_and_their_jobs(
        self, client: TestClient, album: Album
    ) -> None:
        data = _get(client, "/api/entities/track/9")
        by_category = {event["category"] for event in data["events"]}
        assert {"CREATED", "ENRICHED", "FAILED", "UPDATED"} <= by_category
        failed = next(e for e in data["events"] if e["category"] == "FAILED")
        assert (failed["job_id"], failed["root_job_id"]) == (album.failed, album.root)
        album_history = _get(client, "/api/entities/album/1")["events"]
        assert any(e["related_type"] == "album" and e["job_id"] == album.artist
                   for e in album_history)  # fmt: skip

    def test_an_entity_without_events_has_an_empty_history(self, client: TestClient) -> None:
        assert _get(client, "/api/entities/track/none")["events"] == []


class TestTail:
    def test_newest_events_oldest_first_then_only_newer_ones(
        self, client: TestClient, album: Album
    ) -> None:
        first = _get(client, "/api/tail", limit=3)
        ids = [event["id"] for event in first["events"]]
        assert ids == sorted(ids)
        assert first["last_id"] == ids[-1]
        assert _get(client, "/api/tail", after=ids[-1])["events"] == []
        older = _get(client, "/api/tail", after=ids[0])["events"]
        assert [event["id"] for event in older] == ids[1:]

    def test_of_one_run(self, client: TestClient, album: Album) -> None:
        events = _get(client, "/api/tail", root=album.other_root)["events"]
        assert {event["root_job_id"] for event in events} == {album.other_root}


class TestHostileRows:
    def test_come_back_whole_as_json_data(self, client: TestClient, album: Album) -> None:
        """A 1 MB message and details 300 levels deep (beyond orjson's limit) are served
        as they are stored; markup in names, ids and messages is just text in JSON."""
        job = _get(client, f"/api/jobs/{album.unfinished}")
        big = next(e for e in job["event_rows"] if e["message"] == BIG_MESSAGE)
        depth, value = 0, big["details"]
        while "down" in value:
            depth, value = depth + 1, value["down"]
        assert (depth, value) == (DEPTH, {"bottom": HOSTILE_MESSAGE})
        history = _get(client, f"/api/entities/{HOSTILE_TYPE}/{HOSTILE_ENTITY_ID}")
        assert history["events"][0]["message"] == HOSTILE_MESSAGE
        hostile = _get(client, f"/api/jobs/{album.hostile}")
        assert hostile["attempts"][0]["entity_type"] is None
        assert hostile["event_rows"][0]["job_name"] == HOSTILE_NAME


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("/api/runs?status=exploded", "status must be one of"),
        ("/api/runs?limit=0", "limit must be from 1"),
        ("/api/runs?limit=ten", "limit must be a whole number"),
        ("/api/runs?page=-1", "page must be a whole number"),
        ("/api/runs?since=yesterday", "since must be an ISO 8601 time"),
        ("/api/runs?since=2026-01-02&until=2026-01-01", "since must not be later than until"),
        ("/api/runs?nmae=x", "unknown parameter 'nmae'"),
        ("/api/runs?id=" + "x" * 201, "id is longer than 200"),
        ("/api/runs?name=a%00b", "name must not contain NUL"),
        ("/api/tail?after=1.5", "after must be a whole number"),
        ("/api/tail?limit=100000", "limit must be from 1 to 1000"),
        ("/api/jobs/x?events=-3", "events must be a whole number"),
        ("/api/tree/a%00b", "job_id must not contain NUL"),
        ("/api/entities/track/9?limit=0", "limit must be from 1"),
    ],
)
def test_bad_parameters_are_refused_with_400_naming_them(
    client: TestClient, url: str, said: str
) -> None:
    response = client.get(url)
    assert response.status_code == 400
    assert said in response.json()["error"]


def test_an_unmigrated_schema_is_503_saying_to_migrate(dsn: str, schema_name: str) -> None:
    from llamalogger.web import create_app

    with TestClient(create_app(dsn, schema=schema_name), base_url="http://127.0.0.1") as fresh:
        response = fresh.get("/api/runs")
    assert response.status_code == 503
    assert "run `llamalog migrate` first" in response.json()["error"]
