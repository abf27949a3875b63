"""Payment providers: one interface; Stripe in production, a test-mode provider for `make run`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from app.config import Settings


class PaymentError(Exception):
    """The provider refused the request (a 4xx from it); the message is safe to log."""


class PaymentUnavailable(Exception):
    """The provider cannot be reached or is too slow; the order stays pending.

    `server_error` is set when the provider answered with a 5xx: it saved that answer under
    the idempotency key, so a retry must use another key to get anywhere.
    """

    def __init__(self, message: str, *, server_error: bool = False) -> None:
        super().__init__(message)
        self.server_error = server_error


@dataclass(frozen=True)
class CheckoutRequest:
    order_number: str
    order_id: int
    checkout_key: str
    product_name: str
    amount: int
    currency: str
    success_url: str
    cancel_url: str
    customer_email: str | None
    locale: str
    business: bool
    company_name: str | None = None
    vat_id: str | None = None
    buyer_name: str | None = None
    attempt: int = 0  # bumped after a provider server error: a fresh idempotency key


@dataclass(frozen=True)
class CheckoutDetails:
    """What the provider knows about a checkout session."""

    session_id: str
    status: str  # open | complete | expired
    payment_status: str  # paid | unpaid | no_payment_required
    payment_intent: str | None = None
    order_number: str | None = None
    email: str | None = None
    name: str | None = None
    business_name: str | None = None
    tax_id: str | None = None
    currency: str | None = None  # lower case, as the provider reports it
    amount_subtotal: int | None = None
    amount_total: int | None = None
    amount_discount: int = 0
    amount_tax: int = 0
    promotion_code: str | None = None
    # Our own order reference in the session's metadata (set only through our API key, never
    # from a URL as `client_reference_id` can be).
    metadata_order_number: str | None = None
    metadata_order_id: str | None = None
    livemode: bool | None = None


@dataclass(frozen=True)
class RefundInfo:
    """A refund as the provider answered its creation."""

    refund_id: str
    amount: int
    status: str  # pending | succeeded | failed | canceled | requires_action


class PaymentProvider(Protocol):
    name: str

    def create_checkout(self, request: CheckoutRequest) -> tuple[str, str]:
        """Start a hosted checkout; return (session id, URL to send the buyer to)."""
        ...

    def retrieve(self, session_id: str) -> CheckoutDetails:
        """The current state of a checkout session."""
        ...

    def refund(self, *, payment_intent: str, idempotency_key: str) -> RefundInfo | None:
        """Refund the whole payment; the provider's event then revokes access."""
        ...


class TestModeProvider:
    """No money moves: the buyer confirms on our own page that says TEST MODE."""

    name = "test"

    def create_checkout(self, request: CheckoutRequest) -> tuple[str, str]:
        session_id = f"test_cs_{uuid.uuid5(uuid.NAMESPACE_URL, request.checkout_key).hex}"
        return session_id, f"/checkout/test/{session_id}"

    def retrieve(self, session_id: str) -> CheckoutDetails:
        # Test-mode sessions live in our own database (the order row); see checkout.pages.
        raise PaymentError("test-mode sessions are confirmed on the test page, not retrieved")

    def refund(self, *, payment_intent: str, idempotency_key: str) -> RefundInfo | None:
        return None  # checkout.service revokes directly in test mode


def make_provider(settings: Settings) -> PaymentProvider:
    """Stripe when a secret key is configured, else the test-mode provider."""
    if settings.stripe_secret_key:
        from app.integrations.stripe_api import StripeProvider

        return StripeProvider(settings)
    return TestModeProvider()
