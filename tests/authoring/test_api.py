"""The authoring JSON API: products, prices, modules and lessons; bad input changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.accounts import service as accounts
from app.accounts.models import User
from app.catalog.models import Asset, AssetStatus, Product
from tests.authoring.conftest import DEMO, call, lessons_of, modules_of

BASE = "/api/v1/author"
NEW = {"slug": "linkedin-basics", "kind": "course", "title": {"en": "LinkedIn basics"}}


def create(client: TestClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = call(client, "POST", f"{BASE}/products", body or NEW)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def test_a_product_from_draft_to_the_catalog(author: TestClient, client: TestClient) -> None:
    product = create(author)
    assert product["status"] == "draft" and product["prices"] == {}
    pid = product["id"]
    assert "LinkedIn basics" not in client.get("/").text  # fills the anonymous cache

    r = call(
        author,
        "PATCH",
        f"{BASE}/products/{pid}",
        {
            "title": {"en": "LinkedIn basics", "de": "LinkedIn-Grundlagen"},
            "tagline": {"en": "Start well.", "de": ""},
            "description": {"en": "**Bold** start"},
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["tagline"] == {"en": "Start well."}  # an empty translation is dropped
    r = call(author, "PUT", f"{BASE}/products/{pid}/prices", {"prices": {"EUR": 4900, "USD": 5900}})
    assert r.status_code == 200 and r.json()["prices"] == {"EUR": 4900, "USD": 5900}
    r = call(author, "POST", f"{BASE}/products/{pid}/modules", {"title": {"en": "Profile"}})
    assert r.status_code == 201 and r.json()["status"] == "published"  # live with the product
    module_id = r.json()["id"]
    r = call(
        author,
        "POST",
        f"{BASE}/modules/{module_id}/lessons",
        {"title": {"en": "Your photo"}, "kind": "text"},
    )
    assert r.status_code == 201 and r.json()["key"] == "your-photo" and r.json()["published"]
    r = call(
        author, "PATCH", f"{BASE}/lessons/{r.json()['id']}", {"body": {"en": "# Smile", "de": ""}}
    )
    assert r.status_code == 200 and r.json()["body"] == {"en": "# Smile"}

    r = call(author, "POST", f"{BASE}/products/{pid}/publish")
    assert r.status_code == 200 and r.json()["status"] == "published"
    # The cached catalog was replaced at the commit: visitors see the product at once.
    page = client.get("/", headers={"Accept-Language": "en"}).text
    assert "LinkedIn basics" in page and "/products/linkedin-basics" in page
    product_page = client.get("/products/linkedin-basics", headers={"Accept-Language": "de"})
    assert "LinkedIn-Grundlagen" in product_page.text and "Your photo" in product_page.text

    r = call(author, "POST", f"{BASE}/products/{pid}/unpublish")
    assert r.status_code == 200 and r.json()["status"] == "draft"
    assert "LinkedIn basics" not in client.get("/").text
    assert client.get("/products/linkedin-basics").status_code == 404


def test_publishing_needs_a_title_and_a_price(author: TestClient) -> None:
    pid = create(author)["id"]
    r = call(author, "POST", f"{BASE}/products/{pid}/publish")
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {"loc": ["body", "prices"], "msg": "Add at least one price.", "type": "value_error"}
    ]
    assert call(author, "GET", f"{BASE}/products/{pid}").json()["status"] == "draft"


BAD: list[tuple[str, str, dict[str, Any], int]] = [
    ("wrong currency", "PUT prices", {"prices": {"GBP": 100}}, 422),
    ("negative price", "PUT prices", {"prices": {"EUR": -100}}, 422),
    ("zero price", "PUT prices", {"prices": {"EUR": 0}}, 422),
    ("below Stripe's minimum", "PUT prices", {"prices": {"EUR": 49}}, 422),
    ("below Stripe's minimum in USD", "PUT prices", {"prices": {"EUR": 4900, "USD": 10}}, 422),
    ("absurd price", "PUT prices", {"prices": {"EUR": 10**9}}, 422),
    ("price as text", "PUT prices", {"prices": {"EUR": "lots"}}, 422),
    ("duplicate slug", "PATCH", {"slug": DEMO}, 409),
    ("bad slug", "PATCH", {"slug": "Not a slug"}, 422),
    ("oversized title", "PATCH", {"title": {"en": "x" * 201}}, 422),
    ("oversized description", "PATCH", {"description": {"en": "x" * 20_001}}, 422),
    ("unknown language", "PATCH", {"title": {"fr": "Bonjour"}}, 422),
    ("no title left", "PATCH", {"title": {"en": " ", "de": ""}}, 422),
    ("unknown kind", "PATCH", {"kind": "podcast"}, 422),
    ("unknown field", "PATCH", {"status": "published"}, 422),
    ("includes for a course", "PATCH", {"includes": [1]}, 422),
]


@pytest.mark.parametrize(("what", "how", "body", "status"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_and_changes_nothing(
    author: TestClient, demo: Product, what: str, how: str, body: dict[str, Any], status: int
) -> None:
    pid = create(author)["id"]
    call(author, "PUT", f"{BASE}/products/{pid}/prices", {"prices": {"EUR": 4900}})
    before = call(author, "GET", f"{BASE}/products/{pid}").json()
    url = f"{BASE}/products/{pid}" + ("/prices" if how == "PUT prices" else "")
    r = call(author, how.split()[0], url, body)
    assert r.status_code == status, r.text
    assert r.json()["status"] == status and r.json()["detail"]
    assert call(author, "GET", f"{BASE}/products/{pid}").json() == before


def test_a_duplicate_slug_on_create_is_a_conflict(author: TestClient, demo: Product) -> None:
    r = call(author, "POST", f"{BASE}/products", {**NEW, "slug": DEMO})
    assert r.status_code == 409
    assert r.json()["detail"][0]["loc"] == ["body", "slug"]
    assert len(call(author, "GET", f"{BASE}/products").json()) == 1


def test_reordering_modules(author: TestClient, engine: Engine, demo: Product) -> None:
    modules = modules_of(engine, demo.id or 0)
    ids = [m.id for m in modules]
    wanted = [ids[2], ids[0], ids[1]]
    r = call(author, "PUT", f"{BASE}/products/{demo.id}/modules/order", {"ids": wanted})
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["modules"]] == wanted
    # Lesson positions run through the product in the new module order.
    positions = [ls["position"] for m in r.json()["modules"] for ls in m["lessons"]]
    assert positions == list(range(len(positions)))
    assert [m.id for m in modules_of(engine, demo.id or 0)] == wanted


def test_reordering_with_foreign_or_missing_ids_is_refused(
    author: TestClient, engine: Engine, demo: Product
) -> None:
    other = create(author)["id"]
    foreign = call(author, "POST", f"{BASE}/products/{other}/modules", {"title": {"en": "X"}})
    ids = [m.id for m in modules_of(engine, demo.id or 0)]
    for wrong in (
        ids[:2],  # one missing
        [*ids, foreign.json()["id"]],  # one of another product
        [ids[0], ids[0], ids[1], ids[2]],  # twice
        [ids[1], ids[0], 999_999],  # unknown
        [],
    ):
        r = call(author, "PUT", f"{BASE}/products/{demo.id}/modules/order", {"ids": wrong})
        assert r.status_code == 422, (wrong, r.text)
        assert r.json()["detail"][0]["loc"] == ["body", "ids"]
        assert [m.id for m in modules_of(engine, demo.id or 0)] == ids
    r = call(author, "PUT", f"{BASE}/products/{demo.id}/modules/order", {"ids": ["a"]})
    assert r.status_code == 422
    r = call(author, "PUT", f"{BASE}/products/{demo.id}/modules/order", {"ids": [1] * 501})
    assert r.status_code == 422


def test_reordering_lessons(author: TestClient, engine: Engine, demo: Product) -> None:
    first, second, *_ = modules_of(engine, demo.id or 0)
    lessons = [ls.id for ls in lessons_of(engine, first.id or 0)]
    url = f"{BASE}/modules/{first.id}/lessons/order"
    r = call(author, "PUT", url, {"ids": list(reversed(lessons))})
    assert r.status_code == 200, r.text
    assert [ls.id for ls in lessons_of(engine, first.id or 0)] == list(reversed(lessons))
    foreign = lessons_of(engine, second.id or 0)[0].id
    for wrong in (lessons[:-1], [*lessons, foreign], [foreign]):
        assert call(author, "PUT", url, {"ids": wrong}).status_code == 422
        assert [ls.id for ls in lessons_of(engine, first.id or 0)] == list(reversed(lessons))
    assert (
        call(author, "PUT", f"{BASE}/modules/999999/lessons/order", {"ids": []}).status_code == 404
    )


def test_new_content_of_a_published_product_starts_hidden(
    author: TestClient, client: TestClient, demo: Product
) -> None:
    r = call(author, "POST", f"{BASE}/products/{demo.id}/modules", {"title": {"en": "Bonus"}})
    assert r.status_code == 201 and r.json()["status"] == "draft" and r.json()["key"] == "bonus"
    module_id = r.json()["id"]
    lesson = call(
        author,
        "POST",
        f"{BASE}/modules/{module_id}/lessons",
        {"title": {"en": "Bonus talk"}, "kind": "video"},
    ).json()
    assert lesson["published"]  # its module is a draft: the lesson shows once that is released
    assert "Bonus" not in client.get(f"/products/{DEMO}").text
    r = call(author, "POST", f"{BASE}/modules/{module_id}/publish", {"notify": False})
    assert r.status_code == 200 and r.json() == {**r.json(), "notified": False}
    assert "Bonus talk" in client.get(f"/products/{DEMO}").text
    assert call(author, "POST", f"{BASE}/modules/{module_id}/publish").status_code == 409
    # In a module buyers see, a new lesson waits hidden until the author shows it.
    late = call(
        author,
        "POST",
        f"{BASE}/modules/{module_id}/lessons",
        {"title": {"en": "Late addition"}, "kind": "text"},
    ).json()
    assert not late["published"] and late["key"] == "late-addition"
    assert "Late addition" not in client.get(f"/products/{DEMO}").text
    assert call(author, "PATCH", f"{BASE}/lessons/{late['id']}", {"published": True}).is_success
    assert "Late addition" in client.get(f"/products/{DEMO}").text


def test_keys_are_unique_within_a_product(
    author: TestClient, engine: Engine, demo: Product
) -> None:
    module = modules_of(engine, demo.id or 0)[0]
    lesson = lessons_of(engine, module.id or 0)[0]
    r = call(author, "PATCH", f"{BASE}/lessons/{lesson.id}", {"key": "silent-inquiry"})
    assert r.status_code == 409
    r = call(
        author,
        "POST",
        f"{BASE}/modules/{module.id}/lessons",
        {"title": {"en": "Welcome!"}, "kind": "text"},
    )
    assert r.json()["key"] == "welcome-2"  # "welcome" is taken
    r = call(author, "PATCH", f"{BASE}/modules/{module.id}", {"key": "visibility"})
    assert r.status_code == 409


def test_files_and_captions_must_suit_the_lesson(
    author: TestClient, engine: Engine, demo: Product
) -> None:
    with Session(engine) as session:
        assets = {a.content_type: a.id for a in session.exec(select(Asset))}
        broken = Asset(
            storage_key="broken.mp4",
            content_type="video/mp4",
            size=1,
            sha256="0" * 64,
            status=AssetStatus.failed,
        )
        session.add(broken)
        session.commit()
        broken_id = broken.id
    module = modules_of(engine, demo.id or 0)[0]
    video, _second, text = lessons_of(engine, module.id or 0)
    url = f"{BASE}/lessons/{video.id}"
    before = call(author, "GET", f"{BASE}/products/{demo.id}").json()
    for body in (
        {"asset_id": assets["application/pdf"]},  # a PDF for a video lesson
        {"asset_id": broken_id},  # processing failed
        {"asset_id": 999_999},
        {"captions": {"en": assets["video/mp4"]}},  # not WebVTT
        {"captions": {"fr": assets["text/vtt"]}},  # no such language
    ):
        assert call(author, "PATCH", url, body).status_code == 422, body
    r = call(author, "PATCH", f"{BASE}/lessons/{text.id}", {"asset_id": assets["video/mp4"]})
    assert r.status_code == 422  # a text lesson has no file
    assert call(author, "GET", f"{BASE}/products/{demo.id}").json() == before
    r = call(author, "PATCH", f"{BASE}/lessons/{text.id}", {"captions": {"en": assets["text/vtt"]}})
    assert r.status_code == 422
    # Turning the video into an e-book lesson lets go of the video file and its captions.
    r = call(author, "PATCH", url, {"kind": "pdf"})
    assert r.status_code == 200 and r.json()["asset_id"] is None and r.json()["captions"] == {}
    r = call(author, "PATCH", url, {"asset_id": assets["application/pdf"]})
    assert r.status_code == 200 and r.json()["asset_id"] == assets["application/pdf"]


def test_deleting_needs_the_item_out_of_sight(
    author: TestClient, engine: Engine, demo: Product
) -> None:
    module = modules_of(engine, demo.id or 0)[0]
    lesson = lessons_of(engine, module.id or 0)[0]
    assert call(author, "DELETE", f"{BASE}/lessons/{lesson.id}").status_code == 409
    assert call(author, "DELETE", f"{BASE}/modules/{module.id}").status_code == 409
    assert call(author, "PATCH", f"{BASE}/lessons/{lesson.id}", {"published": False}).is_success
    assert call(author, "DELETE", f"{BASE}/lessons/{lesson.id}").status_code == 204
    assert len(lessons_of(engine, module.id or 0)) == 2
    assert call(author, "POST", f"{BASE}/modules/{module.id}/unpublish").status_code == 200
    assert call(author, "DELETE", f"{BASE}/modules/{module.id}").status_code == 204
    product = call(author, "GET", f"{BASE}/products/{demo.id}").json()
    assert len(product["modules"]) == 2
    positions = [ls["position"] for m in product["modules"] for ls in m["lessons"]]
    assert positions == list(range(len(positions)))


def test_a_bundle_includes_other_products(author: TestClient, demo: Product) -> None:
    bundle = create(author, {"slug": "all-in", "kind": "bundle", "title": {"en": "All in"}})
    url = f"{BASE}/products/{bundle['id']}"
    assert call(author, "PATCH", url, {"includes": [bundle["id"]]}).status_code == 422
    assert call(author, "PATCH", url, {"includes": [demo.id, demo.id]}).status_code == 422
    r = call(author, "PATCH", url, {"includes": [demo.id]})
    assert r.status_code == 200 and r.json()["includes"] == [demo.id]
    r = call(author, "PUT", f"{url}/prices", {"prices": {"EUR": 19900}})
    assert call(author, "POST", f"{url}/publish").status_code == 200


def test_a_bearer_token_works_without_a_browser(
    app: FastAPI, engine: Engine, author: TestClient
) -> None:
    with Session(engine) as session:
        user = session.exec(select(User).where(User.email == "author@example.com")).one()
        _token, plain = accounts.create_api_token(session=session, user=user, name="ci")
        session.commit()
    with TestClient(app) as bare:
        headers = {"Authorization": f"Bearer {plain}"}
        r = bare.post(f"{BASE}/products", json=NEW, headers=headers)
        assert r.status_code == 201, r.text
        assert bare.get(f"{BASE}/products", headers=headers).json()[0]["slug"] == NEW["slug"]


def test_unknown_ids_are_not_found(author: TestClient) -> None:
    assert call(author, "GET", f"{BASE}/products/999999").status_code == 404
    assert call(author, "PATCH", f"{BASE}/modules/999999", {"key": "x"}).status_code == 404
    assert call(author, "PATCH", f"{BASE}/lessons/0", {"key": "x"}).status_code == 422
