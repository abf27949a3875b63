"""Every number of the dashboard against the story worked out by hand (tests/admin/story.py)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from app.admin import service
from app.admin.service import Dashboard, DateRange, FunnelRow
from tests.admin.story import COURSE, EBOOK, FROM, TO, Story

RANGE = service.parse_range(FROM, TO, today=date(2026, 11, 30))


def board(session: Session, locale: str = "en") -> Dashboard:
    return service.dashboard(session, period=RANGE, locale=locale)


def counts(row: FunnelRow) -> tuple[int | None, int, int, int, int]:
    return (row.visitors, row.buyers, row.engaged, row.inquired, row.clients)


def test_the_funnel_counts_and_rates(session: Session, story: Story) -> None:
    b = board(session)
    assert counts(b.total) == (40, 12, 6, 3, 1)
    stages = {s.key: s for s in b.stages}
    assert [s.key for s in b.stages] == ["visitors", "buyers", "engaged", "inquired", "clients"]
    assert stages["visitors"].of_previous is None
    assert stages["buyers"].of_previous == pytest.approx(12 / 40)  # 30 %
    assert stages["engaged"].of_previous == pytest.approx(6 / 12)  # 50 %
    assert stages["inquired"].of_previous == pytest.approx(3 / 6)  # 50 %
    assert stages["clients"].of_previous == pytest.approx(1 / 3)  # 33.3 %
    assert stages["buyers"].of_buyers == 1
    assert stages["engaged"].of_buyers == pytest.approx(0.5)
    assert stages["inquired"].of_buyers == pytest.approx(0.25)
    assert stages["clients"].of_buyers == pytest.approx(1 / 12)
    assert b.total.buy_rate == pytest.approx(0.3)


def test_inquiries_without_a_purchase(session: Session, story: Story) -> None:
    b = board(session)
    assert (b.visitor_inquiries, b.visitor_clients) == (2, 1)


def test_by_product(session: Session, story: Story) -> None:
    rows = {r.key: r for r in board(session).by_product}
    assert set(rows) == {COURSE, EBOOK}
    assert counts(rows[COURSE]) == (28, 7, 4, 2, 1)
    assert counts(rows[EBOOK]) == (18, 5, 2, 1, 0)
    assert rows[COURSE].label == "Trust at a Distance"
    assert {r.key: r.label for r in board(session, "de").by_product}[COURSE] == (
        "Vertrauen auf Distanz"
    )
    assert rows[COURSE].buy_rate == pytest.approx(7 / 28)
    assert rows[EBOOK].client_rate == 0


def test_by_month_of_first_purchase(session: Session, story: Story) -> None:
    rows = board(session).by_cohort
    assert [r.key for r in rows] == ["2026-03", "2026-04"]
    assert counts(rows[0]) == (25, 6, 4, 2, 1)
    assert counts(rows[1]) == (15, 6, 2, 1, 0)


def test_by_source(session: Session, story: Story) -> None:
    rows = {r.key: r for r in board(session).by_source}
    assert set(rows) == {"linkedin", "newsletter.example.com"}
    assert counts(rows["linkedin"]) == (25, 7, 5, 3, 1)
    assert counts(rows["newsletter.example.com"]) == (15, 5, 1, 0, 0)
    assert rows["linkedin"].visitor_inquiries == 1
    assert rows["newsletter.example.com"].visitor_inquiries == 1


def test_by_company(session: Session, story: Story) -> None:
    b = board(session)
    rows = {r.label: r for r in b.by_company}
    assert [r.label for r in b.by_company] == ["Müller & Söhne GmbH", "Beta AG", ""]
    assert counts(rows["Müller & Söhne GmbH"]) == (None, 4, 3, 2, 1)
    assert counts(rows["Beta AG"]) == (None, 3, 3, 1, 0)
    assert counts(rows[""]) == (None, 5, 0, 0, 0)  # buyers without a company
    assert b.companies_total == 2


def test_revenue_per_currency(session: Session, story: Story) -> None:
    revenue = {r.currency: r for r in board(session).revenue}
    assert set(revenue) == {"CHF", "EUR"}
    eur, chf = revenue["EUR"], revenue["CHF"]
    # 7 courses (u1-u7) + 4 e-books (u8, u9, u11, u12) + u1's second + u13's second purchase
    assert (eur.orders, eur.gross, eur.refunded, eur.net) == (13, 133_700, 2_900, 130_800)
    assert (chf.orders, chf.gross, chf.refunded, chf.net) == (1, 3_100, 0, 3_100)


def test_median_days_from_first_purchase(session: Session, story: Story) -> None:
    medians = {m.key: m for m in board(session).medians}
    assert (medians["engaged"].days, medians["engaged"].buyers) == (5.0, 6)
    assert (medians["inquiry"].days, medians["inquiry"].buyers) == (10.0, 3)
    assert (medians["client"].days, medians["client"].buyers) == (20.0, 1)


def test_a_range_without_anything(session: Session, story: Story) -> None:
    empty = service.dashboard(
        session, period=DateRange(date(2025, 1, 1), date(2025, 1, 31)), locale="en"
    )
    assert counts(empty.total) == (0, 0, 0, 0, 0)
    assert [s.of_previous for s in empty.stages] == [None] * 5
    assert empty.by_product == [] and empty.by_company == [] and empty.revenue == []
    assert [m.days for m in empty.medians] == [None, None, None]


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}".*?</table>', html, re.S)
    assert match, element_id
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(0)))


def test_the_page_shows_the_numbers_and_charts_data(admin_client: TestClient, story: Story) -> None:
    r = admin_client.get(f"/admin?from={FROM}&to={TO}")
    assert r.status_code == 200
    html = r.text
    for stage, count in (
        ("visitors", 40),
        ("buyers", 12),
        ("engaged", 6),
        ("inquired", 3),
        ("clients", 1),
    ):
        assert re.search(
            rf'data-stage="{stage}">\s*<span class="kpi-label">[^<]*</span>\s*'
            rf'<span class="kpi-value" data-count="{count}">',
            html,
        ), stage
    funnel = text_of(html, "table-funnel")
    assert "Buyers 12 30.0% 100.0%" in funnel
    assert "Clients 1 33.3% 8.3%" in funnel
    assert "to engagement 5 6" in text_of(html, "table-medians")
    assert "EUR 13 €1,337.00 €29.00 €0.00 €1,308.00" in text_of(html, "table-revenue")
    assert "Trust at a Distance 28 7 25.0% 4 57.1% 2 28.6% 1 14.3%" in text_of(
        html, "table-product"
    )
    assert "No company" in text_of(html, "table-company")
    assert 'data-count="2"' in html  # inquiries without a purchase
    data = json.loads(re.search(r'id="dashboard-data">(.*?)</script>', html, re.S).group(1))  # type: ignore[union-attr]
    assert data["funnel"]["datasets"][0]["data"] == [40, 12, 6, 3, 1]
    assert data["product"]["labels"] == ["Trust at a Distance", "LinkedIn Playbook"]
    assert data["source"]["datasets"][0]["data"] == [7, 5]
    assert "What the numbers count" in html


def test_the_page_in_german(admin_client: TestClient, story: Story) -> None:
    admin_client.cookies.set("lang", "de")
    r = admin_client.get(f"/admin?from={FROM}&to={TO}")
    assert r.status_code == 200
    assert '<html lang="de">' in r.text
    assert "Vom Besucher zum Kunden" in r.text
    assert "Käufer 12 30,0 % 100,0 %" in text_of(r.text, "table-funnel")  # \s+ took the NBSP
    assert "Vertrauen auf Distanz" in r.text


def test_the_default_range_is_the_last_90_days(admin_client: TestClient) -> None:
    r = admin_client.get("/admin")
    assert r.status_code == 200
    today = datetime.now(UTC).date()
    start = today - timedelta(days=89)
    assert f'name="from" type="date" value="{start.isoformat()}"' in r.text
    assert f'name="to" type="date" value="{today.isoformat()}"' in r.text
