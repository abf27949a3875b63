"""HLS renditions: cut once at publish, served as playlists whose segments are signed URLs."""

from __future__ import annotations

import re
import shutil
from urllib.parse import parse_qs, urlparse

import httpx2 as httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.catalog.models import Asset, Lesson
from app.catalog.service import publish_folder
from app.checkout.models import Entitlement
from app.config import Settings
from app.main import create_app
from tests.conftest import COURSES, make_user, missing, sign_in

TS_SYNC = 0x47  # every MPEG-TS packet starts with this byte


@pytest.fixture(autouse=True)
def _ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        missing("ffmpeg", "run `sudo apt-get install -y ffmpeg` (make test does this as root)")


def publish(app: FastAPI, engine: Engine) -> dict[str, Lesson]:
    with Session(engine) as s:
        publish_folder(
            session=s,
            storage=app.state.storage,
            folder=COURSES / "trust-at-a-distance",
            renditions=True,
        )
        s.commit()
        return {lesson.key: lesson for lesson in s.exec(select(Lesson))}


def segments(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line and not line.startswith("#")]


def own_course(engine: Engine, email: str, product_id: int) -> None:
    user = make_user(engine, email)
    with Session(engine) as s:
        s.add(Entitlement(user_id=user, product_id=product_id))
        s.commit()


def test_publishing_cuts_a_rendition_once(app: FastAPI, engine: Engine) -> None:
    lessons = publish(app, engine)
    with Session(engine) as s:
        videos = s.exec(select(Asset).where(Asset.content_type == "video/mp4")).all()
        assert videos and all(a.hls_key and a.hls_key.startswith("hls/") for a in videos)
        keys = {a.id: a.hls_key for a in videos}
    publish(app, engine)  # again: the existing renditions are kept
    with Session(engine) as s:
        assert {
            a.id: a.hls_key for a in s.exec(select(Asset).where(Asset.content_type == "video/mp4"))
        } == keys
    assert lessons["welcome"].kind == "video"


def test_buyers_get_a_signed_playlist_and_others_nothing(app: FastAPI, engine: Engine) -> None:
    lessons = publish(app, engine)
    video = lessons["first-call-limits"]  # not a preview
    own_course(engine, "a@example.com", video.product_id)
    make_user(engine, "b@example.com")
    url = "/learn/trust-at-a-distance/first-call-limits/hls.m3u8"
    with TestClient(app) as a, TestClient(app) as b, TestClient(app) as anonymous:
        sign_in(a, engine, "a@example.com")
        page = a.get("/learn/trust-at-a-distance/first-call-limits")
        assert f'data-hls="{url}"' in page.text and "/static/vendor/hls.min.js" in page.text
        r = a.get(url)
        assert r.status_code == 200 and r.headers["cache-control"] == "private, no-store"
        assert r.headers["content-type"].startswith("application/vnd.apple.mpegurl")
        assert r.text.startswith("#EXTM3U") and "#EXT-X-ENDLIST" in r.text
        parts = segments(r.text)
        assert parts and all(p.startswith("/media/") for p in parts)
        first = a.get(parts[0])
        assert first.status_code == 200 and first.content[0] == TS_SYNC
        assert first.headers["content-type"] == "video/mp2t"
        tampered = a.get(parts[0].replace("sig=", "sig=0"))
        assert tampered.status_code == 403
        sign_in(b, engine, "b@example.com")
        assert b.get(url).status_code == 404
        assert anonymous.get(url, follow_redirects=False).status_code == 303
        # a lesson without a rendition (text) has no playlist
        assert a.get("/learn/trust-at-a-distance/first-call-checklist/hls.m3u8").status_code == 404


def test_s3_playlists_carry_presigned_segments(
    settings: Settings, engine: Engine, moto: object, s3_bucket: str
) -> None:
    s3 = settings.model_copy(
        update={
            "storage": "s3",
            "s3_bucket": s3_bucket,
            "s3_endpoint_url": moto.url,  # type: ignore[attr-defined]
            "download_url_ttl": 120,
        }
    )
    app = create_app(s3)
    lessons = publish(app, engine)
    own_course(engine, "a@example.com", lessons["welcome"].product_id)
    with TestClient(app) as a:
        sign_in(a, engine, "a@example.com")
        playlist = a.get("/learn/trust-at-a-distance/linkedin-profile/hls.m3u8")
        assert playlist.status_code == 200
        for part in segments(playlist.text):
            query = parse_qs(urlparse(part).query)
            assert int(query["X-Amz-Expires"][0]) <= 120
            assert re.fullmatch(r"/rapport-test-\w+/hls/[0-9a-f]{32}\.ts", urlparse(part).path)
        got = httpx.get(segments(playlist.text)[0])
        assert got.status_code == 200 and got.content[0] == TS_SYNC
