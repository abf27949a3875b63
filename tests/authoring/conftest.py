"""Authoring fixtures: signed-in clients, JSON calls with the CSRF header, small factories."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx2 as httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from app.catalog.models import Lesson, Module, Product
from app.catalog.service import publish_folder
from app.checkout.models import Entitlement
from tests.conftest import COURSES, csrf_token, make_user, sign_in

DEMO = "trust-at-a-distance"


def call(
    client: TestClient, method: str, url: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    """A JSON API call as the browser's editor makes it (cookie session, X-CSRFToken)."""
    return client.request(
        method,
        url,
        json=body,
        headers={"X-CSRFToken": csrf_token(client), "Accept": "application/json"},
    )


def form(client: TestClient, url: str, data: dict[str, Any]) -> httpx.Response:
    """A form post as the author area's pages send it."""
    return client.post(url, data={**data, "csrftoken": csrf_token(client)}, follow_redirects=False)


@pytest.fixture
def author(app: FastAPI, engine: Engine) -> Iterator[TestClient]:
    make_user(engine, "author@example.com", "author")
    with TestClient(app, raise_server_exceptions=False) as client:
        sign_in(client, engine, "author@example.com")
        yield client


@pytest.fixture
def demo(app: FastAPI, engine: Engine) -> Product:
    """The demo course, published from its folder (three modules, eight lessons)."""
    with Session(engine) as session:
        publish_folder(session=session, storage=app.state.storage, folder=COURSES / DEMO)
        session.commit()
        product = session.exec(select(Product).where(Product.slug == DEMO)).one()
        session.expunge(product)
    return product


def modules_of(engine: Engine, product_id: int) -> list[Module]:
    with Session(engine) as session:
        rows = list(
            session.exec(
                select(Module).where(Module.product_id == product_id).order_by(col(Module.position))
            )
        )
        for row in rows:
            session.expunge(row)
        return rows


def lessons_of(engine: Engine, module_id: int) -> list[Lesson]:
    with Session(engine) as session:
        rows = list(
            session.exec(
                select(Lesson).where(Lesson.module_id == module_id).order_by(col(Lesson.position))
            )
        )
        for row in rows:
            session.expunge(row)
        return rows


def buyer(
    engine: Engine,
    email: str,
    product_id: int,
    *,
    granted_at: datetime | None = None,
    revoked: bool = False,
    **fields: object,
) -> int:
    """A buyer with an entitlement to the product; returns the user id."""
    user_id = make_user(engine, email, "buyer", **fields)
    with Session(engine) as session:
        entitlement = Entitlement(user_id=user_id, product_id=product_id)
        if granted_at is not None:
            entitlement.granted_at = granted_at
        if revoked:
            entitlement.revoked_at = entitlement.granted_at
            entitlement.revoke_reason = "refunded"
        session.add(entitlement)
        session.commit()
    return user_id
