"""CSV exports: UTF-8 with a byte order mark, one header row, only the header when empty."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

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


# Text that a spreadsheet would run: at the start of a cell, and after a `,` or `;` inside a
# value, where a reader that splits on the other separator starts a new cell.
HOSTILE = {
    "company": "x;=1+1;",
    "user": 'Kim,+SUM(A1);"@cmd',
    "order": "a;\t-2,-3",
}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _hostile_story(engine: Engine, story: Story) -> None:
    from app.accounts.models import Company
    from app.checkout.models import Order
    from tests.admin.story import GAMMA

    with Session(engine) as s:
        company = s.get(Company, story.companies[GAMMA])
        user = s.get(User, story.users["u5"])
        assert company is not None and user is not None
        company.name = HOSTILE["company"]
        user.name = HOSTILE["user"]
        for order in s.exec(select(Order)):
            order.company_name = HOSTILE["order"]
        s.commit()


def _exports(client: TestClient, ext: str) -> dict[str, bytes]:
    urls = {
        "leads": f"/admin/exports/leads.{ext}",
        "funnel": f"/admin/exports/funnel.{ext}?from={FROM}&to={TO}",
        "orders": f"/admin/exports/orders.{ext}?from={FROM}&to={TO}",
        "inquiries": f"/admin/exports/inquiries.{ext}?from={FROM}&to={TO}",
    }
    found = {}
    for name, url in urls.items():
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:300])
        found[name] = r.content
    return found


def test_no_cell_starts_a_formula_with_either_separator(
    admin_client: TestClient, engine: Engine, story: Story
) -> None:
    _hostile_story(engine, story)
    exports = _exports(admin_client, "csv")
    seen = "".join(body.decode("utf-8-sig") for body in exports.values())
    for value in HOSTILE.values():  # the names are there, neutralised, not dropped
        assert value.split(";")[0].split(",")[0] in seen
    for name, body in exports.items():
        text = body.decode("utf-8-sig")
        for delimiter in (",", ";"):
            for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
                for cell in row:
                    assert not cell.startswith(FORMULA_START), (name, delimiter, cell, row)


def test_xlsx_exports_hold_text_never_formulas(
    admin_client: TestClient, engine: Engine, story: Story
) -> None:
    from openpyxl import load_workbook

    _hostile_story(engine, story)
    with Session(engine) as s:  # control characters are not allowed in xlsx text
        user = s.get(User, story.users["u9"])
        assert user is not None
        user.name = "=Bell\x07 and \x01"
        s.commit()
    r = admin_client.get(f"/admin/exports/orders.xlsx?{EMPTY}")
    assert r.headers["content-type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert r.headers["content-disposition"] == (
        'attachment; filename="rapport-orders-2025-01-01-2025-01-31.xlsx"'
    )
    for name, body in _exports(admin_client, "xlsx").items():
        sheet = load_workbook(io.BytesIO(body)).active
        assert sheet is not None
        rows = list(sheet.iter_rows())
        assert rows, name
        texts = []
        for row in rows:
            for cell in row:
                assert cell.data_type != "f", (name, cell.coordinate, cell.value)
                texts.append(str(cell.value))
        joined = "\n".join(texts)
        if name == "leads":
            assert HOSTILE["user"] in joined and HOSTILE["company"] in joined
            assert "=Bell" in joined
        if name == "orders":
            assert HOSTILE["order"] in joined
    # The same table as the CSV, cell for cell (numbers as numbers).
    csv_rows = rows_of(admin_client.get(f"/admin/exports/funnel.csv?from={FROM}&to={TO}").content)
    book = load_workbook(
        io.BytesIO(admin_client.get(f"/admin/exports/funnel.xlsx?from={FROM}&to={TO}").content)
    ).active
    assert book is not None
    xlsx_rows = [
        ["" if v is None else str(v) for v in row] for row in book.iter_rows(values_only=True)
    ]
    assert xlsx_rows == csv_rows


def test_dashboard_links_both_formats(admin_client: TestClient, story: Story) -> None:
    page = admin_client.get(f"/admin?from={FROM}&to={TO}").text
    for name in ("funnel", "leads", "inquiries", "orders"):
        assert f"/admin/exports/{name}.csv?" in page
        assert f"/admin/exports/{name}.xlsx?" in page
    assert "/admin/exports/leads.xlsx" in admin_client.get("/admin/leads").text
