"""In S3 mode the app handles no media bytes: a 200 MiB upload goes to the bucket, and the
app's request bodies on the upload routes stay a few hundred bytes of JSON."""

from __future__ import annotations

import hashlib
import os
import struct
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.authoring.uploads import MiB
from app.config import Settings
from app.integrations.s3 import S3Storage
from app.main import create_app
from tests.authoring.test_uploads import API, head_of, make_mp4, token_for
from tests.conftest import MotoServer, make_bucket

pytestmark = pytest.mark.s3
TOTAL = 200 * MiB


class BodyBytes:
    """ASGI wrapper counting the request body bytes the app reads, per route kind."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.read: dict[str, int] = defaultdict(int)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith(API):
            await self.app(scope, receive, send)
            return
        # The chunk route is the only one meant to carry media bytes (in local mode).
        kind = "media" if path.endswith("/chunk") else "json"

        async def counting() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.read[kind] += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


def virtual_mp4(video: bytes, size: int) -> bytes:
    """The start of a size-byte MP4: a real short video, then a `free` box (ISO BMFF's
    padding) whose filler part_bytes makes part by part, so the file is never held whole."""
    return video + struct.pack(">I4s", size - len(video), b"free")


def part_bytes(prefix: bytes, block: bytes, start: int, end: int) -> bytes:
    """Bytes start..end (exclusive) of the virtual file: prefix, then block repeated."""
    out = bytearray(prefix[start:end])
    pos = max(start, len(prefix))
    while pos < end:
        offset = (pos - len(prefix)) % len(block)
        take = min(len(block) - offset, end - pos)
        out += block[offset : offset + take]
        pos += take
    return bytes(out)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mp4(tmp_path_factory.mktemp("media") / "short.mp4")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_200_mib_upload_sends_no_media_bytes_through_the_app(
    settings: Settings, engine: Engine, moto: MotoServer, video: Path
) -> None:
    s3 = settings.model_copy(
        update={"storage": "s3", "s3_endpoint_url": moto.url, "s3_bucket": make_bucket(moto.url)}
    )
    app: FastAPI = create_app(s3)
    counter = BodyBytes(app)
    token = token_for(engine, "author@example.com", "author")
    header, block = virtual_mp4(video.read_bytes(), TOTAL), os.urandom(MiB)
    digest = hashlib.sha256()
    with TestClient(
        counter, raise_server_exceptions=False, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        r = client.post(
            f"{API}/uploads",
            json={
                "kind": "video",
                "filename": "long.mp4",
                "size": TOTAL,
                "head": head_of(part_bytes(header, block, 0, 64)),
            },
        )
        assert r.status_code == 201, r.text
        upload: dict[str, Any] = r.json()
        assert upload["mode"] == "s3" and upload["part_size"] == 16 * MiB
        step, base = upload["part_size"], f"{API}/uploads/{upload['id']}"
        with httpx.Client(timeout=60) as bucket:
            for first in range(1, upload["parts"] + 1, 4):  # URLs four at a time, like upload.js
                numbers = list(range(first, min(first + 4, upload["parts"] + 1)))
                urls = client.post(f"{base}/parts", json={"part_numbers": numbers}).json()["urls"]
                for item in urls:
                    start = (item["part_number"] - 1) * step
                    data = part_bytes(header, block, start, min(start + step, TOTAL))
                    digest.update(data)
                    assert bucket.put(item["url"], content=data).status_code == 200
        assert client.get(f"{base}/parts").json()["received"] == TOTAL
        done = client.post(f"{base}/complete")
        assert done.status_code == 200, done.text
        storage = app.state.storage
        assert isinstance(storage, S3Storage)
        assert storage.size(_key(engine)) == TOTAL
        assert app.state.jobs.drain(timeout=120)
        status = client.get(base).json()
    assert status["status"] == "ready", status
    assert status["duration_seconds"] == pytest.approx(2, abs=0.1)
    # The upload's bytes went to the bucket; the app read only the JSON of the calls above.
    assert counter.read["media"] == 0
    assert 0 < counter.read["json"] < 4096, counter.read
    # Processing (a job: a worker process in production) read the object once for its sha256.
    assert status["sha256"] == digest.hexdigest()
    print(  # shown with `pytest -s`: the figure for the record
        f"uploaded={TOTAL} app_media_bytes={counter.read['media']} "
        f"app_json_bytes={counter.read['json']}"
    )


def _key(engine: Engine) -> str:
    from sqlmodel import Session, select

    from app.catalog.models import Asset

    with Session(engine) as s:
        asset = s.exec(select(Asset)).one()
        return asset.storage_key
