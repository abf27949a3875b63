"""`rapport publish PATH --server URL --token TOKEN` against a running server, both storages."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.catalog.models import Asset, AssetStatus, Lesson, Product
from app.config import Settings
from app.main import create_app
from tests.authoring.test_uploads import API, head_of, mode_settings, token_for
from tests.conftest import COURSES, ROOT, free_port

COURSE = COURSES / "trust-at-a-distance"


class ChunkBytes:
    """Counts the bytes that reach the chunk route (local mode's upload bytes)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.received = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).endswith("/chunk"):
            await self.app(scope, receive, send)
            return

        async def counting() -> Message:
            message = await receive()
            self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


class LiveServer:
    """The app under uvicorn in a thread of this process, on a free loopback port."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.counter = ChunkBytes(app)
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        config = uvicorn.Config(self.counter, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def live(settings: Settings, request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    moto = request.getfixturevalue("moto") if request.param == "s3" else None
    with LiveServer(create_app(mode_settings(settings, request.param, moto))) as server:
        yield server


def publish(live: LiveServer, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "publish", str(COURSE), "--server", live.url, *extra],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "RAPPORT_API_TOKEN": token, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_publish_to_a_server_uploads_then_reuses(live: LiveServer, engine: Engine) -> None:
    token = token_for(engine, "author@example.com", "author")
    first = publish(live, token)
    assert first.returncode == 0, first.stderr
    assert "created trust-at-a-distance" in first.stdout
    assert "uploaded 8 file(s)" in first.stdout  # five videos, the PDF, two caption tracks
    assert "uploading welcome.mp4" in first.stderr  # rich's progress bars, one per file
    with Session(engine) as s:
        product = s.exec(select(Product).where(Product.slug == "trust-at-a-distance")).one()
        lessons = s.exec(select(Lesson).where(Lesson.product_id == product.id)).all()
        with_files = [ls for ls in lessons if ls.asset_id]
        assert len(with_files) == 6
        ready = s.exec(select(Asset).where(col(Asset.id).in_([ls.asset_id for ls in with_files])))
        for asset in ready:
            assert asset.status == AssetStatus.ready
        welcome = next(ls for ls in lessons if ls.key == "welcome")
        assert set(welcome.captions) == {"en", "de"}
        video = s.get(Asset, welcome.asset_id)
        assert video is not None and video.duration_seconds and video.poster_key
        expected = hashlib.sha256((COURSE / "media" / "welcome.mp4").read_bytes()).hexdigest()
        assert video.sha256 == expected
    again = publish(live, token)
    assert again.returncode == 0, again.stderr
    assert "updated trust-at-a-distance" in again.stdout
    assert "nothing uploaded; 8 file(s) the server had reused" in again.stdout
    assert "0 added" in again.stdout and "0 updated" in again.stdout


def test_an_interrupted_publish_resumes_where_it_stopped(
    live: LiveServer, engine: Engine, tmp_path: Path
) -> None:
    token = token_for(engine, "author@example.com", "author")
    video = COURSE / "media" / "first-call-limits.mp4"
    data = video.read_bytes()
    # An earlier run that died after the first 64 KiB had reached the server (local mode).
    with TestClient(live.app, headers={"Authorization": f"Bearer {token}"}) as client:
        upload = client.post(
            f"{API}/uploads",
            json={
                "kind": "video",
                "filename": video.name,
                "size": len(data),
                "head": head_of(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            },
        ).json()
        if upload["mode"] == "local":
            client.put(f"{API}/uploads/{upload['id']}/chunk?offset=0", content=data[:65536])
    before = live.counter.received
    done = publish(live, token)
    assert done.returncode == 0, done.stderr
    with Session(engine) as s:
        lesson = s.exec(select(Lesson).where(Lesson.key == "first-call-limits")).one()
        assert lesson.asset_id == upload["id"]  # the same upload, finished
    if upload["mode"] == "local":
        others = sum(p.stat().st_size for p in (COURSE / "media").glob("*.mp4")) - len(data)
        others += (COURSE / "media" / "b2b-linkedin-playbook.pdf").stat().st_size
        others += sum(p.stat().st_size for p in (COURSE / "captions").iterdir())
        assert live.counter.received - before == others + len(data) - 65536


def test_a_broken_manifest_sends_nothing(live: LiveServer, engine: Engine, tmp_path: Path) -> None:
    token = token_for(engine, "author@example.com", "author")
    bad = tmp_path / "trust-at-a-distance"
    bad.mkdir()
    (bad / "course.toml").write_text('slug = "trust-at-a-distance"\nkind = "movie"\n')
    done = subprocess.run(
        [sys.executable, "-m", "app", "publish", str(bad), "--server", live.url, "--token", token],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "nothing was changed" in done.stderr
    with Session(engine) as s:
        assert s.exec(select(Asset)).first() is None


def test_a_wrong_token_is_refused(live: LiveServer) -> None:
    done = publish(live, "rp_not-a-token")
    assert done.returncode == 2
    assert "401" in done.stderr
