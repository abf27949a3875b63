"""CSV exports: UTF-8 with a byte order mark, one header row, only the header when empty."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from app.accounts.models import User
from tests.admin.story import FROM, TO, Story

EMPTY = "from=2025-01-01&to=2025-01-31"


def rows_of(body: bytes) -> list[list[str]]:
    assert body.startswith(b"\xef\xbb\xbf"), body[:10]
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))


@pytest.mark.parametrize("name", ["funnel", "leads", "inquiries", "orders"])
def test_an_empty_range_gives_the_header_only(
    admin_client: TestClient, story: Story, name: str
) -> None:
    r = admin_client.get(f"/admin/exports/{name}.csv?{EMPTY}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == (
        f'attachment; filename="rapport-{name}-2025-01-01-2025-01-31.csv"'
    )
    rows = rows_of(r.content)
    assert len(rows) == 1 and rows[0][0]


def test_funnel(admin_client: TestClient, story: Story) -> None:
    rows = rows_of(admin_client.get(f"/admin/exports/funnel.csv?from={FROM}&to={TO}").content)
    header, body = rows[0], rows[1:]
    assert header[:7] == ["split", "group", "visitors", "buyers", "engaged", "inquired", "clients"]
    table = {(r[0], r[1]): r[2:] for r in body}
    assert table["total", "all"][:6] == ["40", "12", "6", "3", "1", "2"]
    assert table["total", "all"][6:] == ["30.0", "50.0", "25.0", "8.3"]
    assert table["product", "Trust at a Distance"][:5] == ["28", "7", "4", "2", "1"]
    assert table["cohort", "2026-04"][:5] == ["15", "6", "2", "1", "0"]
    assert table["source", "newsletter.example.com"][:6] == ["15", "5", "1", "0", "0", "1"]
    assert table["company", "Müller & Söhne GmbH"][:5] == ["", "4", "3", "2", "1"]


def test_leads_orders_and_inquiries(admin_client: TestClient, story: Story) -> None:
    leads = rows_of(
        admin_client.get("/admin/exports/leads.csv?from=2026-01-01&to=2026-04-30").content
    )
    assert [r[2] for r in leads[1:]] == [
        "u17@example.com",
        "u5@example.com",
        "u9@example.com",
        "u2@example.com",
        "u18@example.com",
        "u17@example.com u18@example.com",
    ]
    orders = rows_of(admin_client.get(f"/admin/exports/orders.csv?from={FROM}&to={TO}").content)
    assert orders[0][:4] == ["number", "created_at", "paid_at", "status"]
    # Orders started in the range: 12 first purchases, u1's and u13's second, u14's pending.
    assert len(orders) - 1 == 15
    refunded = [r for r in orders if r[3] == "refunded"]
    columns = {name: i for i, name in enumerate(orders[0])}
    wanted = ["amount", "amount_paid", "amount_refunded", "net", "currency"]
    assert [refunded[0][columns[c]] for c in wanted] == ["29.00", "29.00", "29.00", "0.00", "EUR"]
    inquiries = rows_of(
        admin_client.get(f"/admin/exports/inquiries.csv?from={FROM}&to={TO}").content
    )
    # u1, u4, u8, u13 and the two without a purchase; the one of May 5 is outside.
    assert len(inquiries) - 1 == 6


def test_umlauts_and_formulas(admin_client: TestClient, engine: Engine, story: Story) -> None:
    with Session(engine) as s:
        user = s.get(User, story.users["u5"])
        assert user is not None
        user.name = '=HYPERLINK("http://evil")'
        s.commit()
    body = admin_client.get("/admin/exports/leads.csv").content
    text = body.decode("utf-8-sig")
    assert "'=HYPERLINK" in text  # Excel shows it as text instead of running it
    body = admin_client.get(f"/admin/exports/funnel.csv?from={FROM}&to={TO}").content
    assert "Müller & Söhne GmbH".encode() in body


def test_unknown_export_is_404(admin_client: TestClient) -> None:
    assert admin_client.get("/admin/exports/users.csv").status_code == 404
