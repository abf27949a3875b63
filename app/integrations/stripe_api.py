"""Stripe: the only module that talks to the `stripe` library."""

from __future__ import annotations

import json
import time
from typing import Any

import stripe

from app.checkout.providers import (
    CheckoutDetails,
    CheckoutRequest,
    PaymentError,
    PaymentUnavailable,
)
from app.config import Settings

# Stripe's library accepts timestamps from the future; Stripe itself never sends them.
MAX_FUTURE_SKEW = 300


class BadWebhook(Exception):
    """A webhook whose payload or signature does not hold."""


def verify_webhook(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """The event, if the signature is Stripe's and fresh (neither too old nor in the future)."""
    if not signature:
        raise BadWebhook("missing Stripe-Signature header")
    try:
        stripe.Webhook.construct_event(payload, signature, secret, tolerance=300)
    except ValueError as exc:
        raise BadWebhook("payload is not valid JSON") from exc
    except stripe.SignatureVerificationError as exc:
        raise BadWebhook("signature does not match") from exc
    stamps = [p[2:] for p in signature.split(",") if p.startswith("t=")]
    if not stamps or not stamps[0].isdigit() or int(stamps[0]) > time.time() + MAX_FUTURE_SKEW:
        raise BadWebhook("timestamp is in the future")
    # The verified bytes as plain JSON: the library's objects turn decimal strings into
    # Decimal, which neither our JSON column nor a replay would expect.
    data = json.loads(payload)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("id"), str)
        or not isinstance(data.get("type"), str)
    ):
        raise BadWebhook("not an event")
    return data


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return PaymentUnavailable(f"Stripe unreachable: {exc}")
    if isinstance(exc, stripe.APIError):
        return PaymentUnavailable(f"Stripe error: {exc}")
    return PaymentError(str(exc))


class StripeProvider:
    """Stripe Checkout in payment mode, with invoices and optional tax-ID collection."""

    name = "stripe"

    def __init__(self, settings: Settings) -> None:
        base: dict[str, str] = {"api": settings.stripe_api_base} if settings.stripe_api_base else {}
        self.client = stripe.StripeClient(
            settings.stripe_secret_key or "",
            base_addresses=base,  # type: ignore[arg-type]
            max_network_retries=1,
            http_client=stripe.RequestsClient(timeout=settings.stripe_timeout),
        )
        self.tax_id_collection = settings.stripe_tax_id_collection
        self.automatic_tax = settings.stripe_automatic_tax

    def create_checkout(self, request: CheckoutRequest) -> tuple[str, str]:
        params: dict[str, Any] = {
            "mode": "payment",
            "client_reference_id": request.order_number,
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.amount,
                        "product_data": {"name": request.product_name},
                    },
                }
            ],
            "metadata": {"order_number": request.order_number, "order_id": str(request.order_id)},
            "payment_intent_data": {"metadata": {"order_number": request.order_number}},
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "allow_promotion_codes": True,
            "invoice_creation": {"enabled": True},
            "locale": request.locale if request.locale in ("de", "en") else "auto",
        }
        if request.customer_email:
            params["customer_email"] = request.customer_email
        if self.tax_id_collection:
            params["tax_id_collection"] = {"enabled": True}
            params["billing_address_collection"] = "required"
        if self.automatic_tax:
            params["automatic_tax"] = {"enabled": True}
        try:
            session = self.client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": f"checkout-{request.checkout_key}"},
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return str(session.id), str(session.url)

    def retrieve(self, session_id: str) -> CheckoutDetails:
        try:
            session = self.client.v1.checkout.sessions.retrieve(session_id)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return details_from_session(session.to_dict())

    def refund(self, *, payment_intent: str, idempotency_key: str) -> None:
        try:
            self.client.v1.refunds.create(
                params={"payment_intent": payment_intent},
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc


def details_from_session(obj: dict[str, Any]) -> CheckoutDetails:
    """Our view of a Stripe checkout.session object (from the API or an event)."""
    customer = obj.get("customer_details") or {}
    tax_ids = customer.get("tax_ids") or []
    intent = obj.get("payment_intent")
    if isinstance(intent, dict):
        intent = intent.get("id")
    return CheckoutDetails(
        session_id=str(obj.get("id", "")),
        status=str(obj.get("status") or ""),
        payment_status=str(obj.get("payment_status") or ""),
        payment_intent=intent if isinstance(intent, str) else None,
        order_number=obj.get("client_reference_id"),
        email=customer.get("email") or obj.get("customer_email"),
        name=customer.get("name"),
        business_name=customer.get("business_name"),
        tax_id=(tax_ids[0] or {}).get("value") if tax_ids else None,
    )
