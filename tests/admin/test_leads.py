"""Warm leads: engaged buyers and companies without an inquiry, by score, with evidence."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlmodel import Session

from app.admin import service
from app.config import Settings
from tests.admin.story import GAMMA, Story

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)  # spring activity is long past: recency 0


def test_buyers_without_an_inquiry_by_score(
    session: Session, settings: Settings, story: Story
) -> None:
    found = service.leads(session, settings=settings, now=NOW)
    ranked = [(b.email, b.score.total) for b in found.buyers]
    assert ranked == [
        ("u17@example.com", 65.0),  # 10/10 lessons (40) + 120 min (25, capped)
        ("u5@example.com", 64.5),  # 8/10 (32) + 60 min (25) + 20 of 40 pages (7.5)
        ("u9@example.com", 55.0),  # 1/1 (40) + 40 pages (15)
        ("u2@example.com", 32.5),  # 5/10 (20) + 30 min (12.5)
        ("u18@example.com", 16.2),  # 3/10 (12) + 10 min (4.2)
    ]
    u5 = found.buyers[1]
    assert (u5.evidence.lessons_completed, u5.evidence.lessons_total) == (8, 10)
    assert (u5.evidence.media_minutes, u5.evidence.pages_read) == (60.0, 20)
    assert u5.evidence.last_active_at == datetime(2026, 4, 29, 10, tzinfo=UTC)
    assert u5.company == "Beta AG"


def test_companies_nobody_of_which_asked(
    session: Session, settings: Settings, story: Story
) -> None:
    found = service.leads(session, settings=settings, now=NOW)
    # Müller (u1, u8) and Beta (u4) have asked; Gamma has two engaged people and no inquiry.
    assert [c.name for c in found.companies] == [GAMMA]
    gamma = found.companies[0]
    assert (gamma.score, gamma.engaged_members) == (65.0, 2)
    assert gamma.emails == ["u17@example.com", "u18@example.com"]
    e = gamma.evidence
    assert (e.lessons_completed, e.lessons_total, e.media_minutes, e.pages_read) == (
        13,
        20,
        130.0,
        0,
    )


def test_recency_counts_when_recent(session: Session, settings: Settings, story: Story) -> None:
    # Fifteen days after the last activity, half of the recency weight (20) is left.
    found = service.leads(session, settings=settings, now=datetime(2026, 5, 14, 10, tzinfo=UTC))
    assert [(b.email, b.score.total) for b in found.buyers][:2] == [
        ("u17@example.com", 75.0),
        ("u5@example.com", 74.5),
    ]


def test_only_those_engaged_in_a_range(session: Session, settings: Settings, story: Story) -> None:
    march = service.parse_range("2026-03-01", "2026-03-31", today=NOW.date())
    found = service.leads(session, settings=settings, now=NOW, engaged=march)
    assert [b.email for b in found.buyers] == ["u5@example.com", "u2@example.com"]
    assert found.companies == []


def test_the_page(admin_client: TestClient, story: Story) -> None:
    r = admin_client.get("/admin/leads")
    assert r.status_code == 200
    html = r.text
    assert (
        html.index("u17@example.com") < html.index("u5@example.com") < html.index("u2@example.com")
    )
    assert "8 of 10 lessons" in html and "60 min watched" in html and "20 pages read" in html
    assert "last active 2026-04-29" in html
    assert 'href="mailto:u5%40example.com?subject=Your%20learning%20with%20Rapport' in html
    assert 'href="mailto:u17%40example.com%2Cu18%40example.com?subject=' in html
    assert f'href="/admin/buyers/{story.users["u5"]}"' in html
    assert 'href="/admin/inquiries"' in html
    assert 'data-members="2"' in html
    assert "u1@example.com" not in html  # asked already


def test_the_page_in_german(admin_client: TestClient, story: Story) -> None:
    admin_client.cookies.set("lang", "de")
    r = admin_client.get("/admin/leads")
    assert "Warme Leads" in r.text and "8 von 10 Lektionen" in r.text
