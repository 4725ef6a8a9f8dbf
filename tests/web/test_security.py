"""The web view is safe by default: its headers, the host and token rules, read-only
transactions, and no DSN password in a response or a log line."""

from __future__ import annotations

import logging
import re

import psycopg
import pytest
from starlette.testclient import TestClient

from llamalogger.cli import main
from llamalogger.web import create_app
from llamalogger.web._security import CONTENT_SECURITY_POLICY

from .conftest import Album

PAGES = ["/", "/?status=failed", "/jobs/some-job", "/entities/track/9", "/tail", "/tail?root=x"]


class TestPages:
    @pytest.mark.parametrize("url", PAGES)
    def test_every_page_is_a_data_free_shell_under_the_policy(
        self, client: TestClient, url: str
    ) -> None:
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        # The only script is the shipped file; no inline script or style, no data.
        assert re.findall(r"<script[^>]*>", response.text) == [
            '<script src="/static/app.js" defer>'
        ]
        assert "<style" not in response.text
        assert " style=" not in response.text
        assert "some-job" not in response.text

    @pytest.mark.parametrize("asset", ["app.js", "app.css"])
    def test_assets_are_served_from_the_package(self, client: TestClient, asset: str) -> None:
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "http://" not in response.text
        assert "https://" not in response.text  # no CDN

    def test_the_script_never_parses_html(self, client: TestClient) -> None:
        script = client.get("/static/app.js").text
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in script


class TestHosts:
    def test_without_a_token_a_foreign_host_header_is_refused(self, client: TestClient) -> None:
        """A page elsewhere that rebinds its own name to 127.0.0.1 cannot read the view."""
        response = client.get("/api/runs", headers={"host": "evil.example:8765"})
        assert response.status_code == 400
        for host in ("127.0.0.1:8765", "localhost", "[::1]:8765"):
            assert client.get("/api/runs", headers={"host": host}).status_code == 200


@pytest.fixture
def guarded(dsn: str, album_schema: tuple[str, Album]) -> TestClient:
    app = create_app(dsn, schema=album_schema[0], token="s3cret-token")
    return TestClient(app, base_url="http://192.0.2.10:8765")


class TestToken:
    def test_every_request_needs_the_token(self, guarded: TestClient) -> None:
        with guarded:
            for url in ("/", "/api/runs", "/static/app.js", "/tail"):
                response = guarded.get(url)
                assert response.status_code == 401, url
                assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert guarded.get("/api/runs?token=wrong").status_code == 401
            assert (
                guarded.get("/api/runs", headers={"x-llamalog-token": "s3cret"}).status_code == 401
            )

    def test_a_header_or_bearer_token_is_accepted(self, guarded: TestClient) -> None:
        with guarded:
            ok = {"x-llamalog-token": "s3cret-token"}
            assert guarded.get("/api/runs", headers=ok).status_code == 200
            bearer = {"authorization": "Bearer s3cret-token"}
            assert guarded.get("/api/runs", headers=bearer).status_code == 200

    def test_a_first_visit_with_the_token_sets_a_cookie_and_drops_it_from_the_address(
        self, guarded: TestClient
    ) -> None:
        with guarded:
            first = guarded.get("/?token=s3cret-token&status=failed", follow_redirects=False)
            assert first.status_code == 303
            assert first.headers["location"] == "/?status=failed"
            cookie = first.headers["set-cookie"]
            assert "llamalog_token=s3cret-token" in cookie
            assert "HttpOnly" in cookie
            assert "SameSite=strict" in cookie
            assert guarded.get("/api/runs").status_code == 200  # the cookie carries it now

    def test_the_redirect_never_leaves_the_site(self, guarded: TestClient) -> None:
        with guarded:
            response = guarded.get(
                "http://192.0.2.10:8765//evil.example/?token=s3cret-token", follow_redirects=False
            )
            assert response.status_code == 303
            assert response.headers["location"] == "/evil.example/"


class TestServeCommand:
    def test_another_address_without_a_token_is_refused_before_listening(
        self, dsn: str, album_schema: tuple[str, Album], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:  # fmt: skip
        monkeypatch.delenv("LLAMALOG_WEB_TOKEN", raising=False)
        status = main(["serve", "--dsn", dsn, "--schema", album_schema[0], "--host", "0.0.0.0"])
        assert status == 1
        assert "give a token with --token or $LLAMALOG_WEB_TOKEN" in capsys.readouterr().err

    def test_an_unmigrated_schema_is_refused_before_listening(
        self, dsn: str, schema_name: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["serve", "--dsn", dsn, "--schema", schema_name]) == 1
        assert "llamalog migrate" in capsys.readouterr().err

    def test_bad_ports_are_usage_errors(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            main(["serve", "--port", "70000"])
        assert "a port is from 1 to 65535" in capsys.readouterr().err


def test_queries_run_in_read_only_transactions(client: TestClient) -> None:
    database = client.app.state.database  # type: ignore[attr-defined]
    with database.connection() as conn:
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE web_must_not_write (id int)")


def test_the_dsn_password_is_in_no_response_and_no_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that refuses the login: the page says the database is unavailable, and
    neither it nor the log quotes the password."""
    password = "pw-that-must-not-leak"
    dsn = f"postgresql://nobody:{password}@127.0.0.1:1/none?connect_timeout=1"
    app = create_app(dsn, connection_timeout=0.5)
    caplog.set_level(logging.DEBUG)
    with TestClient(app, base_url="http://127.0.0.1") as unreachable:
        response = unreachable.get("/api/runs")
    assert response.status_code == 503
    assert "unavailable" in response.json()["error"]
    assert password not in response.text
    assert password not in caplog.text
