"""Stripe: the only module that talks to the `stripe` library."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import stripe

from app.checkout.providers import (
    CheckoutDetails,
    CheckoutRequest,
    PaymentError,
    PaymentUnavailable,
    RefundInfo,
)
from app.config import Settings

# Stripe's library accepts timestamps from the future; Stripe itself never sends them.
MAX_FUTURE_SKEW = 300


def expected_livemode(secret_key: str | None) -> bool | None:
    """True for a live key, False for a test key, None when the key says neither."""
    prefix = (secret_key or "")[:8]
    if prefix in ("sk_live_", "rk_live_"):
        return True
    if prefix in ("sk_test_", "rk_test_"):
        return False
    return None


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
        status = getattr(exc, "http_status", None) or 500
        return PaymentUnavailable(f"Stripe error: {exc}", server_error=status >= 500)
    return PaymentError(str(exc))


def idempotency_key(kind: str, params: dict[str, Any], attempt: int = 0) -> str:
    """A key that covers exactly the parameters sent: Stripe answers `idempotency_error` when
    other parameters come under a key it has seen, and replays a saved 500 for 24 h."""
    body = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(f"{attempt}:{body}".encode()).hexdigest()[:40]
    return f"{kind}-{digest}"


# Tax ID types Stripe knows, by the prefix a business types (VAT numbers carry their country).
_EU_VAT = set(
    [
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "EL",
        "ES",
        "FI",
        "FR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
        "XI",
    ]
)


def tax_id_type(vat_id: str) -> str | None:
    """Stripe's `tax_id_data[type]` for a VAT ID as typed, or None when we cannot tell."""
    prefix = vat_id[:2].upper()
    if prefix in _EU_VAT:
        return "eu_vat"
    if prefix == "GB":
        return "gb_vat"
    if prefix == "CH":
        return "ch_vat"
    if vat_id.isdigit() and len(vat_id) == 11:
        return "au_abn"
    return None


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

    def _customer(self, request: CheckoutRequest) -> str | None:
        """A Customer carrying the business's name and VAT ID, so Stripe's invoice shows them
        without the buyer typing them twice; None for consumers."""
        if not (request.business and request.company_name):
            return None
        params: dict[str, Any] = {
            "name": request.company_name,
            "preferred_locales": [request.locale],
            "metadata": {"order_number": request.order_number},
        }
        if request.customer_email:
            params["email"] = request.customer_email
        kind = tax_id_type(request.vat_id or "")
        if request.vat_id and kind:
            params["tax_id_data"] = [{"type": kind, "value": request.vat_id}]
        try:
            customer = self.client.v1.customers.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key("customer", params, request.attempt)},
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return str(customer.id)

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
            # The buyer pays in the order's currency: what Stripe charges is what we record.
            "adaptive_pricing": {"enabled": False},
        }
        customer = self._customer(request)
        if customer:
            params["customer"] = customer
        elif request.customer_email:
            params["customer_email"] = request.customer_email
        if self.tax_id_collection:
            params["tax_id_collection"] = {"enabled": True}
            params["billing_address_collection"] = "required"
            if customer:
                # Stripe requires it for an existing customer: what the buyer corrects on
                # the payment page is saved to the customer that the invoice is made for.
                params["customer_update"] = {"name": "auto", "address": "auto"}
        if self.automatic_tax:
            params["automatic_tax"] = {"enabled": True}
            if customer:
                params.setdefault("customer_update", {})["address"] = "auto"
        try:
            session = self.client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key("checkout", params, request.attempt)},
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

    def refund(self, *, payment_intent: str, idempotency_key: str) -> RefundInfo:
        try:
            refund = self.client.v1.refunds.create(
                params={"payment_intent": payment_intent},
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return RefundInfo(str(refund.id), int(refund.amount), str(refund.status or "pending"))


def details_from_session(obj: dict[str, Any]) -> CheckoutDetails:
    """Our view of a Stripe checkout.session object (from the API or an event)."""
    customer = obj.get("customer_details") or {}
    totals = obj.get("total_details") or {}
    metadata = obj.get("metadata") or {}
    if not isinstance(totals, dict):
        totals = {}
    if not isinstance(metadata, dict):
        metadata = {}
    # Adaptive Pricing (off in our sessions, but an account may force it): the buyer saw
    # another currency; what settles, in the order's currency, is under currency_conversion.
    source = obj.get("currency_conversion") or {}
    if not isinstance(source, dict) or not source.get("source_currency"):
        source = {}
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
        currency=str(source.get("source_currency") or obj.get("currency") or "").lower() or None,
        amount_subtotal=_int_or_none(source.get("amount_subtotal", obj.get("amount_subtotal"))),
        amount_total=_int_or_none(source.get("amount_total", obj.get("amount_total"))),
        amount_discount=_int_or_none(totals.get("amount_discount")) or 0,
        amount_tax=_int_or_none(totals.get("amount_tax")) or 0,
        promotion_code=_promotion_code(obj.get("discounts")),
        metadata_order_number=_str_or_none(metadata.get("order_number")),
        metadata_order_id=_str_or_none(metadata.get("order_id")),
        livemode=obj.get("livemode") if isinstance(obj.get("livemode"), bool) else None,
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value[:255] if isinstance(value, str) and value else None


def _promotion_code(discounts: Any) -> str | None:
    """The code (or, unexpanded, the id) of the session's first promotion code or coupon."""
    for discount in discounts if isinstance(discounts, list) else []:
        if not isinstance(discount, dict):
            continue
        for key in ("promotion_code", "coupon"):
            value = discount.get(key)
            if isinstance(value, dict):
                value = value.get("code") or value.get("id")
            if isinstance(value, str) and value:
                return value[:255]
    return None
