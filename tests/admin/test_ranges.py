"""Date ranges: defaults, and a clear 422 for reversed, absurd or malformed ones."""

from __future__ import annotations

from datetime import date

import pytest
from fastapi.testclient import TestClient

from app.admin.service import DateRange, InvalidRange, parse_range

TODAY = date(2026, 11, 30)


def test_defaults_to_the_last_90_days() -> None:
    assert parse_range(None, None, today=TODAY) == DateRange(date(2026, 9, 2), TODAY)
    assert parse_range("", "", today=TODAY).days == 90
    assert parse_range(None, "2026-03-31", today=TODAY) == DateRange(
        date(2026, 1, 1), date(2026, 3, 31)
    )
    assert parse_range("2026-11-01", None, today=TODAY) == DateRange(date(2026, 11, 1), TODAY)
    assert parse_range("2026-03-01", "2026-03-01", today=TODAY).days == 1


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        ("2026-04-01", "2026-03-01", "reversed"),
        ("2010-01-01", "2026-03-01", "too_long"),
        ("1999-12-31", "2000-01-05", "out_of_bounds"),
        ("2026-01-01", "2101-01-01", "out_of_bounds"),
        ("2026-13-01", "2026-03-01", "malformed"),
        ("01.03.2026", "2026-03-31", "malformed"),
        ("2026-3-1", "2026-03-31", "malformed"),
        ("2026-03-01", "yesterday", "malformed"),
        ("20260301", None, "malformed"),
    ],
)
def test_refuses(start: str, end: str | None, reason: str) -> None:
    with pytest.raises(InvalidRange) as caught:
        parse_range(start, end, today=TODAY)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2026-04-01&to=2026-03-01", "The start date (from) is after the end date (to)."),
        ("from=2001-01-01&to=2026-03-01", "A date range may span at most ten years."),
        ("from=1970-01-01&to=1970-02-01", "Dates must lie between the years 2000 and 2100."),
        ("from=31.03.2026", "Dates must be written as YYYY-MM-DD, for example 2026-03-31."),
        ("to=%27%3B--", "Dates must be written as YYYY-MM-DD, for example 2026-03-31."),
    ],
)
def test_a_bad_range_is_a_422_that_says_why(
    admin_client: TestClient, query: str, message: str
) -> None:
    for path in ("/admin", "/admin/exports/funnel.csv", "/admin/leads"):
        r = admin_client.get(f"{path}?{query}")
        assert r.status_code == 422, path
        assert message in r.text, path
        assert r.headers["content-type"].startswith("text/html")


def test_the_message_in_german(admin_client: TestClient) -> None:
    admin_client.cookies.set("lang", "de")
    r = admin_client.get("/admin?from=2026-04-01&to=2026-03-01")
    assert r.status_code == 422
    assert "Das Startdatum (from) liegt nach dem Enddatum (to)." in r.text


def test_an_api_client_gets_json(admin_client: TestClient) -> None:
    r = admin_client.get("/admin/exports/orders.csv?from=x", headers={"accept": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"] == "Dates must be written as YYYY-MM-DD, for example 2026-03-31."
