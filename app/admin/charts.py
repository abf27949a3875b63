"""The dashboard's chart data, handed to dashboard.js as JSON (the CSP forbids inline scripts)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any

from app.admin.service import Dashboard, FunnelRow

Gettext = Callable[[str], str]
COLORS = {
    "visitors": "#9aa9bf",
    "buyers": "#1f3a5f",
    "engaged": "#3f6fa8",
    "inquired": "#d29a3a",
    "clients": "#1f7a4d",
}


def stage_labels(_: Gettext) -> dict[str, str]:
    """The stage names as the page and the charts show them."""
    return {
        "visitors": _("Visitors"),
        "buyers": _("Buyers"),
        "engaged": _("Engaged"),
        "inquired": _("Inquired"),
        "clients": _("Clients"),
    }


def _split(rows: Sequence[FunnelRow], labels: dict[str, str], other: str) -> dict[str, Any]:
    # Visitors outnumber buyers by far: charted, they would flatten every other bar; the
    # table beside the chart has them.
    return {
        "labels": [r.label or other for r in rows],
        "datasets": [
            {
                "label": labels[key],
                "data": [getattr(r, key) for r in rows],
                "color": COLORS[key],
            }
            for key in ("buyers", "engaged", "inquired", "clients")
        ],
    }


def chart_data(board: Dashboard, _: Gettext) -> dict[str, Any]:
    """Labels and series of every chart on the dashboard."""
    labels = stage_labels(_)
    return {
        "funnel": {
            "labels": [labels[s.key] for s in board.stages],
            "datasets": [
                {
                    "label": _("People"),
                    "data": [s.count for s in board.stages],
                    "colors": [COLORS[s.key] for s in board.stages],
                }
            ],
        },
        "product": _split(board.by_product, labels, ""),
        "cohort": _split(board.by_cohort, labels, ""),
        "source": _split(board.by_source, labels, ""),
        "company": _split([r for r in board.by_company if r.key][:10], labels, _("No company")),
    }


def presets(today: date) -> list[tuple[str, str, str]]:
    """Quick ranges: (name, from, to); the names are translated by the template."""
    found = []
    for name, days in (("30", 30), ("90", 90), ("365", 365)):
        found.append((name, (today - timedelta(days=days - 1)).isoformat(), today.isoformat()))
    found.append(("year", date(today.year, 1, 1).isoformat(), today.isoformat()))
    return found
