"""The buyer_funnel rollup: PostgreSQL's triggers keep it equal to a rebuild from the tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select, update
from sqlmodel import Session, col

from app.accounts.models import User
from app.admin import service
from app.admin.models import BuyerFunnel
from app.checkout.models import Order, OrderStatus
from app.engagement.models import BuyerEngagement
from app.inquiries.models import Inquiry, InquiryStatus
from tests.admin.story import BETA, COURSE, EBOOK, Story

POSTGRES = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def utc(value: object) -> object:
    """SQLite hands timestamps back without their zone (UTC)."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


FIELDS = (
    "first_paid_at",
    "product_id",
    "utm_source",
    "referrer",
    "company_id",
    "engaged_at",
    "inquired_at",
    "won_at",
)


def snapshot(engine: Engine) -> dict[int, tuple[object, ...]]:
    with Session(engine) as s:
        rows = s.execute(select(BuyerFunnel)).scalars()
        return {r.user_id: tuple(utc(getattr(r, f)) for f in FIELDS) for r in rows}


def row(engine: Engine, user_id: int) -> BuyerFunnel | None:
    with Session(engine) as s:
        return s.get(BuyerFunnel, user_id)


def at(month: int, day: int) -> datetime:
    return datetime(2026, month, day, 10, tzinfo=UTC)


def test_rebuild_gives_each_buyer_their_first_paid_order(engine: Engine, story: Story) -> None:
    with Session(engine) as s:
        assert service.rebuild_funnel(s) == 16  # u1-u13, u16-u18; u14 never paid
        s.commit()
    rows = snapshot(engine)
    u1 = rows[story.users["u1"]]
    assert u1[:4] == (at(3, 2), story.products[COURSE], "LinkedIn", "")
    assert u1[5:] == (at(3, 6), at(3, 12), at(3, 22))
    assert rows[story.users["u13"]][0] == at(2, 20)  # the earlier of u13's two orders
    assert rows[story.users["u5"]][3] == "https://www.newsletter.example.com/issue-3"
    assert story.users["u14"] not in rows


@POSTGRES
def test_triggers_equal_a_rebuild(engine: Engine, story: Story) -> None:
    kept = snapshot(engine)
    assert len(kept) == 16
    with Session(engine) as s:
        service.rebuild_funnel(s)
        s.commit()
    assert snapshot(engine) == kept


@POSTGRES
def test_triggers_follow_every_change(engine: Engine, story: Story) -> None:
    u14, u3, u6 = story.users["u14"], story.users["u3"], story.users["u6"]
    with Session(engine) as s:
        # A pending order is paid: a new buyer.
        s.execute(
            update(Order).where(Order.user_id == u14).values(status="paid", paid_at=at(4, 4))  # type: ignore[arg-type]
        )
        s.commit()
    paid = row(engine, u14)
    assert paid is not None and utc(paid.first_paid_at) == at(4, 4)

    with Session(engine) as s:
        # A refund keeps the buyer; a backdated earlier purchase becomes the first.
        s.execute(
            update(Order)
            .where(col(Order.user_id) == u3)
            .values(status=OrderStatus.refunded, amount_refunded=100)
        )
        s.add(
            Order(
                number="R-X-1", user_id=u3, product_id=story.products[EBOOK], provider="test",
                status=OrderStatus.paid, amount=2900, currency="EUR", checkout_key="x-1",
                attribution={"utm_source": "xing"}, paid_at=at(2, 1),
            )
        )  # fmt: skip
        # Engagement, an inquiry that is won, a company.
        s.add(BuyerEngagement(user_id=u6, engaged_at=at(4, 9)))
        user = s.get(User, u6)
        assert user is not None
        user.company_id = story.companies[BETA]
        inquiry = Inquiry(
            user_id=u6, name="U6", email="u6@example.com", message="Hello", created_at=at(4, 10)
        )
        s.add(inquiry)
        s.commit()
        inquiry.status = InquiryStatus.won
        inquiry.won_at = at(4, 20)
        s.commit()
    u3_row, u6_row = row(engine, u3), row(engine, u6)
    assert u3_row is not None and u6_row is not None
    assert (u3_row.first_paid_at, u3_row.product_id, u3_row.utm_source) == (
        at(2, 1), story.products[EBOOK], "xing",
    )  # fmt: skip
    assert (u6_row.engaged_at, u6_row.inquired_at, u6_row.won_at) == (
        at(4, 9),
        at(4, 10),
        at(4, 20),
    )
    assert u6_row.company_id == story.companies[BETA]

    kept = snapshot(engine)
    with Session(engine) as s:
        service.rebuild_funnel(s)
        s.commit()
    assert snapshot(engine) == kept

    with Session(engine) as s:
        s.delete(s.get(User, u6))
        s.commit()
    assert row(engine, u6) is None
