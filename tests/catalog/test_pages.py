"""Catalog and product pages: content, languages, drafts, caching that never goes stale."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.catalog.models import Product, ProductStatus
from app.catalog.service import publish_folder
from tests.conftest import COURSES


def publish(app: FastAPI, engine: Engine, folder: Path) -> None:
    with Session(engine) as session:
        publish_folder(session=session, storage=app.state.storage, folder=folder)
        session.commit()


def test_empty_catalog_says_so(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert "Nothing published yet" in r.text


def test_catalog_lists_published_products(client: TestClient, app: FastAPI, engine: Engine) -> None:
    publish(app, engine, COURSES / "trust-at-a-distance")
    r = client.get("/", headers={"Accept-Language": "en"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Trust at a Distance" in r.text
    assert "/products/trust-at-a-distance" in r.text
    assert "€149.00" in r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-request-id"]


def test_product_page_shows_outline_prices_and_previews(
    client: TestClient, app: FastAPI, engine: Engine
) -> None:
    publish(app, engine, COURSES / "trust-at-a-distance")
    r = client.get("/products/trust-at-a-distance", headers={"Accept-Language": "en"})
    assert r.status_code == 200
    for text in (
        "Why trust is hard at a distance",
        "Welcome: three inquiries, no clients",
        "Free preview",
        "A$249.00",
        "€149.00",
        "$159.00",
    ):
        assert text in r.text, text
    assert r.text.index("Why trust is hard at a distance") < r.text.index("From inquiry to client")


def test_german_from_accept_language_and_switcher(
    client: TestClient, app: FastAPI, engine: Engine
) -> None:
    publish(app, engine, COURSES / "trust-at-a-distance")
    de = client.get(
        "/products/trust-at-a-distance", headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}
    )
    assert 'lang="de"' in de.text and "Vertrauen auf Distanz" in de.text and "149,00" in de.text
    en = client.get("/", headers={"Accept-Language": "en-AU"})
    assert 'lang="en"' in en.text
    switched = client.get("/lang/de?next=/products/trust-at-a-distance", follow_redirects=False)
    assert (
        switched.status_code == 303
        and switched.headers["location"] == "/products/trust-at-a-distance"
    )
    client.cookies.set("lang", "de")
    assert 'lang="de"' in client.get("/", headers={"Accept-Language": "en"}).text


def test_language_switch_never_redirects_off_site(client: TestClient) -> None:
    for target in (
        "https://evil.example/",
        "//evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
    ):
        r = client.get("/lang/en", params={"next": target}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"


def test_drafts_are_invisible(client: TestClient, app: FastAPI, engine: Engine) -> None:
    publish(app, engine, COURSES / "trust-at-a-distance")
    with Session(engine) as session:
        product = session.exec(select(Product)).one()
        product.status = ProductStatus.draft
        session.add(product)
        session.commit()
    client.app.state.page_cache.clear()  # type: ignore[attr-defined]
    assert client.get("/products/trust-at-a-distance").status_code == 404
    assert "Trust at a Distance" not in client.get("/").text


def test_publish_invalidates_cached_pages_at_once(
    client: TestClient, app: FastAPI, engine: Engine, course_copy: Path
) -> None:
    publish(app, engine, course_copy)
    assert "Welcome: three inquiries" in client.get("/products/trust-at-a-distance").text
    assert (
        "Welcome: three inquiries" in client.get("/products/trust-at-a-distance").text
    )  # cached now
    manifest = course_copy / "course.toml"
    manifest.write_text(
        manifest.read_text().replace(
            "Welcome: three inquiries, no clients", "Welcome, freshly renamed"
        )
    )
    manifest.write_text(manifest.read_text().replace("amount = 14900", "amount = 9900"))
    publish(app, engine, course_copy)
    page = client.get("/products/trust-at-a-distance").text
    assert "Welcome, freshly renamed" in page and "€99.00" in page
    assert "€99.00" in client.get("/").text


def test_unknown_product_is_a_404_page_in_the_layout(client: TestClient) -> None:
    for path in (
        "/products/does-not-exist",
        "/products/UPPER",
        "/products/" + "a" * 200,
        "/nowhere",
    ):
        r = client.get(path, headers={"Accept": "text/html"})
        assert r.status_code == 404, path
        assert "Page not found" in r.text and 'class="site-header"' in r.text


def test_api_paths_get_json_errors(client: TestClient) -> None:
    r = client.get("/api/v1/nothing")
    assert r.status_code == 404 and r.json() == {"detail": "Not found", "status": 404}


def test_cached_pages_keep_headers_and_language(
    client: TestClient, app: FastAPI, engine: Engine
) -> None:
    publish(app, engine, COURSES / "trust-at-a-distance")
    first = client.get("/", headers={"Accept-Language": "de"})
    hit = client.get("/", headers={"Accept-Language": "de"})
    assert hit.content == first.content and 'lang="de"' in hit.text
    assert hit.headers["content-type"] == "text/html; charset=utf-8"
    assert hit.headers["x-content-type-options"] == "nosniff" and hit.headers["x-request-id"]
    assert 'lang="en"' in client.get("/", headers={"Accept-Language": "en"}).text
    # Odd cookies or query strings never break a page; they only skip the cache.
    odd = client.get("/", headers={"Cookie": 'lang="de; x=\\"', "Accept-Language": "en"})
    assert odd.status_code == 200
    assert client.get("/?utm_source=newsletter").status_code == 200
    client.cookies.set("rapport_session", "someone")
    assert client.get("/").status_code == 200
