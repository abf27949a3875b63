"""One buyer's timeline: purchases, learning, engagement, inquiries and their status changes."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlmodel import Session

from app.admin import service
from app.config import Settings
from tests.admin.story import Story

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def test_the_timeline_newest_first(session: Session, settings: Settings, story: Story) -> None:
    view = service.buyer_view(
        session, user_id=story.users["u1"], settings=settings, now=NOW, locale="en"
    )
    assert view is not None
    got = [(e.at.strftime("%m-%d"), e.kind, e.subject) for e in view.timeline]
    assert got == [
        ("04-05", "order_paid", "LinkedIn Playbook"),
        ("03-22", "inquiry_change", f"#{story.inquiries['u1']}"),
        ("03-13", "inquiry_change", f"#{story.inquiries['u1']}"),
        ("03-12", "inquiry", f"#{story.inquiries['u1']}"),
        ("03-06", "engaged", ""),
        ("03-04", "lesson_completed", "Welcome"),
        ("03-03", "lesson_opened", "Welcome"),
        ("03-02", "order_paid", "Trust at a Distance"),
    ]
    won = view.timeline[1]
    assert (won.status_from, won.status_to, won.detail) == ("contacted", "won", "Signed.")
    assert view.company == "Müller & Söhne GmbH"
    assert view.evidence is not None and view.evidence.lessons_completed == 9


def test_a_refund_is_on_the_timeline(session: Session, settings: Settings, story: Story) -> None:
    view = service.buyer_view(
        session, user_id=story.users["u12"], settings=settings, now=NOW, locale="de"
    )
    assert view is not None
    assert [(e.kind, e.subject) for e in view.timeline] == [
        ("order_refunded", "LinkedIn-Playbook"),
        ("order_paid", "LinkedIn-Playbook"),
    ]
    assert view.score is None  # never active


def test_the_page(admin_client: TestClient, story: Story) -> None:
    r = admin_client.get(f"/admin/buyers/{story.users['u1']}")
    assert r.status_code == 200
    kinds = re.findall(r'data-kind="([a-z_]+)"', r.text)
    assert kinds[0] == "order_paid" and kinds[-1] == "order_paid" and len(kinds) == 8
    assert "contacted → won" in r.text
    assert "Müller &amp; Söhne GmbH" in r.text


def test_unknown_buyer_is_404(admin_client: TestClient) -> None:
    assert admin_client.get("/admin/buyers/999999").status_code == 404
    assert admin_client.get("/admin/buyers/not-a-number").status_code == 422
