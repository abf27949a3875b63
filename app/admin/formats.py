"""Numbers, rates and times as the admin pages show them, in the page's language."""

from __future__ import annotations

from datetime import UTC, datetime

from babel import Locale
from babel.numbers import format_decimal, format_percent

from app.web import money


class Formats:
    """Passed to the admin templates as `fmt`."""

    def __init__(self, locale: str) -> None:
        self.locale = locale
        # The language's own percent pattern ("30 %" in German), with one decimal.
        pattern = Locale.parse(locale).percent_formats[None].pattern
        self._percent = pattern.replace("#,##0", "#,##0.0", 1)

    def num(self, value: float | int | None) -> str:
        if value is None:
            return "—"
        return str(format_decimal(value, format="#,##0.#", locale=self.locale))

    def pct(self, value: float | None) -> str:
        """A rate as a percentage with one decimal, or a dash when undefined."""
        if value is None:
            return "—"
        return str(format_percent(value, format=self._percent, locale=self.locale))

    def days(self, value: float | None) -> str:
        return "—" if value is None else self.num(round(value, 1))

    def money(self, amount: int, currency: str) -> str:
        return money(amount, currency, self.locale)

    def when(self, moment: datetime | None) -> str:
        if moment is None:
            return "—"
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")

    def day(self, moment: datetime | None) -> str:
        return "—" if moment is None else self.when(moment)[:10]
