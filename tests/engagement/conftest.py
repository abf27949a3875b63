"""A shop with both demo products published and buyers who own them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.catalog.models import Asset, Lesson, Product
from app.catalog.service import publish_folder
from app.checkout.models import Entitlement
from app.config import Settings
from tests.conftest import COURSES, make_user


@dataclass
class Shop:
    lessons: dict[str, Lesson]
    durations: dict[str, float]
    pages: int
    buyer: int
    other: int


def entitle(engine: Engine, user_id: int, slug: str) -> int:
    """Give the user the product (as a paid order would); returns the entitlement id."""
    with Session(engine) as s:
        product = s.exec(select(Product).where(Product.slug == slug)).one()
        row = Entitlement(user_id=user_id, product_id=product.id)  # type: ignore[arg-type]
        s.add(row)
        s.commit()
        assert row.id is not None
        return row.id


@pytest.fixture
def shop(app: FastAPI, engine: Engine) -> Shop:
    with Session(engine) as s:
        for slug in ("trust-at-a-distance", "linkedin-playbook"):
            publish_folder(session=s, storage=app.state.storage, folder=COURSES / slug)
        s.commit()
        lessons = {lesson.key: lesson for lesson in s.exec(select(Lesson))}
        durations: dict[str, float] = {}
        pages = 0
        for key, lesson in lessons.items():
            asset = s.get(Asset, lesson.asset_id) if lesson.asset_id else None
            if asset and asset.duration_seconds:
                durations[key] = asset.duration_seconds
            if asset and asset.page_count:
                pages = asset.page_count
    buyer = make_user(engine, "a@example.com", name="Anna Becker")
    other = make_user(engine, "b@example.com")
    entitle(engine, buyer, "trust-at-a-distance")
    return Shop(lessons, durations, pages, buyer, other)


def event(kind: str, lesson: Lesson, **fields: Any) -> dict[str, Any]:
    """A client event as the player sends it."""
    return {
        "id": str(uuid.uuid4()),
        "kind": kind,
        "lesson_id": lesson.id,
        "at": datetime.now(UTC).isoformat(),
        **fields,
    }


def score_settings(**changes: object) -> Settings:
    """Settings for the score alone (no database): the defaults but for `changes`."""
    return Settings(
        env="test",
        secret_key="test-secret-key-with-enough-length-0123456789",
        _env_file=None,
        **changes,  # type: ignore[arg-type]
    )
