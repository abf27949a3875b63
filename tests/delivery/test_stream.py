"""Stream URLs: only buyers (and anyone for a free preview); revocation applies at once."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlmodel import Session, select

from app.catalog.models import Lesson
from app.catalog.service import publish_folder
from app.checkout.models import Entitlement
from app.config import Settings
from app.main import create_app
from tests.conftest import COURSES, make_user, sign_in
from tests.test_access import paid_test_order


def lessons(engine: Engine) -> dict[str, Lesson]:
    with Session(engine) as s:
        return {lesson.key: lesson for lesson in s.exec(select(Lesson))}


@pytest.fixture
def shop(app: FastAPI, engine: Engine) -> dict[str, Lesson]:
    with Session(engine) as s:
        publish_folder(session=s, storage=app.state.storage, folder=COURSES / "linkedin-playbook")
        s.commit()
    buyer = make_user(engine, "a@example.com")
    make_user(engine, "b@example.com")
    with Session(engine) as s:
        paid_test_order(s, buyer)
        s.commit()
    return lessons(engine)


def paid_lesson(found: dict[str, Lesson]) -> Lesson:
    return next(lesson for lesson in found.values() if lesson.kind == "pdf")


def test_buyer_gets_a_url_and_the_bytes(
    app: FastAPI, engine: Engine, shop: dict[str, Lesson]
) -> None:
    lesson = paid_lesson(shop)
    with TestClient(app) as a:
        sign_in(a, engine, "a@example.com")
        r = a.get(f"/api/v1/lessons/{lesson.id}/stream")
        assert r.status_code == 200 and r.headers["cache-control"] == "private, no-store"
        link = r.json()
        assert link["content_type"] == "application/pdf" and link["expires_at"] <= time.time() + 600
        whole = a.get(link["url"])
        assert whole.status_code == 200 and whole.content.startswith(b"%PDF-")
        part = a.get(link["url"], headers={"Range": "bytes=0-4"})
        assert part.status_code == 206 and part.content == b"%PDF-"
        tail = a.get(link["url"], headers={"Range": "bytes=-3"})
        assert tail.status_code == 206 and tail.content == whole.content[-3:]
        for bad in ("bytes=999999999-", "bytes=abc", "bytes=5-2", "items=0-1"):
            answer = a.get(link["url"], headers={"Range": bad})
            assert answer.status_code == 416, (bad, answer.status_code)
        redirect = a.get(f"/api/v1/lessons/{lesson.id}/stream?redirect=1", follow_redirects=False)
        assert redirect.status_code == 302 and redirect.headers["location"].startswith("/media/")


def test_other_buyer_and_strangers_get_nothing(
    app: FastAPI, engine: Engine, shop: dict[str, Lesson]
) -> None:
    lesson = paid_lesson(shop)
    with TestClient(app) as b, TestClient(app) as anonymous:
        sign_in(b, engine, "b@example.com")
        assert b.get(f"/api/v1/lessons/{lesson.id}/stream").status_code == 404
        assert b.get("/api/v1/lessons/999999/stream").status_code == 404
        assert b.get("/api/v1/lessons/0/stream").status_code == 422
        assert b.get("/api/v1/lessons/abc/stream").status_code == 422
        assert anonymous.get(f"/api/v1/lessons/{lesson.id}/stream").status_code == 401
        assert anonymous.get("/api/v1/lessons/999999/stream").status_code == 401  # no hint
        # Buyer A's link does not open anything else: change the key, and the signature fails.
        with TestClient(app) as a:
            sign_in(a, engine, "a@example.com")
            url = a.get(f"/api/v1/lessons/{lesson.id}/stream").json()["url"]
        forged = url.replace("/media/assets/", "/media/assets/0")
        assert b.get(forged).status_code in (403, 404)
        expired = url.replace("exp=", "exp=1")
        assert b.get(expired).status_code == 403


def test_free_previews_play_for_anyone(
    app: FastAPI, engine: Engine, shop: dict[str, Lesson]
) -> None:
    preview = next(lesson for lesson in shop.values() if lesson.is_preview)
    with TestClient(app) as anonymous:
        r = anonymous.get(f"/api/v1/lessons/{preview.id}/stream")
        # The e-book's preview is a text lesson: no media, so 404; a video preview gets a URL.
        assert r.status_code in (200, 404)


def test_revocation_applies_at_once(app: FastAPI, engine: Engine, shop: dict[str, Lesson]) -> None:
    lesson = paid_lesson(shop)
    with TestClient(app) as a:
        sign_in(a, engine, "a@example.com")
        assert a.get(f"/api/v1/lessons/{lesson.id}/stream").status_code == 200
        with Session(engine) as s:
            s.execute(update(Entitlement).values(revoked_at=Entitlement.granted_at))
            s.commit()
        r = a.get(f"/api/v1/lessons/{lesson.id}/stream")
        assert r.status_code == 403 and "ended" in r.json()["detail"]


def test_presigned_s3_urls_expire_within_the_setting(
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
    with Session(engine) as s:
        publish_folder(session=s, storage=app.state.storage, folder=COURSES / "trust-at-a-distance")
        s.commit()
    buyer = make_user(engine, "a@example.com")
    video = next(
        lesson
        for lesson in lessons(engine).values()
        if lesson.kind == "video" and not lesson.is_preview
    )
    with Session(engine) as s:
        from app.checkout.models import Entitlement as E

        s.add(E(user_id=buyer, product_id=video.product_id))
        s.commit()
    with TestClient(app) as a:
        sign_in(a, engine, "a@example.com")
        url = a.get(f"/api/v1/lessons/{video.id}/stream").json()["url"]
        query = parse_qs(urlparse(url).query)
        assert int(query["X-Amz-Expires"][0]) <= 120
        assert query["response-content-disposition"][0] == "inline"
        # Nothing about the buyer in the URL's path: just the bucket and the asset's random key.
        assert re.fullmatch(r"/rapport-test-\w+/assets/[0-9a-f]{32}\.mp4", urlparse(url).path)
        import httpx2 as httpx

        ranged = httpx.get(url, headers={"Range": "bytes=4-11"})
        assert ranged.status_code == 206 and ranged.content[:4] == b"ftyp"


def test_video_lessons_carry_their_captions(app: FastAPI, engine: Engine) -> None:
    with Session(engine) as s:
        publish_folder(session=s, storage=app.state.storage, folder=COURSES / "trust-at-a-distance")
        s.commit()
    with TestClient(app) as visitor:
        page = visitor.get("/learn/trust-at-a-distance/welcome", headers={"Accept-Language": "de"})
        assert page.status_code == 200
        tracks = re.findall(
            r'<track kind="subtitles" srclang="(\w+)" label="[^"]+" src="([^"]+)"( default)?',
            page.text,
        )
        assert {t[0] for t in tracks} == {"de", "en"}
        assert [t[0] for t in tracks if t[2]] == ["de"]  # the visitor's language is on by default
        vtt = visitor.get(next(t[1] for t in tracks if t[0] == "de").replace("&amp;", "&"))
        assert (
            vtt.status_code == 200
            and vtt.text.startswith("WEBVTT")
            and vtt.headers["content-type"].startswith("text/vtt")
        )


def test_the_redirect_fast_path_keeps_every_rule(
    app: FastAPI, engine: Engine, shop: dict[str, Lesson]
) -> None:
    """`?redirect=1` is answered before routing when granted; every refusal is the route's."""
    lesson = paid_lesson(shop)
    path = f"/api/v1/lessons/{lesson.id}/stream?redirect=1"
    with TestClient(app) as a, TestClient(app) as b, TestClient(app) as anonymous:
        sign_in(a, engine, "a@example.com")
        sign_in(b, engine, "b@example.com")
        granted = a.get(path, follow_redirects=False)
        assert (
            granted.status_code == 302 and granted.headers["cache-control"] == "private, no-store"
        )
        assert a.get(granted.headers["location"]).content.startswith(b"%PDF-")
        assert b.get(path, follow_redirects=False).status_code == 404
        assert anonymous.get(path, follow_redirects=False).status_code == 401
        forged = TestClient(app)
        forged.cookies.set("rapport_session", "eyJhdXRoIjogeyJ1aWQiOiAxfX0=.forged.sig")
        assert forged.get(path, follow_redirects=False).status_code == 401
        a.post("/account/sign-out-everywhere", data={"csrftoken": a.cookies["rapport_csrf"]})
        assert a.get(path, follow_redirects=False).status_code == 401  # old cookie, new version
        sign_in(a, engine, "a@example.com")
        with Session(engine) as s:
            s.execute(update(Entitlement).values(revoked_at=Entitlement.granted_at))
            s.commit()
        assert a.get(path, follow_redirects=False).status_code == 403
