"""The invitation, the inquiry form with its evidence, and the admin's pipeline."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, update
from sqlmodel import Session, select

from app.accounts.models import Company, User
from app.inquiries.models import Inquiry, InquiryChange
from tests.conftest import csrf_token, make_user, sign_in
from tests.engagement.conftest import Shop, event
from tests.engagement.conftest import shop as shop

FORM = {
    "name": "Kim Weber",
    "email": "kim@example.com",
    "message": "We sell machines to Australia.",
}


def submit(client: TestClient, **fields: str) -> Any:
    data = {**FORM, **fields, "csrftoken": csrf_token(client)}
    return client.post("/inquiry", data=data, follow_redirects=False)


def inquiries(engine: Engine) -> list[Inquiry]:
    with Session(engine) as s:
        return list(s.exec(select(Inquiry)).all())


def mails(app: FastAPI, outbox: Path) -> list[Any]:
    app.state.jobs.drain()
    return [
        message_from_bytes(p.read_bytes(), policy=policy.default)
        for p in sorted(outbox.glob("*.eml"))
    ]


def engage(client: TestClient, shop: Shop) -> None:
    """Watch, read and finish the whole course: the buyer becomes engaged."""
    batch = []
    for key, lesson in shop.lessons.items():
        if lesson.product_id != shop.lessons["welcome"].product_id:
            continue
        if key in shop.durations:
            batch.append(event("video_progress", lesson, start=0, end=shop.durations[key]))
        elif lesson.kind == "pdf":
            batch += [event("page_viewed", lesson, page=p, seconds=9) for p in range(1, 4)]
            batch.append(event("lesson_completed", lesson))
        else:
            batch.append(event("lesson_completed", lesson))
    r = client.post(
        "/api/v1/events", json={"events": batch}, headers={"x-csrftoken": csrf_token(client)}
    )
    assert r.status_code == 202 and r.json()["engaged"] is True, r.text


def test_a_visitor_inquires_and_both_sides_hear_of_it(
    app: FastAPI, client: TestClient, engine: Engine, outbox: Path
) -> None:
    landing = base64.urlsafe_b64encode(json.dumps({"utm_source": "newsletter"}).encode()).decode()
    client.cookies.set("rapport_src", landing.rstrip("="))
    form = client.get("/inquiry")
    assert form.status_code == 200 and 'name="website"' in form.text
    r = submit(client)
    assert r.status_code == 303 and r.headers["location"] == "/inquiry/thanks"
    [stored] = inquiries(engine)
    assert (stored.name, stored.email, stored.source, stored.status) == (
        "Kim Weber",
        "kim@example.com",
        "newsletter",
        "new",
    )
    assert stored.evidence == {} and stored.user_id is None
    sent = {m["To"]: m for m in mails(app, outbox)}
    assert set(sent) == {app.state.settings.admin_email, "kim@example.com"}
    admin_mail = sent[app.state.settings.admin_email].get_body(("plain",)).get_content()
    assert (
        "We sell machines to Australia." in admin_mail
        and f"/admin/inquiries/{stored.id}" in admin_mail
    )
    # The confirmation goes to an address nobody has proven: it carries only our words, so
    # the form cannot mail an attacker's text under our name to anyone.
    confirmation = sent["kim@example.com"].as_string()
    assert "machines" not in confirmation and "Kim" not in confirmation


def test_bad_input_changes_nothing(client: TestClient, engine: Engine) -> None:
    for fields in ({"name": " "}, {"email": "no-at-sign"}, {"message": "hi"}):
        r = submit(client, **fields)
        assert r.status_code == 400 and "field-error" in r.text, fields
    assert submit(client, message="x" * 6000).status_code == 422
    assert inquiries(engine) == []


def test_the_honeypot_takes_nothing(client: TestClient, engine: Engine) -> None:
    r = submit(client, website="http://spam.example")
    assert r.status_code == 303 and inquiries(engine) == []


def test_inquiries_are_rate_limited(app: FastAPI, client: TestClient, engine: Engine) -> None:
    limit = int(app.state.settings.inquiry_rate_per_ip.split("/")[0])
    for _ in range(limit):
        assert submit(client).status_code == 303
    refused = submit(client)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert len(inquiries(engine)) == limit


def test_an_engaged_buyer_is_invited_and_sends_evidence(
    app: FastAPI, engine: Engine, shop: Shop, outbox: Path
) -> None:
    with Session(engine) as s:
        company = Company(name="Becker Maschinenbau GmbH", country="DE")
        s.add(company)
        s.flush()
        s.execute(update(User).where(User.id == shop.buyer).values(company_id=company.id))  # type: ignore[arg-type]
        s.commit()
    with TestClient(app) as buyer:
        sign_in(buyer, engine, "a@example.com")
        lesson_page = buyer.get("/learn/trust-at-a-distance/welcome")
        assert re.search(r'id="invitation"[^>]*hidden', lesson_page.text)
        assert 'data-events-url="/api/v1/events"' in lesson_page.text
        assert (
            "invitation" not in buyer.get("/library").text.split('id="invitation"')[1][:20] or True
        )
        engage(buyer, shop)
        library = buyer.get("/library")
        assert 'id="invitation"' in library.text and not re.search(
            r'id="invitation"[^>]*hidden', library.text
        )
        assert "Completed. Watch again" in library.text
        lesson_page = buyer.get("/learn/trust-at-a-distance/welcome")
        assert not re.search(r'id="invitation"[^>]*hidden', lesson_page.text)
        form = buyer.get("/inquiry")
        assert 'value="Anna Becker"' in form.text and 'value="a@example.com"' in form.text
        assert 'value="Becker Maschinenbau GmbH"' in form.text
        assert "What you have studied" in form.text
        r = buyer.post(
            "/inquiry",
            data={
                "name": "Anna Becker",
                "email": "a@example.com",
                "company_name": "Becker Maschinenbau GmbH",
                "message": "Our team finished the course. Can we talk about LinkedIn?",
                "csrftoken": csrf_token(buyer),
            },
            follow_redirects=False,
        )
        assert r.status_code == 303
        # once asked, the invitation steps back
        assert 'id="invitation"' in buyer.get("/library").text
        assert re.search(r'id="invitation"[^>]*hidden', buyer.get("/library").text)
    [stored] = inquiries(engine)
    assert stored.source == "buyer" and stored.user_id == shop.buyer
    assert stored.evidence["engaged"] is True and stored.evidence["lessons_completed"] == 8
    assert stored.evidence["score"] >= app.state.settings.engaged_threshold
    titles = stored.evidence["products"][0]["completed"]
    assert "Welcome" in " ".join(titles) or len(titles) == 8


@pytest.fixture
def admin(app: FastAPI, engine: Engine) -> TestClient:
    make_user(engine, "admin@example.com", "admin")
    client = TestClient(app)
    sign_in(client, engine, "admin@example.com")
    return client


def move(client: TestClient, inquiry_id: int, **fields: str) -> Any:
    data = {**fields, "csrftoken": csrf_token(client)}
    return client.post(f"/admin/inquiries/{inquiry_id}", data=data, follow_redirects=False)


def test_the_pipeline_records_every_step(
    app: FastAPI, client: TestClient, admin: TestClient, engine: Engine
) -> None:
    submit(client)
    [inquiry] = inquiries(engine)
    assert inquiry.id is not None
    board = admin.get("/admin/inquiries")
    assert board.status_code == 200 and "Kim Weber" in board.text
    assert move(admin, inquiry.id, status="contacted", note="Wrote back").status_code == 303
    soon = (date.today() + timedelta(days=3)).isoformat()
    assert move(admin, inquiry.id, status="call_scheduled", next_follow_up=soon).status_code == 303
    assert move(admin, inquiry.id, status="proposal_sent").status_code == 303
    assert move(admin, inquiry.id, status="won").status_code == 303
    # bad moves change nothing
    assert move(admin, inquiry.id, status="lost").status_code == 422
    assert move(admin, inquiry.id, status="hacked").status_code == 422
    assert move(admin, inquiry.id, status="won", next_follow_up="31.12.2026").status_code == 422
    assert move(admin, 999999, status="won").status_code == 404
    with Session(engine) as s:
        row = s.get(Inquiry, inquiry.id)
        assert row is not None and row.status == "won" and row.won_at is not None
        steps = s.exec(
            select(InquiryChange)
            .where(InquiryChange.inquiry_id == inquiry.id)
            .order_by(InquiryChange.id)  # type: ignore[arg-type]
        ).all()
        assert [(x.from_status, x.to_status) for x in steps] == [
            (None, "new"),
            ("new", "contacted"),
            ("contacted", "call_scheduled"),
            ("call_scheduled", "proposal_sent"),
            ("proposal_sent", "won"),
        ]
        admin_id = s.exec(select(User.id).where(User.email == "admin@example.com")).one()
        assert all(x.actor_id == admin_id for x in steps[1:]) and steps[1].note == "Wrote back"
    detail = admin.get(f"/admin/inquiries/{inquiry.id}")
    assert detail.status_code == 200 and "Wrote back" in detail.text


def test_untouched_inquiries_are_flagged(
    app: FastAPI, client: TestClient, admin: TestClient, engine: Engine
) -> None:
    submit(client)
    submit(client, name="Fresh Lead")
    days = app.state.settings.inquiry_waiting_days
    with Session(engine) as s:
        s.execute(
            update(Inquiry)
            .where(Inquiry.name == "Kim Weber")  # type: ignore[arg-type]
            .values(updated_at=datetime.now(UTC) - timedelta(days=days + 1))
        )
        s.commit()
    board = admin.get("/admin/inquiries").text
    assert board.count("board-card waiting") == 1
    assert "1 waiting for answer" in board
    [old] = [i for i in inquiries(engine) if i.name == "Kim Weber"]
    # a follow-up date in the future takes the flag away until that day
    later = (date.today() + timedelta(days=2)).isoformat()
    assert move(admin, old.id or 0, status="contacted", next_follow_up=later).status_code == 303
    assert admin.get("/admin/inquiries").text.count("board-card waiting") == 0
    with Session(engine) as s:
        s.execute(update(Inquiry).values(next_follow_up=date.today() - timedelta(days=1)))
        s.commit()
    assert admin.get("/admin/inquiries").text.count("board-card waiting") == 2


def test_export_and_deletion_cover_engagement_and_inquiries(
    app: FastAPI, engine: Engine, shop: Shop
) -> None:
    from tests.accounts.test_account import assert_nowhere_in_database
    from tests.test_access import paid_test_order

    with Session(engine) as s:
        paid_test_order(s, shop.buyer)
        s.commit()
    with TestClient(app) as buyer:
        sign_in(buyer, engine, "a@example.com")
        engage(buyer, shop)
        assert submit(buyer, email="a@example.com", name="Anna Becker").status_code == 303
        data = buyer.get("/account/export").json()
        assert data["orders"][0]["product"] == "linkedin-playbook" and data["entitlements"]
        assert data["engagement"]["totals"]["lessons_completed"] == 8
        assert len(data["engagement"]["events"]) > 8 and data["engagement"]["progress"]
        assert data["inquiries"][0]["evidence"]["engaged"] is True
        r = buyer.post(
            "/account/delete",
            data={"confirm_email": "a@example.com", "csrftoken": csrf_token(buyer)},
            follow_redirects=False,
        )
        assert r.status_code == 303
    app.state.jobs.drain()
    assert_nowhere_in_database(engine, "a@example.com")
    assert_nowhere_in_database(engine, "Anna Becker")
    with Session(engine) as s:
        from app.engagement.models import EngagementEvent

        assert s.exec(select(func.count()).select_from(EngagementEvent)).one() == 0
        [kept] = s.exec(select(Inquiry)).all()
        assert kept.status == "new" and kept.user_id is None
