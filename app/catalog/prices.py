"""What a price may be: the one place that knows the payment provider's minimum charge."""

from __future__ import annotations

# Stripe's minimum charge amounts in minor units ("Minimum and maximum charge amounts" in
# Stripe's docs). A lower price would be refused at checkout, so it is refused when saved.
MINIMUM_CHARGE: dict[str, int] = {"EUR": 50, "USD": 50, "AUD": 50, "CHF": 50, "GBP": 30}


def below_minimum(currency: str, amount: int) -> int | None:
    """The minimum (minor units) that `amount` falls short of, or None when it is chargeable."""
    minimum = MINIMUM_CHARGE.get(currency.upper(), 50)
    return minimum if amount < minimum else None


def minimum_message(currency: str, minimum: int) -> str:
    return (
        f"below the minimum charge of {minimum // 100}.{minimum % 100:02d} {currency.upper()} "
        "that the payment provider accepts"
    )
