"""Health, readiness (naming what is down, recovering by itself), error pages, logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import MotoServer, free_port, make_bucket, missing


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "storage": "ok"}


def test_readyz_names_storage_while_s3_is_down_and_recovers(settings: Settings) -> None:
    moto = MotoServer(free_port())
    moto.start()
    try:
        bucket = make_bucket(moto.url)
        s3_settings = settings.model_copy(
            update={"storage": "s3", "s3_bucket": bucket, "s3_endpoint_url": moto.url}
        )
        with TestClient(create_app(s3_settings)) as client:
            assert client.get("/readyz").status_code == 200
            moto.stop()
            down = client.get("/readyz")
            assert down.status_code == 503
            assert down.json()["failing"] == ["storage"]
            assert down.headers["retry-after"]
            moto.start()  # same port; the app is not restarted
            assert client.get("/readyz").status_code == 200
    finally:
        moto.stop()


def test_readyz_names_the_database_when_it_is_unreachable(tmp_path: Path) -> None:
    settings = Settings(
        env="test",
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere",
        media_dir=tmp_path,
        access_log=False,
        _env_file=None,
    )
    with TestClient(create_app(settings)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["failing"] == ["database"]
        page = client.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 503 and "Temporarily unavailable" in page.text
        assert client.get("/healthz").status_code == 200


def test_unexpected_error_shows_the_500_page(app: FastAPI) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaputt")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"Accept": "text/html"})
    assert r.status_code == 500
    assert "Something went wrong" in r.text and 'class="site-header"' in r.text
    assert "kaputt" not in r.text


def test_request_id_is_kept_or_made(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    made = client.get("/healthz", headers={"X-Request-ID": "bad id\n!"}).headers["x-request-id"]
    assert made and made != "bad id\n!"


def test_access_log_is_json_with_request_id(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(settings.model_copy(update={"access_log": True}))
    with TestClient(app) as client:
        client.get("/healthz", headers={"X-Request-ID": "req-42"})
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    access = [line for line in lines if line.get("event") == "http.request"]
    assert access and access[-1]["request_id"] == "req-42" and access[-1]["status"] == 200


def test_local_media_route_rejects_bad_links(client: TestClient) -> None:
    key = "assets/" + "0" * 32 + ".mp4"
    assert client.get(f"/media/{key}", params={"exp": 1, "sig": "x"}).status_code == 403
    assert client.get("/media/../../etc/passwd", params={"exp": 1, "sig": "x"}).status_code in (
        403,
        404,
    )
    assert client.get(f"/media/{key}", params={"exp": "soon", "sig": "x"}).status_code == 422
    assert client.get(f"/media/{key}").status_code == 422


def test_pinned_browser_libraries_are_served(client: TestClient) -> None:
    vendor = Path(__file__).resolve().parent.parent / "app" / "static" / "vendor"
    if not (vendor / "htmx.min.js").exists():
        missing(
            "browser libraries", "run `make vendor` (npm ci, then copies into app/static/vendor)"
        )
    assert client.get("/static/vendor/htmx.min.js").status_code == 200
    worker = client.get("/static/vendor/pdfjs/pdf.worker.min.mjs")
    assert worker.status_code == 200 and "javascript" in worker.headers["content-type"]
    assert client.get("/static/css/app.css").headers["content-type"].startswith("text/css")


def test_writes_are_committed_before_the_response_is_sent(
    client: TestClient, engine: object
) -> None:
    """A redirect after a write must never lead to a page that cannot see the write yet."""
    from tests.conftest import csrf_token, make_user, sign_in

    make_user(engine, "ada@example.com")  # type: ignore[arg-type]
    sign_in(client, engine, "ada@example.com")  # type: ignore[arg-type]
    for i in range(20):
        r = client.post(
            "/account/profile", data={"name": f"Ada {i}", "csrftoken": csrf_token(client)}
        )
        assert f'value="Ada {i}"' in r.text  # the followed redirect shows the new name
