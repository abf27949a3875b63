"""The stream-URL fast path: it answers granted requests on its own connection, on SQLite and
PostgreSQL alike; revocation is refused at once; it survives its connections being dropped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text, update
from sqlmodel import Session, select

from app.catalog.models import Lesson
from app.catalog.service import publish_folder
from app.checkout.models import Entitlement
from app.delivery import routes
from app.delivery.fastpath import APPLICATION_NAME, PostgresReader, StreamFastPath, open_reader
from app.delivery.service import (
    GRANT_SQL_SQLITE,
    Access,
    GrantRow,
    MediaGrant,
    decide_grant,
    grant_params,
    media_grant,
)
from tests.conftest import COURSES, csrf_token, make_user, sign_in

ONLY_POSTGRES = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@dataclass
class Shop:
    path: str  # the stream URL, ?redirect=1, of a paid video lesson that the buyer owns
    route_calls: list[int]  # lesson ids the route's own grant check was asked about
    lesson_id: int
    product_id: int
    buyer: int


@pytest.fixture
def shop(app: FastAPI, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Shop:
    with Session(engine) as s:
        publish_folder(session=s, storage=app.state.storage, folder=COURSES / "trust-at-a-distance")
        s.commit()
        video = next(
            lesson
            for lesson in s.exec(select(Lesson))
            if lesson.kind == "video" and not lesson.is_preview
        )
        assert video.id is not None
        lesson_id, product_id = video.id, video.product_id
    buyer = make_user(engine, "buyer@example.com")
    with Session(engine) as s:
        s.add(Entitlement(user_id=buyer, product_id=product_id))
        s.commit()
    calls: list[int] = []

    def counted(
        engine: Engine,
        *,
        lesson_id: int,
        user_id: int | None,
        session_version: int | None,
        sid: str | None = None,
    ) -> MediaGrant:
        calls.append(lesson_id)
        return media_grant(
            engine, lesson_id=lesson_id, user_id=user_id, session_version=session_version, sid=sid
        )

    # A 302 that leaves this list alone was answered by the fast path, before routing.
    monkeypatch.setattr(routes, "media_grant", counted)
    path = f"/api/v1/lessons/{lesson_id}/stream?redirect=1"
    return Shop(path, calls, lesson_id, product_id, buyer)


def set_revoked(engine: Engine, revoked: bool) -> None:
    with Session(engine) as s:
        s.execute(
            update(Entitlement).values(revoked_at=Entitlement.granted_at if revoked else None)
        )
        s.commit()


def fast_path_of(app: FastAPI) -> StreamFastPath:
    layer: object = app.middleware_stack
    while not isinstance(layer, StreamFastPath):
        layer = getattr(layer, "app")  # noqa: B009 - every middleware keeps the next in .app
    return layer


def test_the_grant_row_names_the_query_columns_in_order(engine: Engine) -> None:
    """The fast path reads rows by position: GrantRow must follow the query's SELECT list."""
    with engine.connect() as conn:
        result = conn.execute(text(GRANT_SQL_SQLITE), grant_params(1, None))
        assert list(result.keys()) == list(GrantRow._fields)


def test_granted_requests_never_reach_the_route_and_revocation_is_immediate(
    app: FastAPI, engine: Engine, shop: Shop
) -> None:
    with TestClient(app) as buyer:
        sign_in(buyer, engine, "buyer@example.com")
        for _ in range(3):
            granted = buyer.get(shop.path, follow_redirects=False)
            assert granted.status_code == 302
            assert granted.headers["cache-control"] == "private, no-store"
        assert shop.route_calls == []
        media = buyer.get(granted.headers["location"], headers={"Range": "bytes=4-11"})
        assert media.status_code == 206 and media.content[:4] == b"ftyp"

        set_revoked(engine, True)
        # The very next request: the fast path's connection sees the commit (no grant cache,
        # no snapshot left open), refuses, and the route answers the refusal.
        refused = buyer.get(shop.path, follow_redirects=False)
        assert refused.status_code == 403 and "ended" in refused.json()["detail"]
        assert len(shop.route_calls) == 1

        set_revoked(engine, False)
        assert buyer.get(shop.path, follow_redirects=False).status_code == 302
        assert len(shop.route_calls) == 1


def test_refusals_all_come_from_the_route(app: FastAPI, engine: Engine, shop: Shop) -> None:
    make_user(engine, "stranger@example.com")
    with TestClient(app) as stranger, TestClient(app) as anonymous:
        sign_in(stranger, engine, "stranger@example.com")
        assert stranger.get(shop.path, follow_redirects=False).status_code == 404
        assert anonymous.get(shop.path, follow_redirects=False).status_code == 401
        unknown = "/api/v1/lessons/99999/stream?redirect=1"
        assert anonymous.get(unknown, follow_redirects=False).status_code == 401  # no hint
    assert len(shop.route_calls) == 3


def test_without_a_lifespan_the_route_answers(app: FastAPI, engine: Engine, shop: Shop) -> None:
    buyer = TestClient(app)  # no `with`: no startup, so no fast-path connection
    sign_in(buyer, engine, "buyer@example.com")
    assert buyer.get(shop.path, follow_redirects=False).status_code == 302
    assert len(shop.route_calls) == 1


def fast_path_backends(engine: Engine) -> int:
    with engine.connect() as conn:
        count = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = :name"
            ),
            {"name": APPLICATION_NAME},
        ).scalar_one()
    return int(count)


def drop_fast_path_connections(engine: Engine) -> None:
    """What a PostgreSQL restart does to the pool: every connection of it is cut."""
    with engine.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = :name"
            ),
            {"name": APPLICATION_NAME},
        )
    wait_until(lambda: fast_path_backends(engine) == 0)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def buyer(app: FastAPI, engine: Engine, shop: Shop) -> Iterator[TestClient]:
    with TestClient(app) as client:
        sign_in(client, engine, "buyer@example.com")
        yield client


@ONLY_POSTGRES
def test_postgres_pool_recovers_when_its_connections_are_cut(
    app: FastAPI, engine: Engine, shop: Shop, buyer: TestClient
) -> None:
    assert buyer.get(shop.path, follow_redirects=False).status_code == 302
    assert shop.route_calls == [] and fast_path_backends(engine) >= 1

    drop_fast_path_connections(engine)
    # The next request meets a dead connection: it falls through, and the route answers it.
    assert buyer.get(shop.path, follow_redirects=False).status_code == 302
    assert len(shop.route_calls) == 1

    # The pool replaces what it lost, and the fast path answers again by itself.
    def answered_before_routing() -> bool:
        before = len(shop.route_calls)
        assert buyer.get(shop.path, follow_redirects=False).status_code == 302
        return len(shop.route_calls) == before

    wait_until(answered_before_routing)
    assert fast_path_backends(engine) >= 1

    # Revocation still applies at once, through the new connections.
    set_revoked(engine, True)
    assert buyer.get(shop.path, follow_redirects=False).status_code == 403


@ONLY_POSTGRES
def test_postgres_requests_asking_together_each_get_their_own_answer(
    engine: Engine, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests of one turn of the event loop share one query; the answers must not mix."""
    lesson_id, buyer = shop.lesson_id, shop.buyer
    with Session(engine) as s:
        preview = next(lesson.id for lesson in s.exec(select(Lesson)) if lesson.is_preview)
    assert preview is not None
    stranger = make_user(engine, "stranger@example.com")
    refunded = make_user(engine, "refunded@example.com")
    with Session(engine) as s:
        s.add(
            Entitlement(user_id=refunded, product_id=shop.product_id, revoked_at=datetime.now(UTC))
        )
        s.commit()
    asks: list[tuple[int, int | None]] = [
        (lesson_id, buyer),
        (lesson_id, stranger),
        (lesson_id, refunded),
        (lesson_id, None),
        (99999, buyer),
        (preview, None),
        (lesson_id, buyer),
    ]
    batches: list[int] = []
    ask = PostgresReader._ask

    async def counted(self: PostgresReader, batch: list[Any]) -> None:
        batches.append(len(batch))
        await ask(self, batch)

    monkeypatch.setattr(PostgresReader, "_ask", counted)

    async def together() -> list[GrantRow | None]:
        reader = await open_reader(engine)
        assert isinstance(reader, PostgresReader)
        try:
            return list(await asyncio.gather(*(reader.row(lid, uid) for lid, uid in asks)))
        finally:
            await reader.close()

    rows = asyncio.run(together())
    assert batches == [len(asks)]
    answers = [
        decide_grant(row, user_id=uid, session_version=1)
        for row, (_, uid) in zip(rows, asks, strict=True)
    ]
    # The same answers as each asked alone, through the route's query...
    assert answers == [
        media_grant(engine, lesson_id=lid, user_id=uid, session_version=1) for lid, uid in asks
    ]
    # ...and the ones the rules give.
    assert [a.access for a in answers[:5]] == [
        Access.granted,
        Access.not_found,
        Access.revoked,
        Access.sign_in,
        Access.not_found,
    ]


@ONLY_POSTGRES
def test_postgres_pool_is_closed_at_shutdown(app: FastAPI, engine: Engine, shop: Shop) -> None:
    with TestClient(app) as buyer:
        sign_in(buyer, engine, "buyer@example.com")
        assert buyer.get(shop.path, follow_redirects=False).status_code == 302
        assert fast_path_backends(engine) >= 1
        assert len(fast_path_of(app).readers) == 1
    assert fast_path_of(app).readers == {}
    wait_until(lambda: fast_path_backends(engine) == 0)


def test_a_copied_cookie_stops_working_once_its_session_signed_out(
    app: FastAPI, engine: Engine, shop: Shop
) -> None:
    """Sign-out ends the session on the server: the stream fast path and the event fast path
    (both on PostgreSQL here) refuse a copy of the cookie, as the pages do."""
    with TestClient(app) as buyer, TestClient(app) as thief:
        sign_in(buyer, engine, "buyer@example.com")
        thief.cookies.set("rapport_session", buyer.cookies["rapport_session"])
        assert thief.get(shop.path, follow_redirects=False).status_code == 302
        events: dict[str, list[object]] = {"events": []}
        headers = {"x-csrftoken": csrf_token(thief)}
        assert thief.post("/api/v1/events", json=events, headers=headers).status_code == 202
        buyer.post("/auth/logout", data={"csrftoken": csrf_token(buyer)})
        assert thief.get(shop.path, follow_redirects=False).status_code == 401
        assert thief.post("/api/v1/events", json=events, headers=headers).status_code == 401
        assert thief.get("/account", follow_redirects=False).status_code == 303
        # A new sign-in of the same person works as before.
        sign_in(buyer, engine, "buyer@example.com")
        assert buyer.get(shop.path, follow_redirects=False).status_code == 302
