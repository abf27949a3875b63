"""Cookie-free visitor counting: who is counted, once a day, and what is (not) stored."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, select
from sqlmodel import Session

from app.admin.models import Visit, VisitDay, VisitSalt
from app.admin.visits import Hit, VisitRecorder, is_bot, visit_source
from tests.conftest import COURSES, make_user, sign_in

BROWSER = {
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
}
OTHER_BROWSER = {**BROWSER, "user-agent": "Mozilla/5.0 (Macintosh) Gecko/20100101 Firefox/133.0"}


@pytest.fixture
def client(app: FastAPI, engine: Engine) -> Iterator[TestClient]:
    from app.catalog.service import publish_folder

    with Session(engine) as s:
        publish_folder(session=s, storage=app.state.storage, folder=COURSES / "linkedin-playbook")
        s.commit()
    with TestClient(app) as c:
        yield c


def counts(engine: Engine) -> dict[tuple[str, str, str], int]:
    with Session(engine) as s:
        rows = s.execute(select(VisitDay)).scalars()
        found: dict[tuple[str, str, str], int] = {}
        for r in rows:
            key = (r.kind, r.product_slug, r.source)
            found[key] = found.get(key, 0) + r.visitors
        return found


def test_a_person_is_counted_once_a_day(app: FastAPI, client: TestClient, engine: Engine) -> None:
    for _ in range(3):
        assert client.get("/", headers=BROWSER).status_code == 200
    assert client.get("/products/linkedin-playbook", headers=BROWSER).status_code == 200
    app.state.visits.flush()
    assert counts(engine) == {
        ("site", "", ""): 1,
        ("catalog", "", ""): 1,
        ("product", "linkedin-playbook", ""): 1,
    }
    # Another browser: another visitor, though the page now comes from the cache (before routing).
    client.get("/", headers=OTHER_BROWSER)
    app.state.visits.flush()
    assert counts(engine)[("site", "", "")] == 2


def test_not_counted(app: FastAPI, client: TestClient, engine: Engine) -> None:
    client.get(
        "/", headers={**BROWSER, "user-agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"}
    )
    client.get(
        "/", headers={"user-agent": BROWSER["user-agent"], "accept": "*/*"}
    )  # not a page view
    client.get("/", headers={"accept": "text/html", "user-agent": ""})  # no user agent
    client.get("/products/no-such-product", headers=BROWSER)  # 404
    client.get("/library", headers=BROWSER)  # not a catalog page
    client.head("/", headers=BROWSER)
    make_user(engine, "admin@example.com", "admin")
    sign_in(client, engine, "admin@example.com")
    assert client.get("/", headers=BROWSER).status_code == 200  # staff, signed in
    app.state.visits.flush()
    assert counts(engine) == {}


def test_signed_in_buyers_count(app: FastAPI, client: TestClient, engine: Engine) -> None:
    make_user(engine, "buyer@example.com")
    sign_in(client, engine, "buyer@example.com")
    client.get("/", headers=BROWSER)
    app.state.visits.flush()
    assert counts(engine)[("site", "", "")] == 1


def test_sources(app: FastAPI, client: TestClient, engine: Engine) -> None:
    client.get("/?utm_source=LinkedIn&utm_medium=social", headers=BROWSER)
    client.get(
        "/products/linkedin-playbook",
        headers={**OTHER_BROWSER, "referer": "https://www.google.com/search?q=rapport"},
    )
    app.state.visits.flush()
    assert counts(engine) == {
        ("site", "", "linkedin"): 1,
        ("catalog", "", "linkedin"): 1,
        ("site", "", "google.com"): 1,
        ("product", "linkedin-playbook", "google.com"): 1,
    }


def test_source_rules() -> None:
    assert visit_source(b"utm_source=Newsletter", "", "shop.example") == "newsletter"
    assert visit_source(b"", "https://shop.example/products/x", "shop.example") == ""
    assert visit_source(b"", "https://www.linkedin.com/feed/", "shop.example") == "linkedin.com"
    assert visit_source(b"utm_source=", "not a url", "shop.example") == ""
    assert is_bot("curl/8.5.0") and is_bot("") and is_bot("Mozilla/5.0 (compatible; bingbot/2.0)")
    assert not is_bot(BROWSER["user-agent"])


def test_nothing_personal_is_stored_and_the_salt_rotates(engine: Engine) -> None:
    recorder = VisitRecorder(engine)
    day1, day2 = date(2026, 11, 29), date(2026, 11, 30)

    def hit(day: date, ip: str = "203.0.113.7") -> Hit:
        return Hit(day, ip, BROWSER["user-agent"], "catalog", "", "")

    recorder.hit(hit(day1))
    recorder.hit(hit(day1))
    recorder.hit(hit(day1, ip="203.0.113.8"))  # another address: another person
    assert recorder.flush(today=day1) == 4  # two visitors, each a site and a catalog row
    with Session(engine) as s:
        (salt1,) = s.execute(select(VisitSalt.salt)).one()  # type: ignore[call-overload]
        hashes1 = set(s.execute(select(Visit.visitor)).scalars())  # type: ignore[call-overload]
    columns = {c["name"] for c in inspect(engine).get_columns("visit")}
    columns |= {c["name"] for c in inspect(engine).get_columns("visit_day")}
    assert columns == {"day", "visitor", "kind", "product_slug", "source", "visitors"}
    assert not any("203.0.113" in h or "Mozilla" in h for h in hashes1)

    recorder.hit(hit(day2))
    recorder.flush(today=day2)
    with Session(engine) as s:
        salts = list(s.execute(select(VisitSalt)).scalars())
        visits = list(s.execute(select(Visit)).scalars())
    # Yesterday's salt and hashes are gone; today's hash of the same person is a new one.
    assert [x.day for x in salts] == [day2] and salts[0].salt != salt1
    assert {v.day for v in visits} == {day2}
    assert not {v.visitor for v in visits} & hashes1
    # The counters stay.
    assert counts(engine) == {("site", "", ""): 3, ("catalog", "", ""): 3}


def test_two_workers_share_the_salt_and_count_once(engine: Engine) -> None:
    a, b = VisitRecorder(engine), VisitRecorder(engine)
    today = date(2026, 11, 30)
    for recorder in (a, b):
        recorder.hit(Hit(today, "198.51.100.1", BROWSER["user-agent"], "catalog", "", ""))
        recorder.flush(today=today)
    assert counts(engine) == {("site", "", ""): 1, ("catalog", "", ""): 1}
