"""Buyers and visitors never reach the author area, and never see what is not published.

Drafts are three things: a draft product, a draft module of a published product, and a
hidden lesson of a published module. None may show on the catalog, the product page, the
library, a lesson page or as a stream URL (the route and the fast path before it).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.accounts.models import User
from app.authoring import pages as authoring_pages
from app.authoring import routes as authoring_routes
from app.catalog.models import Asset, Lesson, Product
from app.checkout.models import Entitlement
from tests.authoring.conftest import DEMO, buyer, call, lessons_of, modules_of
from tests.conftest import make_user, sign_in

BASE = "/api/v1/author"
SECRETS = ("Secret module", "Secret lesson", "Hidden course", "What a first video call can")


@dataclass
class Drafts:
    product_id: int  # the published demo course
    draft_module_id: int
    secret_lesson: Lesson  # a free preview with a video, inside the draft module
    hidden_lesson: Lesson  # hidden, in a published module
    hidden_preview: Lesson  # a hidden free preview
    draft_product_lesson: Lesson  # a free preview video of a draft product


@pytest.fixture
def drafts(author: TestClient, engine: Engine, demo: Product) -> Drafts:
    with Session(engine) as session:
        video = session.exec(select(Asset).where(Asset.content_type == "video/mp4")).first()
        assert video is not None and video.id is not None
    pid = demo.id or 0
    module = call(
        author, "POST", f"{BASE}/products/{pid}/modules", {"title": {"en": "Secret module"}}
    )
    assert module.json()["status"] == "draft"
    secret = call(
        author,
        "POST",
        f"{BASE}/modules/{module.json()['id']}/lessons",
        {"title": {"en": "Secret lesson"}, "kind": "video", "key": "secret-lesson"},
    ).json()
    assert call(
        author,
        "PATCH",
        f"{BASE}/lessons/{secret['id']}",
        {"asset_id": video.id, "is_preview": True},
    ).is_success
    first = modules_of(engine, pid)[0]
    _welcome, limits, checklist = lessons_of(engine, first.id or 0)
    for lesson in (limits, checklist):
        assert call(author, "PATCH", f"{BASE}/lessons/{lesson.id}", {"published": False}).is_success
    hidden = call(
        author,
        "POST",
        f"{BASE}/products",
        {"slug": "hidden-course", "kind": "course", "title": {"en": "Hidden course"}},
    ).json()
    hidden_module = call(
        author, "POST", f"{BASE}/products/{hidden['id']}/modules", {"title": {"en": "Intro"}}
    ).json()
    draft_lesson = call(
        author,
        "POST",
        f"{BASE}/modules/{hidden_module['id']}/lessons",
        {"title": {"en": "Draft talk"}, "kind": "video", "key": "draft-talk"},
    ).json()
    assert call(
        author,
        "PATCH",
        f"{BASE}/lessons/{draft_lesson['id']}",
        {"asset_id": video.id, "is_preview": True},
    ).is_success
    with Session(engine) as session:
        lessons = {
            key: session.exec(select(Lesson).where(Lesson.key == key)).one()
            for key in ("secret-lesson", "first-call-limits", "first-call-checklist", "draft-talk")
        }
        for lesson in lessons.values():
            session.expunge(lesson)
    buyer(engine, "buyer@example.com", pid)
    return Drafts(
        product_id=pid,
        draft_module_id=module.json()["id"],
        secret_lesson=lessons["secret-lesson"],
        hidden_lesson=lessons["first-call-limits"],
        hidden_preview=lessons["first-call-checklist"],
        draft_product_lesson=lessons["draft-talk"],
    )


def _grant_hidden_course(engine: Engine) -> None:
    """The buyer owns the draft product, too (bought before it was unpublished)."""
    with Session(engine) as session:
        user = session.exec(select(User).where(User.email == "buyer@example.com")).one()
        product = session.exec(select(Product).where(Product.slug == "hidden-course")).one()
        session.add(Entitlement(user_id=user.id or 0, product_id=product.id or 0))
        session.commit()


def _clients(app: FastAPI, engine: Engine) -> dict[str, TestClient]:
    anonymous = TestClient(app)
    signed = TestClient(app)
    sign_in(signed, engine, "buyer@example.com")
    return {"anonymous": anonymous, "buyer": signed}


def test_drafts_are_invisible_to_buyers_and_visitors(
    app: FastAPI, engine: Engine, drafts: Drafts
) -> None:
    _grant_hidden_course(engine)
    clients = _clients(app, engine)
    for who, client in clients.items():
        headers = {"Accept-Language": "en"}
        for url in ("/", f"/products/{DEMO}"):
            r = client.get(url, headers=headers)
            assert r.status_code == 200
            for secret in SECRETS:
                assert secret not in r.text, (who, url, secret)
        assert "Welcome: three inquiries" in client.get(f"/products/{DEMO}").text
        assert client.get("/products/hidden-course").status_code == 404
        for lesson in (drafts.secret_lesson, drafts.hidden_lesson, drafts.hidden_preview):
            r = client.get(f"/learn/{DEMO}/{lesson.key}", follow_redirects=False)
            assert r.status_code == 404, (who, lesson.key, r.status_code)
        assert client.get("/learn/hidden-course/draft-talk").status_code == 404
        assert client.get("/learn/hidden-course", follow_redirects=False).status_code == 404
        for lesson in (
            drafts.secret_lesson,
            drafts.hidden_lesson,
            drafts.hidden_preview,
            drafts.draft_product_lesson,
        ):
            for query in ("", "?redirect=1"):
                url = f"/api/v1/lessons/{lesson.id}/stream{query}"
                r = client.get(url, follow_redirects=False)
                # Visitors are asked to sign in (as for any lesson that is not a preview);
                # the buyer hears the same as for a lesson that does not exist.
                expected = 401 if who == "anonymous" else 404
                assert r.status_code == expected, (who, url, r.status_code)
                assert "location" not in r.headers and "url" not in r.text
    library = clients["buyer"].get("/library").text
    assert "Trust at a Distance" in library and "Hidden course" not in library
    lesson_page = clients["buyer"].get(f"/learn/{DEMO}/welcome").text
    for secret in SECRETS:
        assert secret not in lesson_page
    for client in clients.values():
        client.close()


def test_the_author_still_sees_and_plays_drafts(author: TestClient, drafts: Drafts) -> None:
    preview = author.get(f"/author/products/{drafts.product_id}/preview")
    assert preview.status_code == 200
    for secret in ("Secret module", "Secret lesson", "What a first video call can"):
        assert secret in preview.text
    r = author.get(f"/api/v1/lessons/{drafts.draft_product_lesson.id}/stream")
    assert r.status_code == 200 and r.json()["url"]


def _author_routes() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for router in (authoring_pages.router, authoring_routes.router):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            if route.path.startswith(("/author", BASE)):
                found.extend((method, route.path) for method in sorted(route.methods or ()))
    return found


def _fill(path: str, drafts: Drafts) -> str:
    return (
        path.replace("{product_id}", str(drafts.product_id))
        .replace("{module_id}", str(drafts.draft_module_id))
        .replace("{lesson_id}", str(drafts.secret_lesson.id))
    )


def test_every_author_route_refuses_buyers_and_visitors(
    app: FastAPI, engine: Engine, drafts: Drafts
) -> None:
    routes = _author_routes()
    assert len(routes) >= 30
    clients = _clients(app, engine)
    make_user(engine, "admin@example.com", "admin")
    for method, path in routes:
        url = _fill(path, drafts)
        api = path.startswith(BASE)
        for who, client in clients.items():
            headers = {"X-CSRFToken": client.cookies.get("rapport_csrf") or ""}
            if not headers["X-CSRFToken"]:
                client.get("/auth/login")
                headers["X-CSRFToken"] = client.cookies["rapport_csrf"]
            if method == "GET":
                r = client.get(url, follow_redirects=False)
            elif api:
                r = client.request(method, url, json={}, headers=headers, follow_redirects=False)
            else:
                data = {"csrftoken": headers["X-CSRFToken"], "status": "draft"}
                r = client.post(url, data=data, follow_redirects=False)
            if who == "buyer":
                assert r.status_code == 403, (method, path, r.status_code)
            elif api:
                assert r.status_code == 401, (method, path, r.status_code)
            else:
                assert r.status_code == 303, (method, path, r.status_code)
                assert r.headers["location"].startswith("/auth/login?next=")
            for secret in SECRETS:
                assert secret not in r.text
    for client in clients.values():
        client.close()
    # Nothing was changed by all those attempts.
    with Session(engine) as session:
        assert session.exec(select(Product).where(Product.slug == DEMO)).one().status == "published"
    assert [m.status for m in modules_of(engine, drafts.product_id)][-1] == "draft"
