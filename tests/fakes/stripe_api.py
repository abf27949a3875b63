"""A fake of the Stripe HTTP API on loopback, for the official ``stripe`` library.

``FakeStripe`` serves the v1 endpoints Rapport uses (Checkout Sessions, Customers, Refunds,
Payment Intents, Charges, Disputes) from a ``ThreadingHTTPServer`` in a daemon thread, with Stripe's
own object shapes (copied below from the fixtures of Stripe's OpenAPI repository), Stripe's error
bodies and status codes, API-key checking and ``Idempotency-Key`` replay.

It is as strict as Stripe: every request's parameters are checked against the installed library's
own generated parameter types for the endpoint (``tests/fakes/stripe_params.py``: unknown names,
nesting, enums, scalar types), and the fake enforces the rules Stripe documents on top (minimum
charge amounts per currency, ``customer`` xor ``customer_email``, ``customer_update`` for an
existing customer, saved 500s under an idempotency key, …).

Test-side helpers move sessions along (``complete`` — with a promotion code and tax if asked —,
``settle``, ``expire``, ``foreign_session``), money after the fact (``dispute_for``,
``close_dispute``, ``escalate_dispute``, ``fail_refund``) and build the objects a webhook carries
(``charge_for``, ``event``); ``stripe_signature`` signs a webhook body exactly as Stripe does.

Point the library at it with ``stripe.StripeClient(key, base_addresses={"api": fake.url})``.
Besides the API, ``GET /pay/<session id>`` is a tiny hosted checkout page (its form completes the
session and redirects to ``success_url``) and ``GET /receipts/<charge id>`` a receipt page, so a
browser test can follow ``session.url`` and ``charge.receipt_url``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import html
import json
import re
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import stripe
from stripe.params import (
    ChargeRetrieveParams,
    CustomerCreateParams,
    CustomerRetrieveParams,
    DisputeRetrieveParams,
    PaymentIntentRetrieveParams,
    RefundCreateParams,
    RefundRetrieveParams,
)
from stripe.params.checkout import (
    SessionCreateParams,
    SessionExpireParams,
    SessionLineItemListParams,
    SessionRetrieveParams,
)

from tests.fakes.stripe_params import ParamError, validate

__all__ = [
    "API_VERSION",
    "MINIMUM_CHARGE",
    "WEBHOOK_API_VERSION",
    "FakeStripe",
    "RecordedRequest",
    "decode_form",
    "minimum_charge_message",
    "stripe_signature",
]

API_VERSION: Final[str] = stripe.api_version  # the version the installed library pins

# A webhook endpoint keeps the API version it was created with; its events are rendered in that
# version, not in the one the library pins (https://docs.stripe.com/webhooks/versioning).
WEBHOOK_API_VERSION: Final[str] = "2024-06-20"

# Stripe's minimum charge amounts, in minor units of the charge currency ("Minimum and maximum
# charge amounts", https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts).
# HUF counts as a two-decimal currency in the API; JPY is zero-decimal.
MINIMUM_CHARGE: Final[dict[str, int]] = {
    "usd": 50,
    "aed": 200,
    "aud": 50,
    "bgn": 100,
    "brl": 50,
    "cad": 50,
    "chf": 50,
    "czk": 1500,
    "dkk": 250,
    "eur": 50,
    "gbp": 30,
    "hkd": 400,
    "huf": 17500,
    "inr": 50,
    "jpy": 50,
    "mxn": 1000,
    "myr": 200,
    "nok": 300,
    "nzd": 50,
    "pln": 200,
    "ron": 200,
    "sek": 300,
    "sgd": 50,
    "thb": 1000,
}
_ZERO_DECIMAL: Final[frozenset[str]] = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
_SYMBOL_BEFORE: Final[dict[str, str]] = {
    "usd": "$",
    "aud": "$",
    "cad": "$",
    "nzd": "$",
    "sgd": "$",
    "hkd": "$",
    "mxn": "$",
    "brl": "R$",
    "eur": "€",
    "gbp": "£",
    "jpy": "¥",
    "inr": "₹",
}
_SYMBOL_AFTER: Final[dict[str, str]] = {
    "huf": "Ft",
    "czk": "Kč",
    "pln": "zł",
    "sek": "kr",
    "nok": "kr",
    "dkk": "kr.",
}


def minimum_charge_message(currency: str) -> str:
    """Stripe's refusal of a Checkout Session under the minimum, e.g. "The Checkout Session's
    total amount due must add up to at least €0.50 eur" (seen verbatim for usd, eur, gbp, hkd,
    huf)."""
    currency = currency.lower()
    minimum = MINIMUM_CHARGE[currency]
    amount = str(minimum) if currency in _ZERO_DECIMAL else f"{minimum / 100:.2f}"
    if currency in _SYMBOL_BEFORE:
        shown = f"{_SYMBOL_BEFORE[currency]}{amount}"
    elif currency in _SYMBOL_AFTER:
        shown = f"{amount} {_SYMBOL_AFTER[currency]}"
    else:
        shown = amount
    return f"The Checkout Session's total amount due must add up to at least {shown} {currency}"


def stripe_signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header value exactly as Stripe computes it: t=<unix>,v1=<hex HMAC-SHA256 of f"{t}.{payload}" with the secret>."""  # noqa: E501
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode("utf-8"), f"{t}.".encode() + payload, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


# Stripe's example objects (stripe/openapi fixtures3.json), the base of what the fake returns.
_SESSION: Final[dict[str, Any]] = {
    "adaptive_pricing": {"enabled": True},
    "after_expiration": {
        "recovery": {
            "allow_promotion_codes": True,
            "enabled": True,
            "expires_at": None,
            "url": None,
        }
    },
    "allow_promotion_codes": None,
    "amount_subtotal": None,
    "amount_total": None,
    "automatic_tax": {
        "enabled": False,
        "liability": {"type": "account"},
        "provider": None,
        "status": None,
    },
    "billing_address_collection": None,
    "cancel_url": "https://example.com/cancel",
    "client_reference_id": None,
    "client_secret": None,
    "collected_information": {
        "business_name": None,
        "individual_name": None,
        "shipping_details": {
            "address": {
                "city": None,
                "country": None,
                "line1": None,
                "line2": None,
                "postal_code": None,
                "state": None,
            },
            "name": "name",
        },
    },
    "consent": {"promotions": None, "terms_of_service": None},
    "consent_collection": {
        "payment_method_reuse_agreement": {"position": "hidden"},
        "promotions": None,
        "terms_of_service": None,
    },
    "created": 1234567890,
    "currency": None,
    "currency_conversion": {
        "amount_subtotal": 1555417355,
        "amount_total": 1117121693,
        "fx_rate": "291452898",
        "source_currency": "usd",
    },
    "custom_fields": [],
    "custom_text": {
        "after_submit": {"message": "message"},
        "shipping_address": {"message": "message"},
        "submit": {"message": "message"},
        "terms_of_service_acceptance": {"message": "message"},
    },
    "customer": None,
    "customer_account": None,
    "customer_creation": None,
    "customer_details": {
        "address": {
            "city": None,
            "country": None,
            "line1": None,
            "line2": None,
            "postal_code": None,
            "state": None,
        },
        "business_name": None,
        "email": "example@example.com",
        "individual_name": None,
        "name": None,
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": None,
    },
    "customer_email": None,
    "discounts": None,
    "expires_at": 1234567890,
    "id": "cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY",
    "integration_identifier": None,
    "invoice": None,
    "invoice_creation": {
        "enabled": True,
        "invoice_data": {
            "account_tax_ids": None,
            "custom_fields": None,
            "description": None,
            "footer": None,
            "issuer": {"type": "account"},
            "metadata": None,
            "rendering_options": {"amount_tax_display": None, "template": None},
        },
    },
    "livemode": False,
    "locale": None,
    "managed_payments": {"enabled": True},
    "metadata": {},
    "mode": "payment",
    "object": "checkout.session",
    "origin_context": None,
    "payment_intent": "pi_1PgafyB7WZ01zgkWSjxsAJo3",
    "payment_link": None,
    "payment_method_collection": None,
    "payment_method_configuration_details": {"id": "obj_123", "parent": None},
    "payment_method_options": {},
    "payment_method_types": ["card"],
    "payment_status": "unpaid",
    "permissions": {"update_shipping_details": None},
    "phone_number_collection": {"enabled": False},
    "recovered_from": None,
    "saved_payment_method_options": {
        "allow_redisplay_filters": None,
        "payment_method_remove": None,
        "payment_method_save": None,
    },
    "setup_intent": None,
    "shipping_address_collection": {"allowed_countries": ["SC"]},
    "shipping_cost": {
        "amount_subtotal": 1555417355,
        "amount_tax": 1424534716,
        "amount_total": 1117121693,
        "shipping_rate": None,
    },
    "shipping_options": [],
    "status": "open",
    "submit_type": None,
    "subscription": None,
    "success_url": "https://example.com/success",
    "total_details": {
        "amount_discount": 406046392,
        "amount_shipping": None,
        "amount_tax": 1424534716,
    },
    "ui_mode": None,
    "url": "https://checkout.stripe.com/pay/c/cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY",
    "wallet_options": {},
}

_CHARGE: Final[dict[str, Any]] = {
    "amount": 100,
    "amount_captured": 0,
    "amount_refunded": 0,
    "application": None,
    "application_fee": None,
    "application_fee_amount": None,
    "balance_transaction": "txn_1PgaxNB7WZ01zgkWEV3TLf40",
    "billing_details": {
        "address": {
            "city": None,
            "country": None,
            "line1": None,
            "line2": None,
            "postal_code": None,
            "state": None,
        },
        "email": None,
        "name": "Jenny Rosen",
        "phone": None,
        "tax_id": None,
    },
    "calculated_statement_descriptor": None,
    "captured": False,
    "created": 1234567890,
    "currency": "usd",
    "customer": None,
    "description": "My First Test Charge (created for API docs)",
    "disputed": False,
    "failure_balance_transaction": None,
    "failure_code": None,
    "failure_message": None,
    "fraud_details": {},
    "id": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
    "livemode": False,
    "metadata": {},
    "object": "charge",
    "on_behalf_of": None,
    "outcome": {
        "advice_code": None,
        "network_advice_code": None,
        "network_decline_code": None,
        "network_status": None,
        "reason": None,
        "seller_message": None,
        "type": "type",
    },
    "paid": True,
    "payment_intent": None,
    "payment_method": "card_1PgaftB7WZ01zgkWm3waTcFp",
    "payment_method_details": {
        "card": {
            "amount_authorized": None,
            "authorization_code": None,
            "brand": "visa",
            "checks": {
                "address_line1_check": None,
                "address_postal_code_check": None,
                "cvc_check": "pass",
            },
            "country": "US",
            "exp_month": 8,
            "exp_year": 2030,
            "extended_authorization": {"status": "disabled"},
            "fingerprint": "AOB934RVNwzk6xtn",
            "funding": "credit",
            "incremental_authorization": {"status": "unavailable"},
            "installments": {"plan": {"count": None, "interval": None, "type": "fixed_count"}},
            "last4": "4242",
            "mandate": None,
            "multicapture": {"status": "unavailable"},
            "network": "visa",
            "network_token": {"used": False},
            "network_transaction_id": None,
            "overcapture": {"maximum_amount_capturable": 100, "status": "unavailable"},
            "regulated_status": None,
            "three_d_secure": {
                "authentication_flow": None,
                "electronic_commerce_indicator": None,
                "exemption_indicator": None,
                "result": None,
                "result_reason": None,
                "transaction_id": None,
                "version": None,
            },
            "transaction_link_id": None,
            "wallet": {"dynamic_last4": None, "type": "link"},
        },
        "type": "card",
    },
    "receipt_email": None,
    "receipt_number": None,
    "receipt_url": "https://sangeekp-15t6ai--manage-mydev.dev.stripe.me/receipts/payment/CAcaFwoVYWNjdF8xUGdhZlRCN1daMDF6Z2tXKI_ei7UGMgZv2S_KfiY6LCJrxC7awazgQA9I88krZKw5uuCkZ5Nup2tomEtAbSpdfzjVZHO3ZYP5KFZP",
    "refunded": False,
    "refunds": {
        "data": [],
        "has_more": False,
        "object": "list",
        "url": "/v1/charges/ch_1PgafuB7WZ01zgkWXYmPNZs8/refunds",
    },
    "review": None,
    "shipping": {},
    "source": {
        "allow_redisplay": None,
        "amount": None,
        "client_secret": "client_secret",
        "created": 1028554472,
        "currency": None,
        "flow": "flow",
        "id": "obj_123",
        "livemode": True,
        "metadata": None,
        "object": "source",
        "owner": {
            "address": {
                "city": None,
                "country": None,
                "line1": None,
                "line2": None,
                "postal_code": None,
                "state": None,
            },
            "email": None,
            "name": None,
            "phone": None,
            "verified_address": {
                "city": None,
                "country": None,
                "line1": None,
                "line2": None,
                "postal_code": None,
                "state": None,
            },
            "verified_email": None,
            "verified_name": None,
            "verified_phone": None,
        },
        "statement_descriptor": None,
        "status": "status",
        "type": "ach_credit_transfer",
        "usage": None,
    },
    "source_transfer": None,
    "statement_descriptor": None,
    "statement_descriptor_suffix": None,
    "status": "succeeded",
    "transfer_data": {"amount": None, "destination": {"id": "obj_123", "object": "account"}},
    "transfer_group": None,
}

_DISPUTE: Final[dict[str, Any]] = {
    "amount": 1000,
    "balance_transactions": [],
    "charge": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
    "created": 1234567890,
    "currency": "usd",
    "enhanced_eligibility_types": ["visa_compelling_evidence_3"],
    "evidence": {
        "access_activity_log": None,
        "billing_address": None,
        "cancellation_policy": None,
        "cancellation_policy_disclosure": None,
        "cancellation_rebuttal": None,
        "customer_communication": None,
        "customer_email_address": None,
        "customer_name": None,
        "customer_purchase_ip": None,
        "customer_signature": None,
        "duplicate_charge_documentation": None,
        "duplicate_charge_explanation": None,
        "duplicate_charge_id": None,
        "enhanced_evidence": {},
        "product_description": None,
        "receipt": None,
        "refund_policy": None,
        "refund_policy_disclosure": None,
        "refund_refusal_explanation": None,
        "service_date": None,
        "service_documentation": None,
        "shipping_address": None,
        "shipping_carrier": None,
        "shipping_date": None,
        "shipping_documentation": None,
        "shipping_tracking_number": None,
        "uncategorized_file": None,
        "uncategorized_text": None,
    },
    "evidence_details": {
        "due_by": 1723679999,
        "enhanced_eligibility": {},
        "has_evidence": False,
        "past_due": False,
        "submission_count": 0,
    },
    "id": "dp_1Pgc71B7WZ01zgkWMevJiAUx",
    "is_charge_refundable": True,
    "livemode": False,
    "metadata": {},
    "object": "dispute",
    "payment_intent": None,
    "payment_method_details": {
        "card": {
            "brand": "visa",
            "case_type": "inquiry",
            "network": "visa",
            "network_reason_code": "10.4",
        },
        "type": "card",
    },
    "reason": "general",
    "status": "warning_needs_response",
}

_REFUND: Final[dict[str, Any]] = {
    "amount": 100,
    "balance_transaction": None,
    "charge": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
    "created": 1234567890,
    "currency": "usd",
    "customer": None,
    "customer_account": None,
    "destination_details": {"card": {"type": "reversal"}, "type": "card"},
    "id": "re_1Pgc72B7WZ01zgkWqPvrRrPE",
    "metadata": {},
    "object": "refund",
    "payment_intent": None,
    "payment_method": None,
    "reason": None,
    "receipt_number": None,
    "source_transfer_reversal": None,
    "status": "succeeded",
    "transfer_reversal": None,
}

_CUSTOMER: Final[dict[str, Any]] = {
    "address": {
        "city": None,
        "country": None,
        "line1": None,
        "line2": None,
        "postal_code": None,
        "state": None,
    },
    "balance": 0,
    "created": 1234567890,
    "currency": "usd",
    "default_source": None,
    "delinquent": False,
    "description": None,
    "discount": {
        "checkout_session": None,
        "customer": None,
        "customer_account": None,
        "end": None,
        "id": "obj_123",
        "invoice": None,
        "invoice_item": None,
        "object": "discount",
        "promotion_code": None,
        "source": {"coupon": None, "type": "coupon"},
        "start": 109757538,
        "subscription": None,
        "subscription_item": None,
    },
    "email": None,
    "id": "cus_QXg1o8vcGmoR32",
    "invoice_prefix": "7FE1103",
    "invoice_settings": {
        "custom_fields": None,
        "default_payment_method": None,
        "footer": None,
        "rendering_options": {"amount_tax_display": None, "template": None},
    },
    "livemode": False,
    "metadata": {},
    "name": None,
    "next_invoice_sequence": 1,
    "object": "customer",
    "phone": None,
    "preferred_locales": [],
    "shipping": {},
    "tax_exempt": "none",
    "test_clock": None,
}

_PAYMENT_INTENT: Final[dict[str, Any]] = {
    "amount": 1099,
    "amount_capturable": 0,
    "amount_details": {"tip": {}},
    "amount_received": 0,
    "application": None,
    "application_fee_amount": None,
    "automatic_payment_methods": {"enabled": True},
    "canceled_at": 1234567890,
    "cancellation_reason": None,
    "capture_method": "automatic",
    "client_secret": "pi_1PgafyB7WZ01zgkWSjxsAJo3_secret_Dm43xiq1k0ywrRRjDoi8y1gkM",
    "confirmation_method": "automatic",
    "created": 1234567890,
    "currency": "usd",
    "customer": None,
    "customer_account": None,
    "description": None,
    "excluded_payment_method_types": None,
    "id": "pi_1PgafyB7WZ01zgkWSjxsAJo3",
    "last_payment_error": {"type": "idempotency_error"},
    "latest_charge": None,
    "livemode": False,
    "managed_payments": {"enabled": True},
    "metadata": {},
    "next_action": {"type": "type"},
    "object": "payment_intent",
    "on_behalf_of": None,
    "payment_method": None,
    "payment_method_configuration_details": {"id": "obj_123", "parent": None},
    "payment_method_options": {},
    "payment_method_types": ["card"],
    "processing": {"type": "card"},
    "receipt_email": None,
    "review": None,
    "setup_future_usage": None,
    "shipping": {},
    "source": None,
    "statement_descriptor": None,
    "statement_descriptor_suffix": None,
    "status": "requires_payment_method",
    "transfer_data": {"destination": {"id": "obj_123", "object": "account"}},
    "transfer_group": None,
}

_EVENT: Final[dict[str, Any]] = {
    "api_version": None,
    "created": 1234567890,
    "data": {
        "object": {
            "active": True,
            "aggregate_usage": None,
            "amount": 2000,
            "amount_decimal": "2000",
            "billing_scheme": "per_unit",
            "created": 1721948530,
            "currency": "usd",
            "id": "price_1PgafmB7WZ01zgkW6dKueIc5",
            "interval": "month",
            "interval_count": 1,
            "livemode": False,
            "metadata": {},
            "meter": None,
            "nickname": None,
            "object": "plan",
            "product": "prod_QXg1hqf4jFNsqG",
            "tiers_mode": None,
            "transform_usage": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        }
    },
    "id": "evt_1Pgc76B7WZ01zgkWwyRHS12y",
    "livemode": False,
    "object": "event",
    "pending_webhooks": 0,
    "request": {"id": None, "idempotency_key": None},
    "type": "plan.created",
}


# Form decoding -------------------------------------------------------------------------------

_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_PART = re.compile(r"\[([^\[\]]*)\]")


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Nest Stripe's form keys: ``line_items[0][price_data][currency]=eur`` becomes
    ``{"line_items": [{"price_data": {"currency": "eur"}}]}``. Objects whose keys are all indices
    become lists (``expand[0]``, ``expand[]``); ``metadata`` always stays an object. Values stay
    strings, as on the wire."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.fullmatch(key)
        parts = [match.group(1), *_PART.findall(match.group(2))] if match else [key]
        node = root
        for i, part in enumerate(parts):
            name = str(len(node)) if part == "" else part
            if i == len(parts) - 1:
                node[name] = value
                break
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise _StripeError.invalid(f"Invalid object: {key}", param=key)
            node = child
    listified = _listify(root, None)
    assert isinstance(listified, dict)
    return listified


def _listify(value: Any, parent_key: str | None) -> Any:
    if not isinstance(value, dict):
        return value
    items = {k: _listify(v, k) for k, v in value.items()}
    if items and parent_key != "metadata" and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


# Errors --------------------------------------------------------------------------------------


class _StripeError(Exception):
    """An error answer in Stripe's shape: ``{"error": {"type", "message", "code", "param"}}``."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"type": type_, "message": message}
        if code is not None:
            self.body["code"] = code
            self.body["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param is not None:
            self.body["param"] = param

    @classmethod
    def invalid(
        cls, message: str, *, param: str | None = None, code: str | None = None, status: int = 400
    ) -> _StripeError:
        return cls(status, "invalid_request_error", message, code=code, param=param)

    @classmethod
    def missing(cls, param: str) -> _StripeError:
        return cls.invalid(
            f"Missing required param: {param}.", param=param, code="parameter_missing"
        )

    @classmethod
    def no_such(cls, kind: str, id_: str, *, param: str, status: int = 404) -> _StripeError:
        return cls.invalid(
            f"No such {kind}: '{id_}'", param=param, code="resource_missing", status=status
        )


# The server ----------------------------------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits
_UNAVAILABLE = (
    "Stripe is temporarily unavailable (the fake's `down` switch is on). "
    "Please try again in a few moments."
)


_SERVER_ERROR = "An unknown error occurred (the fake's `fail_next_500` switch is on)."
# Stripe's dispute fee for a chargeback (15.00 in the charge currency for US accounts; it varies
# by country). It is not given back when the dispute is won.
_DISPUTE_FEE = 1500
_EU_VAT_PREFIXES: Final[frozenset[str]] = frozenset(
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


def _rand(n: int = 24) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (recorded before ``down``/auth are checked)."""

    method: str
    path: str  # without the query string
    form: dict[str, str]  # the form-encoded body, flat keys (``metadata[order_id]``) -> str
    headers: dict[str, str]  # lower-case names
    query: dict[str, str] = field(default_factory=dict)  # the query string, flat keys


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Stored:
    signature: tuple[Any, ...]
    answer: _Answer
    request_id: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the chaos tests connect from many threads at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: a client that hung up (a timeout in a test) is not an error."""


class FakeStripe:
    """A Stripe API on loopback (ThreadingHTTPServer in a daemon thread) for the official library.

    State is public for assertions (``sessions``, ``line_items``, ``customers``, ``refunds``,
    ``charges``, ``payment_intents``, ``disputes``, ``coupons``, ``promotion_codes``,
    ``balance_transactions``, ``requests``) and guarded by ``lock``. Switches: ``down`` (every
    request gets a 503 ``api_error``), ``fail_next`` (that many next requests get a 503, then it
    recovers; both are connection-level, nothing is saved under an idempotency key),
    ``fail_next_500`` (that many next API requests get a 500 ``api_error`` *after* their
    idempotency key was recorded: a replay with the same key and parameters gets the same 500
    again, as at Stripe, which saves the result of every request that began executing),
    ``delay`` (seconds to sleep before handling each request; the request is still carried out
    after the client gave up, as at Stripe). ``prices`` maps a price id to
    ``{"unit_amount", "currency", "product_name"}`` for line items given by ``price``.
    ``webhook_api_version`` is the API version of the webhook endpoint, the version ``event``
    renders events in (not the library's ``API_VERSION``).
    """

    def __init__(
        self, api_key: str = "sk_test_rapport", *, webhook_api_version: str = WEBHOOK_API_VERSION
    ) -> None:
        self.api_key = api_key
        self.webhook_api_version = webhook_api_version
        self.url = ""
        self.lock = threading.RLock()
        self.requests: list[RecordedRequest] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.line_items: dict[str, list[dict[str, Any]]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.refunds: list[dict[str, Any]] = []
        self.charges: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.coupons: dict[str, dict[str, Any]] = {}
        self.promotion_codes: dict[str, dict[str, Any]] = {}
        self.balance_transactions: dict[str, dict[str, Any]] = {}
        self.prices: dict[str, dict[str, Any]] = {}
        self.down = False
        self.fail_next = 0
        self.fail_next_500 = 0
        self.delay = 0.0
        self.created_count = 0
        self.errors: list[BaseException] = []  # bugs in the fake itself (answered with 500)
        self._pi_metadata: dict[str, dict[str, str]] = {}  # session id -> payment_intent_data
        self._options: dict[str, dict[str, Any]] = {}  # session id -> customer_update, tax ids
        self._breakdowns: dict[str, dict[str, Any]] = {}  # session id -> total_details.breakdown
        self._tax_ids: dict[str, list[dict[str, Any]]] = {}  # customer id -> tax_id objects
        self._idempotency: dict[str, _Stored] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("FakeStripe is already running")
        self._server = _Server(("127.0.0.1", 0), _make_handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-stripe",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeStripe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Test-side helpers: sessions ----------------------------------------------------------

    def complete(
        self,
        session_id: str,
        *,
        payment_status: str = "paid",
        email: str | None = None,
        name: str | None = None,
        business_name: str | None = None,
        tax_id: str | None = None,
        discount_percent: int | None = None,
        promotion_code: str | None = None,
        tax: int = 0,
    ) -> dict[str, Any]:
        """What the buyer finishing Checkout does: the session becomes ``complete``, gets a
        payment intent and a charge (``pending`` while ``payment_status`` is ``"unpaid"``, as for
        SEPA Direct Debit; see ``settle``), and ``customer_details`` (the email of the session's
        ``customer`` when it has one). Returns the session.

        ``discount_percent`` (and the ``promotion_code`` the buyer typed, default
        ``SAVE<percent>``): the buyer redeems a promotion code for a percent-off coupon, which
        Checkout offers only when the session was created with ``allow_promotion_codes=true``
        (else ValueError). The session gets ``discounts=[{"coupon", "promotion_code"}]``,
        ``total_details.amount_discount``, the line items their ``amount_discount``, and the
        charge and payment intent the discounted amount. ``tax``: tax added on top, in minor
        units (``total_details.amount_tax``). A total of 0 (a 100 % code) completes with
        ``payment_status="no_payment_required"``, ``payment_intent=None`` and no charge."""
        if payment_status not in ("paid", "unpaid", "no_payment_required"):
            raise ValueError("payment_status must be paid, unpaid or no_payment_required")
        if discount_percent is not None and not 0 < discount_percent <= 100:
            raise ValueError("discount_percent must be between 1 and 100")
        if promotion_code is not None and discount_percent is None:
            raise ValueError("give discount_percent: the percent off of the code's coupon")
        if tax < 0:
            raise ValueError("tax must not be negative")
        with self.lock:
            session = self._session(session_id)
            if session["status"] != "open":
                raise ValueError(f"{session_id} is {session['status']}, not open")
            if discount_percent is not None and session["allow_promotion_codes"] is not True:
                raise ValueError(
                    f"{session_id} was not created with allow_promotion_codes=true: "
                    "Checkout offers no promotion code field"
                )
            now = int(time.time())
            options = self._options.get(session_id, {})
            if session["amount_subtotal"] is not None:
                self._apply_totals(session, discount_percent, promotion_code, tax, now)
            amount = session["amount_total"]
            customer = self.customers.get(session["customer"] or "")
            email = (
                (customer or {}).get("email")
                or email
                or session["customer_email"]
                or "buyer@example.com"
            )
            if session["mode"] == "payment" and amount == 0:
                payment_status = "no_payment_required"  # nothing to pay: no intent, no charge
                pi_id = None
            else:
                pi_id = self._pay(session, email=email, name=name, status=payment_status, now=now)

            tax_ids = [{"type": "eu_vat", "value": tax_id}] if tax_id else None
            if customer is not None:
                if business_name and options.get("customer_update", {}).get("name") == "auto":
                    customer["name"] = business_name
                known = self._tax_ids.setdefault(customer["id"], [])
                if tax_id and all(t["value"] != tax_id for t in known):
                    known.append(self._tax_id_object(customer["id"], "eu_vat", tax_id))
                tax_ids = [{"type": t["type"], "value": t["value"]} for t in known] or None
            details = copy.deepcopy(_SESSION["customer_details"])
            details.update(
                business_name=business_name,
                email=email,
                name=name,
                tax_exempt=(customer or {}).get("tax_exempt") or "none",
                tax_ids=tax_ids,
            )
            if session["automatic_tax"]["enabled"]:
                session["automatic_tax"]["status"] = "complete"
            session.update(
                status="complete",
                payment_status=payment_status,
                payment_intent=pi_id,
                customer_details=details,
                collected_information={
                    "business_name": business_name,
                    "individual_name": None,
                    "shipping_details": None,
                },
                url=None,  # Stripe only shows the URL while the session is open
            )
            return copy.deepcopy(session)

    def foreign_session(
        self,
        *,
        amount: int = 100,
        currency: str = "eur",
        client_reference_id: str | None = None,
        email: str = "buyer@example.com",
        name: str | None = None,
        payment_status: str = "paid",
    ) -> dict[str, Any]:
        """A paid session the app did not create: someone paid a Payment Link of the same
        account (``https://buy.stripe.com/…?client_reference_id=R-2026-00015``; Stripe copies
        the query parameter onto the session). It has ``payment_link`` set, no metadata of ours
        and does not count in ``created_count``. Returns the completed session."""
        params: dict[str, Any] = {
            "mode": "payment",
            "success_url": "https://buy.stripe.com/c/pay/success",
            "line_items": [
                {
                    "quantity": "1",
                    "price_data": {
                        "currency": currency,
                        "unit_amount": str(amount),
                        "product_data": {"name": "Payment Link"},
                    },
                }
            ],
        }
        if client_reference_id is not None:
            params["client_reference_id"] = client_reference_id
        with self.lock:
            try:
                validate(SessionCreateParams, params)
                created = self._create_session(params)
            except (ParamError, _StripeError) as exc:
                raise ValueError(f"Stripe would refuse this Payment Link session: {exc}") from exc
            session = self.sessions[created["id"]]
            session["payment_link"] = f"plink_{_rand()}"
            session["cancel_url"] = None
            return self.complete(
                created["id"], email=email, name=name, payment_status=payment_status
            )

    def settle(self, session_id: str, *, succeeded: bool = True) -> dict[str, Any]:
        """The delayed outcome of an ``unpaid`` (SEPA) session: on success ``payment_status``
        becomes ``paid`` (the webhook is ``checkout.session.async_payment_succeeded``); on failure
        it stays ``unpaid`` and the charge fails (``…async_payment_failed``)."""
        with self.lock:
            session = self._session(session_id)
            if session["status"] != "complete" or session["payment_status"] != "unpaid":
                raise ValueError(f"{session_id} is not a completed session awaiting payment")
            intent = self.payment_intents[session["payment_intent"]]
            charge = self.charges[intent["latest_charge"]]
            if succeeded:
                session["payment_status"] = "paid"
                intent.update(status="succeeded", amount_received=intent["amount"])
                charge.update(status="succeeded", paid=True, balance_transaction=f"txn_{_rand()}")
            else:
                intent.update(status="requires_payment_method")
                charge.update(
                    status="failed",
                    paid=False,
                    failure_code="insufficient_funds",
                    failure_message="The customer's account has insufficient funds.",
                )
            return copy.deepcopy(session)

    def expire(self, session_id: str) -> dict[str, Any]:
        """The session runs out (or is expired through the API): status ``expired``."""
        with self.lock:
            session = self._session(session_id)
            if session["status"] != "open":
                raise ValueError(f"{session_id} is {session['status']}, not open")
            session.update(status="expired", url=None)
            return copy.deepcopy(session)

    def charge_for(self, session_id: str) -> dict[str, Any]:
        """The charge of a completed session, as Stripe would return it now."""
        with self.lock:
            return copy.deepcopy(self.charges[self._charge_id(session_id)])

    # Test-side helpers: disputes and refunds after the fact ---------------------------------

    def dispute_for(
        self, session_id: str, *, status: str = "needs_response", reason: str = "fraudulent"
    ) -> dict[str, Any]:
        """Open a dispute on the session's charge, or return the one already there.

        ``status="needs_response"`` is a chargeback: the disputed amount and Stripe's dispute fee
        are withdrawn at once (``balance_transactions``) and the charge can no longer be refunded.
        ``status="warning_needs_response"`` is an inquiry (a retrieval request or a fraud
        warning before any chargeback): no funds move and the charge can still be refunded
        (https://docs.stripe.com/disputes/how-disputes-work#inquiries). Either way the charge's
        ``disputed`` becomes true and stays so."""
        if status not in ("needs_response", "warning_needs_response"):
            raise ValueError("status must be needs_response or warning_needs_response")
        with self.lock:
            charge = self.charges[self._charge_id(session_id)]
            for dispute in self.disputes.values():
                if dispute["charge"] == charge["id"]:
                    return copy.deepcopy(dispute)
            now = int(time.time())
            inquiry = status == "warning_needs_response"
            dispute = copy.deepcopy(_DISPUTE)
            dispute.update(
                id=f"dp_{_rand()}",
                amount=charge["amount"],
                balance_transactions=[],
                charge=charge["id"],
                created=now,
                currency=charge["currency"],
                enhanced_eligibility_types=[],
                is_charge_refundable=inquiry,
                livemode=charge["livemode"],
                payment_intent=charge["payment_intent"],
                reason=reason,
                status=status,
            )
            dispute["evidence_details"]["due_by"] = now + 7 * 86400
            dispute["payment_method_details"]["card"]["case_type"] = (
                "inquiry" if inquiry else "chargeback"
            )
            if not inquiry:
                dispute["balance_transactions"].append(self._dispute_funds(dispute, now))
            charge["disputed"] = True
            self.disputes[dispute["id"]] = dispute
            return copy.deepcopy(dispute)

    def escalate_dispute(self, dispute_id: str) -> dict[str, Any]:
        """An inquiry the issuer turns into a chargeback: ``needs_response``, funds withdrawn."""
        with self.lock:
            dispute = self._dispute(dispute_id)
            if dispute["status"] != "warning_needs_response":
                raise ValueError(f"{dispute_id} is {dispute['status']}, not an open inquiry")
            dispute.update(status="needs_response", is_charge_refundable=False)
            dispute["payment_method_details"]["card"]["case_type"] = "chargeback"
            dispute["balance_transactions"].append(self._dispute_funds(dispute, int(time.time())))
            return copy.deepcopy(dispute)

    def close_dispute(self, dispute_id: str, won: bool) -> dict[str, Any]:
        """The dispute's outcome (the webhook is ``charge.dispute.closed``). A chargeback becomes
        ``won`` (the disputed amount comes back: a second balance transaction) or ``lost`` (the
        funds stay withdrawn). An inquiry that the issuer drops becomes ``warning_closed``; an
        inquiry is never ``lost`` by itself (``escalate_dispute`` it first, else ValueError).
        The charge stays ``disputed``."""
        with self.lock:
            dispute = self._dispute(dispute_id)
            status = dispute["status"]
            if status in ("won", "lost", "warning_closed", "prevented"):
                raise ValueError(f"{dispute_id} is already closed ({status})")
            if status.startswith("warning_"):
                if not won:
                    raise ValueError(
                        f"{dispute_id} is an inquiry: escalate_dispute() it into a chargeback "
                        "before it can be lost"
                    )
                dispute["status"] = "warning_closed"
                return copy.deepcopy(dispute)
            dispute["status"] = "won" if won else "lost"
            if won:
                dispute["balance_transactions"].append(
                    self._dispute_funds(dispute, int(time.time()), reinstated=True)
                )
            return copy.deepcopy(dispute)

    def fail_refund(
        self,
        refund_id: str,
        status: str = "failed",
        *,
        failure_reason: str = "expired_or_canceled_card",
    ) -> dict[str, Any]:
        """A refund that does not go through after all: ``failed`` (the card is closed, …: with
        ``failure_reason`` and a ``failure_balance_transaction`` that puts the money back in the
        balance) or ``canceled``. The charge gets the amount back (``amount_refunded`` goes down,
        ``refunded`` is false again), as at Stripe (https://docs.stripe.com/refunds#failed-refunds).
        Returns the refund, for ``refund.failed`` / ``refund.updated`` /
        ``charge.refund.updated`` events."""
        if status not in ("failed", "canceled"):
            raise ValueError("status must be failed or canceled")
        with self.lock:
            refund = next((r for r in self.refunds if r["id"] == refund_id), None)
            if refund is None:
                raise KeyError(f"no such refund in the fake: {refund_id!r}")
            if refund["status"] in ("failed", "canceled"):
                raise ValueError(f"{refund_id} is already {refund['status']}")
            refund["status"] = status
            if status == "failed":
                refund["failure_reason"] = failure_reason
                refund["failure_balance_transaction"] = f"txn_{_rand()}"
            charge = self.charges[refund["charge"]]
            charge["amount_refunded"] = max(0, charge["amount_refunded"] - refund["amount"])
            charge["refunded"] = 0 < charge["amount"] <= charge["amount_refunded"]
            charge["refunds"]["data"] = [
                copy.deepcopy(refund) if r["id"] == refund_id else r
                for r in charge["refunds"]["data"]
            ]
            return copy.deepcopy(refund)

    def event(
        self,
        type: str,
        obj: dict[str, Any],
        *,
        event_id: str | None = None,
        created: int | None = None,
        livemode: bool = False,
    ) -> dict[str, Any]:
        """An Event as Stripe posts it to a webhook endpoint (sign ``json.dumps`` of it with
        ``stripe_signature``): in the endpoint's ``webhook_api_version``, with ``livemode`` on
        the event and on every object in it."""
        data = copy.deepcopy(obj)
        _set_livemode(data, livemode)
        event = copy.deepcopy(_EVENT)
        event.update(
            id=event_id or f"evt_{_rand()}",
            object="event",
            api_version=self.webhook_api_version,
            created=int(time.time()) if created is None else created,
            data={"object": data},
            livemode=livemode,
            pending_webhooks=1,
            request={"id": None, "idempotency_key": None},
            type=type,
        )
        return event

    # Helpers' helpers ---------------------------------------------------------------------

    def _session(self, session_id: str) -> dict[str, Any]:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise KeyError(f"no such checkout session in the fake: {session_id!r}") from None

    def _dispute(self, dispute_id: str) -> dict[str, Any]:
        try:
            return self.disputes[dispute_id]
        except KeyError:
            raise KeyError(f"no such dispute in the fake: {dispute_id!r}") from None

    def _charge_id(self, session_id: str) -> str:
        session = self._session(session_id)
        if session["payment_intent"] is None:
            raise ValueError(f"{session_id} has no payment (not completed, or nothing to pay)")
        charge_id: str = self.payment_intents[session["payment_intent"]]["latest_charge"]
        return charge_id

    def _apply_totals(
        self,
        session: dict[str, Any],
        discount_percent: int | None,
        promotion_code: str | None,
        tax: int,
        now: int,
    ) -> None:
        """Discount and tax onto the session, its line items and its breakdown."""
        session_id, currency = session["id"], session["currency"]
        subtotal: int = session["amount_subtotal"]
        discount = 0 if discount_percent is None else (subtotal * discount_percent + 50) // 100
        total = subtotal - discount + tax
        minimum = MINIMUM_CHARGE.get(currency or "", 0)
        if session["mode"] == "payment" and 0 < total < minimum:
            raise ValueError(
                "Checkout refuses a code that takes the total under Stripe's minimum: "
                + minimum_charge_message(currency)
            )
        items = self.line_items.get(session_id, [])
        _spread(items, "amount_discount", discount)
        _spread(items, "amount_tax", tax)
        for item in items:
            item["amount_total"] = (
                item["amount_subtotal"] - item["amount_discount"] + item["amount_tax"]
            )
        breakdown: dict[str, Any] = {"discounts": [], "taxes": []}
        if discount_percent is not None:
            code = promotion_code or f"SAVE{discount_percent}"
            promo = self._promotion_code(code, discount_percent, now)
            coupon_id = promo["promotion"]["coupon"]
            session["discounts"] = [{"coupon": coupon_id, "promotion_code": promo["id"]}]
            breakdown["discounts"] = [
                {
                    "amount": discount,
                    "discount": {
                        "id": f"di_{_rand()}",
                        "object": "discount",
                        "checkout_session": session_id,
                        "customer": session["customer"],
                        "customer_account": None,
                        "end": None,
                        "invoice": None,
                        "invoice_item": None,
                        "promotion_code": promo["id"],
                        "source": {"coupon": coupon_id, "type": "coupon"},
                        "start": now,
                        "subscription": None,
                        "subscription_item": None,
                    },
                }
            ]
        if tax:
            taxable = subtotal - discount
            percentage = round(tax * 100 / taxable, 4) if taxable else 0.0
            breakdown["taxes"] = [
                {
                    "amount": tax,
                    "rate": {
                        "id": f"txr_{_rand()}",
                        "object": "tax_rate",
                        "active": True,
                        "country": None,
                        "created": now,
                        "description": None,
                        "display_name": "VAT",
                        "effective_percentage": percentage,
                        "flat_amount": None,
                        "inclusive": False,
                        "jurisdiction": None,
                        "jurisdiction_level": None,
                        "livemode": session["livemode"],
                        "metadata": {},
                        "percentage": percentage,
                        "rate_type": "percentage",
                        "state": None,
                        "tax_type": "vat",
                    },
                    "taxability_reason": "standard_rated",
                    "taxable_amount": taxable,
                }
            ]
        self._breakdowns[session_id] = breakdown
        session.update(
            amount_total=total,
            total_details={"amount_discount": discount, "amount_shipping": 0, "amount_tax": tax},
        )

    def _promotion_code(self, code: str, percent: int, now: int) -> dict[str, Any]:
        """The promotion code ``code`` for a ``percent`` % coupon, made on first use."""
        for promo in self.promotion_codes.values():
            coupon = self.coupons[promo["promotion"]["coupon"]]
            if promo["code"] == code and coupon["percent_off"] == float(percent):
                promo["times_redeemed"] += 1
                coupon["times_redeemed"] += 1
                return promo
        coupon_id = _rand(8)
        self.coupons[coupon_id] = {
            "id": coupon_id,
            "object": "coupon",
            "amount_off": None,
            "created": now,
            "currency": None,
            "duration": "once",
            "duration_in_months": None,
            "livemode": False,
            "max_redemptions": None,
            "metadata": {},
            "name": f"{percent} % off",
            "percent_off": float(percent),
            "redeem_by": None,
            "times_redeemed": 1,
            "valid": True,
        }
        promo = {
            "id": f"promo_{_rand()}",
            "object": "promotion_code",
            "active": True,
            "code": code,
            "created": now,
            "customer": None,
            "customer_account": None,
            "expires_at": None,
            "livemode": False,
            "max_redemptions": None,
            "metadata": {},
            "promotion": {"coupon": coupon_id, "type": "coupon"},
            "restrictions": {
                "currency_options": {},
                "first_time_transaction": False,
                "minimum_amount": None,
                "minimum_amount_currency": None,
            },
            "times_redeemed": 1,
        }
        self.promotion_codes[promo["id"]] = promo
        return promo

    def _pay(
        self, session: dict[str, Any], *, email: str, name: str | None, status: str, now: int
    ) -> str:
        """The payment intent and charge of a completed session; the intent's id."""
        pi_id, ch_id = f"pi_{_rand()}", f"ch_{_rand()}"
        paid = status != "unpaid"
        sepa = not paid or "sepa_debit" in (session["payment_method_types"] or [])
        amount, currency = session["amount_total"], session["currency"]
        metadata = dict(self._pi_metadata.get(session["id"], {}))

        charge = copy.deepcopy(_CHARGE)
        charge.update(
            id=ch_id,
            amount=amount,
            amount_captured=amount,
            amount_refunded=0,
            balance_transaction=f"txn_{_rand()}" if paid else None,
            captured=True,
            created=now,
            currency=currency,
            customer=session["customer"],
            description=None,
            livemode=session["livemode"],
            metadata=metadata,
            paid=paid,
            payment_intent=pi_id,
            payment_method=f"pm_{_rand()}",
            receipt_email=None,
            receipt_url=f"{self.url}/receipts/{ch_id}",
            refunded=False,
            shipping=None,
            source=None,
            status="succeeded" if paid else "pending",
        )
        charge["billing_details"].update(email=email, name=name)
        charge["outcome"].update(
            network_status="approved_by_network",
            seller_message="Payment complete.",
            type="authorized",
            risk_level="normal",
        )
        charge["refunds"] = {
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/charges/{ch_id}/refunds",
        }
        charge["transfer_data"] = None
        if sepa:
            charge["payment_method_details"] = {
                "sepa_debit": {
                    "bank_code": "37040044",
                    "branch_code": None,
                    "country": "DE",
                    "fingerprint": _rand(16),
                    "last4": "3000",
                    "mandate": f"mandate_{_rand()}",
                },
                "type": "sepa_debit",
            }
        self.charges[ch_id] = charge

        intent = copy.deepcopy(_PAYMENT_INTENT)
        intent.update(
            id=pi_id,
            amount=amount,
            amount_received=amount if paid else 0,
            automatic_payment_methods=None,
            canceled_at=None,
            client_secret=f"{pi_id}_secret_{_rand()}",
            created=now,
            currency=currency,
            customer=session["customer"],
            last_payment_error=None,
            latest_charge=ch_id,
            livemode=session["livemode"],
            metadata=copy.deepcopy(metadata),
            next_action=None,
            payment_method=charge["payment_method"],
            payment_method_configuration_details=None,
            payment_method_types=["sepa_debit"] if sepa else ["card"],
            processing=None,
            shipping=None,
            status="succeeded" if paid else "processing",
            transfer_data=None,
        )
        self.payment_intents[pi_id] = intent
        return pi_id

    def _dispute_funds(
        self, dispute: dict[str, Any], now: int, *, reinstated: bool = False
    ) -> dict[str, Any]:
        """The balance transaction of a chargeback: the withdrawal (amount and dispute fee) or,
        when won, the reinstatement of the disputed amount."""
        amount, currency = dispute["amount"], dispute["currency"]
        fee = 0 if reinstated else _DISPUTE_FEE
        gross = amount if reinstated else -amount
        txn = {
            "id": f"txn_{_rand()}",
            "object": "balance_transaction",
            "amount": gross,
            "available_on": now,
            "balance_type": "payments",
            "created": now,
            "currency": currency,
            "description": (
                f"Chargeback {'reversal' if reinstated else 'withdrawal'} for {dispute['charge']}"
            ),
            "exchange_rate": None,
            "fee": fee,
            "fee_details": (
                [
                    {
                        "amount": fee,
                        "application": None,
                        "currency": currency,
                        "description": "Dispute fee",
                        "type": "stripe_fee",
                    }
                ]
                if fee
                else []
            ),
            "net": gross - fee,
            "reporting_category": "dispute_reversal" if reinstated else "dispute",
            "source": dispute["id"],
            "status": "available",
            "type": "adjustment",
        }
        self.balance_transactions[txn["id"]] = txn
        return copy.deepcopy(txn)

    def _tax_id_object(self, customer_id: str, kind: str, value: str) -> dict[str, Any]:
        return {
            "id": f"txi_{_rand()}",
            "object": "tax_id",
            "country": value[:2].upper() if kind.endswith("_vat") else None,
            "created": int(time.time()),
            "customer": customer_id,
            "customer_account": None,
            "livemode": False,
            "owner": {"customer": customer_id, "type": "customer"},
            "type": kind,
            "value": value,
            "verification": {"status": "pending", "verified_address": None, "verified_name": None},
        }

    # HTTP ---------------------------------------------------------------------------------

    def _handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> _Answer:
        split = urlsplit(target)
        path = split.path
        query_pairs = parse_qsl(split.query, keep_blank_values=True)
        form_pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        with self.lock:
            self.requests.append(
                RecordedRequest(method, path, dict(form_pairs), headers, dict(query_pairs))
            )
        if self.delay > 0:
            time.sleep(self.delay)
        try:
            if path.startswith(("/pay/", "/receipts/")):
                return self._page(method, path, dict(form_pairs))
            with self.lock:
                if self.fail_next > 0 or self.down:
                    self.fail_next = max(0, self.fail_next - 1)
                    raise _StripeError(503, "api_error", _UNAVAILABLE)
                self._authenticate(headers.get("authorization", ""))
                params = decode_form(form_pairs if method == "POST" else query_pairs)
                key = headers.get("idempotency-key")
                if method != "POST" or not key:
                    return self._json(200, self._serve_api(method, path, params))
                return self._idempotent(key, (method, path, sorted(form_pairs)), path, params)
        except _StripeError as exc:
            return self._json(exc.status, {"error": exc.body})

    def _idempotent(
        self, key: str, signature: tuple[Any, ...], path: str, params: dict[str, Any]
    ) -> _Answer:
        """Stripe's idempotency (https://docs.stripe.com/api/idempotent_requests): the same key
        and parameters replay the first answer (even if the object changed since, and even when
        it was a 500); other parameters under the key are an ``idempotency_error``. Requests
        refused by validation are not kept, as at Stripe ("no idempotent result is saved because
        no API endpoint began execution")."""
        stored = self._idempotency.get(key)
        if stored is not None:
            if stored.signature != signature:
                raise _StripeError(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try using a key other than "
                    f"'{key}' if you meant to execute a different request.",
                )
            headers = {
                **stored.answer.headers,
                "Idempotent-Replayed": "true",
                "Original-Request": stored.request_id,
            }
            return _Answer(stored.answer.status, stored.answer.body, headers=headers)
        request_id = f"req_{_rand(14)}"
        try:
            answer = self._json(200, self._serve_api("POST", path, params))
        except _StripeError as exc:
            if exc.status < 500:
                raise
            # Saved: retrying with this key would only replay it (the library reads the header).
            answer = self._json(exc.status, {"error": exc.body})
            answer.headers["Stripe-Should-Retry"] = "false"
        answer.headers["Request-Id"] = request_id
        self._idempotency[key] = _Stored(signature, answer, request_id)
        return answer

    def _authenticate(self, authorization: str) -> None:
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise _StripeError.invalid(
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, "
                "or we can help at https://support.stripe.com/.",
                status=401,
            )
        if not hmac.compare_digest(key.strip(), self.api_key):
            shown = key.strip()
            masked = shown[:8] + "*" * max(0, len(shown) - 12) + shown[-4:]
            raise _StripeError.invalid(
                f"Invalid API Key provided: {masked}", code="api_key_invalid", status=401
            )

    def _serve_api(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """Route, check the parameters against the library's type for the endpoint, then (unless
        ``fail_next_500`` says otherwise) carry the request out and expand the answer."""
        params_type, run = self._route(method, path)
        try:
            validate(params_type, params)
        except ParamError as exc:
            raise _StripeError.invalid(exc.message, param=exc.param, code=exc.code) from None
        if self.fail_next_500 > 0:
            self.fail_next_500 -= 1
            raise _StripeError(500, "api_error", _SERVER_ERROR)
        answer = run(params)
        if answer.get("object") == "list":
            return answer
        return self._expand(answer, [str(e) for e in params.get("expand") or []])

    def _route(
        self, method: str, path: str
    ) -> tuple[type, Callable[[dict[str, Any]], dict[str, Any]]]:
        """The library's parameter type of the endpoint and what carries the request out."""
        parts = [unquote_plus(p) for p in path.strip("/").split("/")]
        match method, parts:
            case "POST", ["v1", "checkout", "sessions"]:
                return SessionCreateParams, self._post_session
            case "GET", ["v1", "checkout", "sessions", session_id]:
                return SessionRetrieveParams, lambda _: self._get("checkout.session", session_id)
            case "POST", ["v1", "checkout", "sessions", session_id, "expire"]:
                return SessionExpireParams, lambda _: self._expire_session(session_id)
            case "GET", ["v1", "checkout", "sessions", session_id, "line_items"]:
                return SessionLineItemListParams, lambda _: self._line_items_of(session_id)
            case "POST", ["v1", "customers"]:
                return CustomerCreateParams, self._create_customer
            case "GET", ["v1", "customers", customer_id]:
                return CustomerRetrieveParams, lambda _: self._get("customer", customer_id)
            case "POST", ["v1", "refunds"]:
                return RefundCreateParams, self._create_refund
            case "GET", ["v1", "refunds", refund_id]:
                return RefundRetrieveParams, lambda _: self._get("refund", refund_id)
            case "GET", ["v1", "payment_intents", intent_id]:
                return PaymentIntentRetrieveParams, lambda _: self._get("payment_intent", intent_id)
            case "GET", ["v1", "charges", charge_id]:
                return ChargeRetrieveParams, lambda _: self._get("charge", charge_id)
            case "GET", ["v1", "disputes", dispute_id]:
                return DisputeRetrieveParams, lambda _: self._get("dispute", dispute_id)
        raise _StripeError.invalid(
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
            status=404,
        )

    def _get(self, kind: str, id_: str, *, status: int = 404) -> dict[str, Any]:
        """A copy of a stored object; a missing one is Stripe's ``resource_missing``."""
        if kind == "refund":
            found = next((r for r in self.refunds if r["id"] == id_), None)
        else:
            store = {
                "checkout.session": self.sessions,
                "customer": self.customers,
                "payment_intent": self.payment_intents,
                "charge": self.charges,
                "dispute": self.disputes,
            }[kind]
            found = store.get(id_)
        if found is None:
            param = {"checkout.session": "session", "payment_intent": "intent"}.get(kind, "id")
            raise _StripeError.no_such(kind, id_, param=param, status=status)
        return copy.deepcopy(found)

    def _lookup(self, id_: str) -> dict[str, Any] | None:
        """Any stored object by its id (for ``expand``)."""
        if id_.startswith("re_"):
            return next((copy.deepcopy(r) for r in self.refunds if r["id"] == id_), None)
        for store in (
            self.payment_intents,
            self.charges,
            self.disputes,
            self.customers,
            self.sessions,
            self.promotion_codes,
            self.coupons,
            self.balance_transactions,
        ):
            if id_ in store:
                return copy.deepcopy(store[id_])
        return None

    def _expand(self, obj: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        """Stripe's ``expand[]``: replace an id by its object, along dotted paths (through lists
        too, as in ``discounts.promotion_code``)."""
        for path in expand:
            self._expand_path(obj, path.split("."), path)
        return obj

    def _expand_path(self, obj: dict[str, Any], steps: list[str], whole: str) -> None:
        name, rest = steps[0], steps[1:]
        kind = obj.get("object")
        if kind == "checkout.session" and name == "line_items":
            obj["line_items"] = self._line_items_of(obj["id"])
        if (
            kind == "checkout.session"
            and name == "total_details"
            and rest[:1] == ["breakdown"]
            and isinstance(obj.get("total_details"), dict)
        ):
            empty: dict[str, Any] = {"discounts": [], "taxes": []}
            obj["total_details"]["breakdown"] = copy.deepcopy(
                self._breakdowns.get(obj["id"], empty)
            )
            obj, name, rest = obj["total_details"], "breakdown", rest[1:]
        if kind == "customer" and name == "tax_ids":
            obj["tax_ids"] = self._list(
                f"/v1/customers/{obj['id']}/tax_ids", self._tax_ids.get(obj["id"], [])
            )
        if name not in obj:
            raise _StripeError.invalid(
                f"This property cannot be expanded ({whole}).", param="expand"
            )
        value = obj[name]
        if isinstance(value, str):
            found = self._lookup(value)
            if found is None:
                raise _StripeError.invalid(
                    f"This property cannot be expanded ({whole}).", param="expand"
                )
            value = obj[name] = found
        if not rest:
            return
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                self._expand_path(item, rest, whole)

    @staticmethod
    def _list(url: str, data: list[dict[str, Any]]) -> dict[str, Any]:
        return {"object": "list", "data": copy.deepcopy(data), "has_more": False, "url": url}

    def _line_items_of(self, session_id: str) -> dict[str, Any]:
        self._get("checkout.session", session_id)
        return self._list(
            f"/v1/checkout/sessions/{session_id}/line_items", self.line_items.get(session_id, [])
        )

    def _expire_session(self, session_id: str) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None:
            raise _StripeError.no_such("checkout.session", session_id, param="session")
        if session["status"] != "open":
            raise _StripeError.invalid(
                'Only Checkout Sessions with a status in ["open"] can be expired.',
                param="session",
            )
        return self.expire(session_id)

    # Customers ----------------------------------------------------------------------------

    def _create_customer(self, p: dict[str, Any]) -> dict[str, Any]:
        email = _email(p, "email")
        customer_id = f"cus_{_rand(14)}"
        tax_ids: list[dict[str, Any]] = []
        for i, datum in enumerate(p.get("tax_id_data") or []):
            kind, value = str(datum["type"]), str(datum["value"])
            if not _valid_tax_id(kind, value):
                raise _StripeError.invalid(
                    f"Invalid value for {kind}.",
                    param=f"tax_id_data[{i}][value]",
                    code="tax_id_invalid",
                )
            tax_ids.append(self._tax_id_object(customer_id, kind, value))
        address = p.get("address")
        customer = copy.deepcopy(_CUSTOMER)
        customer.update(
            id=customer_id,
            address={**_CUSTOMER["address"], **address} if isinstance(address, dict) else None,
            created=int(time.time()),
            currency=None,
            description=_text(p, "description"),
            discount=None,
            email=email,
            invoice_prefix=secrets.token_hex(4).upper(),
            metadata=_metadata(p, "metadata"),
            name=_text(p, "name"),
            phone=_text(p, "phone"),
            preferred_locales=[str(x) for x in p.get("preferred_locales") or []],
            shipping=None,
            tax_exempt=_text(p, "tax_exempt") or "none",
        )
        self.customers[customer_id] = customer
        self._tax_ids[customer_id] = tax_ids
        return copy.deepcopy(customer)

    # Checkout Sessions --------------------------------------------------------------------

    def _post_session(self, p: dict[str, Any]) -> dict[str, Any]:
        session = self._create_session(p)
        self.created_count += 1
        return session

    def _create_session(self, p: dict[str, Any]) -> dict[str, Any]:
        mode = _text(p, "mode", required=True)
        success_url = _url(p, "success_url", required=True)
        assert success_url is not None
        cancel_url = _url(p, "cancel_url")
        customer_email = _email(p, "customer_email")
        customer_id = _text(p, "customer")
        customer_update = p.get("customer_update") or {}
        tax_id_collection = _bool(p.get("tax_id_collection") or {}, "enabled") or False
        automatic_tax = _bool(p.get("automatic_tax") or {}, "enabled") or False
        # Rules across parameters, in Stripe's words.
        if customer_id is not None and customer_email is not None:
            raise _StripeError.invalid(
                "You may only specify one of these parameters: customer, customer_email."
            )
        if "allow_promotion_codes" in p and "discounts" in p:
            raise _StripeError.invalid(
                "You may only specify one of these parameters: allow_promotion_codes, discounts."
            )
        if customer_update and customer_id is None and "customer_account" not in p:
            raise _StripeError.invalid(
                "`customer_update` can only be used with `customer` or `customer_account`."
            )
        customer = None
        if customer_id is not None:
            customer = self.customers.get(customer_id)
            if customer is None:
                raise _StripeError.no_such("customer", customer_id, param="customer", status=400)
        if customer is not None and tax_id_collection and customer_update.get("name") != "auto":
            # https://docs.stripe.com/tax/checkout/tax-ids ("Existing customers")
            raise _StripeError.invalid(
                "Tax ID collection requires updating business name on the customer. To enable "
                "tax ID collection for an existing customer, please set `customer_update[name]` "
                "to `auto`."
            )
        if (
            customer is not None
            and automatic_tax
            and not (customer["address"] or {}).get("country")
            and "auto" not in (customer_update.get("address"), customer_update.get("shipping"))
        ):
            raise _StripeError.invalid(
                "Automatic tax calculation in Checkout requires a valid address on the Customer. "
                "Add a valid address to the Customer or set `customer_update[address]` to 'auto' "
                "to save the billing address entered in Checkout to the Customer.",
                code="customer_tax_location_invalid",
            )
        metadata = _metadata(p, "metadata")
        intent_data = p.get("payment_intent_data") or {}
        pi_metadata = _metadata(intent_data, "metadata", prefix="payment_intent_data")
        items, currency, subtotal = self._line_items(p, required=mode == "payment")
        if mode == "payment" and currency is not None and subtotal:
            minimum = MINIMUM_CHARGE.get(currency, 0)
            if subtotal < minimum:
                raise _StripeError.invalid(
                    minimum_charge_message(currency), param="line_items", code="amount_too_small"
                )
        methods = p.get("payment_method_types") or ["card"]

        now = int(time.time())
        expires_at = _int(p, "expires_at") or now + 24 * 3600
        if not now + 30 * 60 - 60 <= expires_at <= now + 24 * 3600 + 60:
            raise _StripeError.invalid(
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                "Checkout Session creation.",
                param="expires_at",
            )
        session_id = f"cs_test_{_rand()}"
        session = copy.deepcopy(_SESSION)
        # Stripe's example fills nested objects with placeholders ("message", huge amounts);
        # a real hosted payment session with these params has them empty.
        session.update(
            id=session_id,
            object="checkout.session",
            adaptive_pricing={
                "enabled": _bool(p.get("adaptive_pricing") or {}, "enabled") or False
            },
            after_expiration=None,
            allow_promotion_codes=_bool(p, "allow_promotion_codes"),
            amount_subtotal=subtotal,
            amount_total=subtotal,
            automatic_tax=(
                {
                    "enabled": True,
                    "liability": {"type": "self"},
                    "provider": "stripe",
                    "status": "requires_location_inputs",
                }
                if automatic_tax
                else {"enabled": False, "liability": None, "provider": None, "status": None}
            ),
            billing_address_collection=_text(p, "billing_address_collection"),
            cancel_url=cancel_url,
            client_reference_id=_text(p, "client_reference_id"),
            collected_information=None,
            consent=None,
            consent_collection=None,
            created=now,
            currency=currency,
            currency_conversion=None,
            custom_text={
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            customer=customer_id,
            customer_creation=None
            if customer_id
            else _text(p, "customer_creation") or "if_required",
            customer_details=None,
            customer_email=customer_email,
            discounts=[],
            expires_at=expires_at,
            invoice=None,
            invoice_creation={
                "enabled": _bool(p.get("invoice_creation") or {}, "enabled") or False,
                "invoice_data": {
                    "account_tax_ids": None,
                    "custom_fields": None,
                    "description": None,
                    "footer": None,
                    "issuer": None,
                    "metadata": {},
                    "rendering_options": None,
                },
            },
            livemode=False,
            locale=_text(p, "locale"),
            managed_payments={"enabled": False},
            metadata=metadata,
            mode=mode,
            payment_intent=None,
            payment_link=None,
            payment_method_collection="if_required" if mode == "subscription" else None,
            payment_method_configuration_details=None,
            payment_method_types=[str(m) for m in methods],
            payment_status="no_payment_required" if mode == "setup" else "unpaid",
            permissions=None,
            phone_number_collection={
                "enabled": _bool(p.get("phone_number_collection") or {}, "enabled") or False
            },
            saved_payment_method_options=None,
            shipping_address_collection=p.get("shipping_address_collection"),
            shipping_cost=None,
            shipping_options=[],
            status="open",
            submit_type=_text(p, "submit_type"),
            success_url=success_url.replace("{CHECKOUT_SESSION_ID}", session_id),
            tax_id_collection={"enabled": tax_id_collection, "required": "never"},
            total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            ui_mode=_text(p, "ui_mode") or "hosted",
            url=f"{self.url}/pay/{session_id}",
            wallet_options=None,
        )
        if cancel_url is not None:
            session["cancel_url"] = cancel_url.replace("{CHECKOUT_SESSION_ID}", session_id)
        for item in items:
            item["id"] = f"li_{_rand()}"
        self.sessions[session_id] = session
        self.line_items[session_id] = items
        self._pi_metadata[session_id] = pi_metadata
        self._options[session_id] = {
            "customer_update": dict(customer_update),
            "tax_id_collection": tax_id_collection,
        }
        return copy.deepcopy(session)

    def _line_items(
        self, p: dict[str, Any], *, required: bool
    ) -> tuple[list[dict[str, Any]], str | None, int | None]:
        raw = p.get("line_items")
        if raw is None:
            if required:
                raise _StripeError.missing("line_items")
            return [], None, None
        if not isinstance(raw, list):
            raise _StripeError.invalid("Invalid array", param="line_items")
        items: list[dict[str, Any]] = []
        currencies: set[str] = set()
        for i, entry in enumerate(raw):
            at = f"line_items[{i}]"
            if not isinstance(entry, dict):
                raise _StripeError.invalid("Invalid object", param=at)
            quantity = _int(entry, "quantity", prefix=at, required=True)
            assert quantity is not None
            if quantity < 1:
                raise _StripeError.invalid(
                    "This value must be greater than or equal to 1.", param=f"{at}[quantity]"
                )
            if "price" in entry:
                price_id = _text(entry, "price", prefix=at, required=True)
                assert price_id is not None
                known = self.prices.get(price_id)
                if known is None:
                    raise _StripeError.no_such("price", price_id, param=f"{at}[price]", status=400)
                unit_amount = int(known["unit_amount"])
                currency = str(known["currency"]).lower()
                name = str(known.get("product_name", price_id))
                price = _price(price_id, currency, unit_amount, active=True)
            elif "price_data" in entry:
                data = entry["price_data"]
                pd_at = f"{at}[price_data]"
                if not isinstance(data, dict):
                    raise _StripeError.invalid("Invalid object", param=pd_at)
                currency = (_text(data, "currency", prefix=pd_at, required=True) or "").lower()
                if not re.fullmatch(r"[a-z]{3}", currency):
                    raise _StripeError.invalid(
                        f"Invalid currency: {currency}", param=f"{pd_at}[currency]"
                    )
                if "unit_amount_decimal" in data and "unit_amount" not in data:
                    decimal = _text(data, "unit_amount_decimal", prefix=pd_at, required=True)
                    try:
                        unit_amount = int(Decimal(decimal or ""))
                    except InvalidOperation:
                        raise _StripeError.invalid(
                            f"Invalid decimal: {decimal}", param=f"{pd_at}[unit_amount_decimal]"
                        ) from None
                else:
                    amount = _int(data, "unit_amount", prefix=pd_at, required=True)
                    assert amount is not None
                    unit_amount = amount
                if unit_amount < 0:
                    raise _StripeError.invalid(
                        "This value must be greater than or equal to 0.",
                        param=f"{pd_at}[unit_amount]",
                    )
                product = data.get("product_data")
                if "product" in data:
                    name = _text(data, "product", prefix=pd_at, required=True) or ""
                elif isinstance(product, dict):
                    product_at = f"{pd_at}[product_data]"
                    name = _text(product, "name", prefix=product_at, required=True) or ""
                else:
                    raise _StripeError.missing(f"{pd_at}[product_data][name]")
                price = _price(f"price_{_rand()}", currency, unit_amount, active=False)
            else:
                raise _StripeError.invalid(
                    f"You must specify either `price` or `price_data` in `{at}`.",
                    param=at,
                    code="parameter_missing",
                )
            currencies.add(currency)
            total = unit_amount * quantity
            items.append(
                {
                    "id": "",
                    "object": "item",
                    "amount_discount": 0,
                    "amount_subtotal": total,
                    "amount_tax": 0,
                    "amount_total": total,
                    "currency": currency,
                    "description": name,
                    "metadata": _metadata(entry, "metadata", prefix=at),
                    "price": price,
                    "quantity": quantity,
                }
            )
        if not items and required:
            raise _StripeError.missing("line_items")
        if len(currencies) > 1:
            raise _StripeError.invalid(
                "All line items must share the same currency; found "
                + ", ".join(sorted(currencies)),
                param="line_items",
            )
        currency_out = next(iter(currencies), None)
        return items, currency_out, sum(item["amount_total"] for item in items)

    # Refunds ------------------------------------------------------------------------------

    def _create_refund(self, p: dict[str, Any]) -> dict[str, Any]:
        pi_id = _text(p, "payment_intent")
        ch_id = _text(p, "charge")
        if pi_id is not None:
            intent = self.payment_intents.get(pi_id)
            if intent is None:
                raise _StripeError.no_such(
                    "payment_intent", pi_id, param="payment_intent", status=400
                )
            ch_id = intent["latest_charge"]
        elif ch_id is None:
            raise _StripeError.invalid(
                "One of the following params should be provided for this request: "
                "payment_intent or charge.",
                code="parameter_missing",
            )
        charge = self.charges.get(ch_id or "")
        if charge is None:
            raise _StripeError.no_such("charge", str(ch_id), param="charge", status=400)
        remaining = charge["amount"] - charge["amount_refunded"]
        # A chargeback takes the funds already; an inquiry still lets you refund.
        if any(
            d["charge"] == charge["id"] and not d["is_charge_refundable"]
            for d in self.disputes.values()
        ):
            raise _StripeError.invalid(
                f"Charge {ch_id} has been charged back; cannot issue a refund.",
                code="charge_disputed",
            )
        if remaining <= 0:
            raise _StripeError.invalid(
                f"Charge {ch_id} has already been refunded.", code="charge_already_refunded"
            )
        amount = _int(p, "amount")
        if amount is None:
            amount = remaining
        if amount <= 0:
            raise _StripeError.invalid(
                "Invalid positive integer", param="amount", code="parameter_invalid_integer"
            )
        if amount > remaining:
            raise _StripeError.invalid(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining})",
                param="amount",
                code="amount_too_large",
            )
        reason = _text(p, "reason")  # its enum is checked against the library's type
        refund = copy.deepcopy(_REFUND)
        refund.update(
            id=f"re_{_rand()}",
            amount=amount,
            balance_transaction=f"txn_{_rand()}",
            charge=charge["id"],
            created=int(time.time()),
            currency=charge["currency"],
            customer=charge["customer"],
            metadata=_metadata(p, "metadata"),
            payment_intent=charge["payment_intent"],
            payment_method=charge["payment_method"],
            reason=reason,
            status="succeeded" if charge["status"] == "succeeded" else "pending",
        )
        if charge["payment_method_details"]["type"] != "card":
            refund["destination_details"] = {
                "type": charge["payment_method_details"]["type"],
                charge["payment_method_details"]["type"]: {},
            }
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        charge["refunds"]["data"].insert(0, copy.deepcopy(refund))
        charge["refunds"]["total_count"] = len(charge["refunds"]["data"])
        self.refunds.append(refund)
        return copy.deepcopy(refund)

    # Pages --------------------------------------------------------------------------------

    def _page(self, method: str, path: str, form: dict[str, str]) -> _Answer:
        """The hosted checkout page of a session and the receipt page of a charge."""
        kind, _, id_ = path.strip("/").partition("/")
        id_ = unquote_plus(id_)
        with self.lock:
            if kind == "receipts" and id_ in self.charges and method == "GET":
                charge = self.charges[id_]
                amount = f"{charge['amount'] / 100:.2f} {charge['currency'].upper()}"
                return _html(200, "Receipt", f"<p>Receipt for {html.escape(id_)}: {amount}</p>")
            session = self.sessions.get(id_) if kind == "pay" else None
            if session is None:
                return _html(404, "Not found", "<p>Something went wrong.</p>")
            if session["status"] != "open":
                return _html(410, "Expired", f"<p>This session is {session['status']}.</p>")
            if method == "POST" and form.get("action") == "cancel":
                return _Answer(303, b"", headers={"Location": session["cancel_url"] or "/"})
            if method == "POST":
                self.complete(
                    id_,
                    payment_status=form.get("payment_status") or "paid",
                    email=form.get("email") or None,
                    name=form.get("name") or None,
                    business_name=form.get("business_name") or None,
                    tax_id=form.get("tax_id") or None,
                )
                return _Answer(303, b"", headers={"Location": session["success_url"]})
            lines = "".join(
                f"<li>{html.escape(i['description'])} x {i['quantity']}</li>"
                for i in self.line_items.get(id_, [])
            )
            total = (
                f"{(session['amount_total'] or 0) / 100:.2f} {(session['currency'] or '').upper()}"
            )
            email = html.escape(session["customer_email"] or "")
            body = (
                f"<ul>{lines}</ul><p>Total: <span id='total'>{total}</span></p>"
                f"<form method='post'><input name='email' type='email' value='{email}'>"
                "<input name='name' placeholder='Name'>"
                "<input name='business_name' placeholder='Business name'>"
                "<input name='tax_id' placeholder='VAT number'>"
                "<button name='action' value='pay'>Pay</button>"
                "<button name='action' value='cancel' formnovalidate>Cancel</button></form>"
            )
            return _html(200, "Fake Stripe Checkout", body)

    @staticmethod
    def _json(status: int, obj: dict[str, Any]) -> _Answer:
        return _Answer(status, json.dumps(obj, indent=2).encode())


def _make_handler(fake: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: stop() really stops
        server_version = "FakeStripe/1.0"
        sys_version = ""

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                length = int(headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length > 0 else b""
                answer = fake._handle(method, self.path, headers, raw)
            except Exception as exc:  # a bug in the fake: answer like Stripe, keep it for tests
                fake.errors.append(exc)
                answer = fake._json(
                    500, {"error": {"type": "api_error", "message": f"fake stripe: {exc!r}"}}
                )
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.send_header("Request-Id", answer.headers.get("Request-Id", f"req_{_rand(14)}"))
                self.send_header("Stripe-Version", headers.get("stripe-version", API_VERSION))
                if "idempotency-key" in headers:
                    self.send_header("Idempotency-Key", headers["idempotency-key"])
                for name, value in answer.headers.items():
                    if name != "Request-Id":
                        self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)
            except OSError:
                pass  # the client gave up (timeout): nothing to tell

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: no line on stderr per request."""

    return Handler


# Parameter readers: Stripe's messages for missing and malformed values. ------------------------


def _name(prefix: str | None, key: str) -> str:
    return f"{prefix}[{key}]" if prefix else key


def _text(
    p: dict[str, Any], key: str, *, prefix: str | None = None, required: bool = False
) -> str | None:
    value = p.get(key)
    if value is None or value == "":
        if required:
            raise _StripeError.missing(_name(prefix, key))
        return None
    if not isinstance(value, str):
        raise _StripeError.invalid("Invalid string", param=_name(prefix, key))
    return value


def _int(
    p: dict[str, Any], key: str, *, prefix: str | None = None, required: bool = False
) -> int | None:
    value = _text(p, key, prefix=prefix, required=required)
    if value is None:
        return None
    if not re.fullmatch(r"-?\d+", value):
        raise _StripeError.invalid(
            f"Invalid integer: {value}", param=_name(prefix, key), code="parameter_invalid_integer"
        )
    return int(value)


def _bool(p: dict[str, Any], key: str) -> bool | None:
    value = _text(p, key)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise _StripeError.invalid(f"Invalid boolean: {value}", param=key)
    return value == "true"


def _url(p: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = _text(p, key, required=required)
    if value is not None and not re.match(r"https?://[^/\s]+", value):
        raise _StripeError.invalid("Not a valid URL", param=key, code="url_invalid")
    return value


def _metadata(p: dict[str, Any], key: str, *, prefix: str | None = None) -> dict[str, str]:
    value = p.get(key)
    where = _name(prefix, key)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise _StripeError.invalid("Invalid object", param=where)
    if len(value) > 50:
        raise _StripeError.invalid("Metadata can have at most 50 keys.", param=where)
    for k, v in value.items():
        if len(k) > 40:
            raise _StripeError.invalid(
                f"Metadata keys can have up to 40 characters ({k!r})", param=f"{where}[{k}]"
            )
        if not isinstance(v, str) or len(v) > 500:
            raise _StripeError.invalid(
                "Metadata values must be strings of up to 500 characters", param=f"{where}[{k}]"
            )
    return {k: v for k, v in value.items() if v != ""}  # an empty value unsets the key


def _price(price_id: str, currency: str, unit_amount: int, *, active: bool) -> dict[str, Any]:
    return {
        "id": price_id,
        "object": "price",
        "active": active,
        "billing_scheme": "per_unit",
        "created": int(time.time()),
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "product": f"prod_{_rand(14)}",
        "recurring": None,
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }


def _html(status: int, title: str, body: str) -> _Answer:
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1>{body}</body></html>"
    )
    return _Answer(status, page.encode(), content_type="text/html; charset=utf-8")


def _email(p: dict[str, Any], key: str) -> str | None:
    value = _text(p, key)
    if value is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
        raise _StripeError.invalid(
            f"Invalid email address: {value}", param=key, code="email_invalid"
        )
    return value


def _valid_tax_id(kind: str, value: str) -> bool:
    """The format checks Stripe makes on a tax ID's value ("Invalid value for eu_vat."); only
    the types Rapport sends are checked, the others pass."""
    if kind == "eu_vat":
        return (
            value[:2] in _EU_VAT_PREFIXES
            and re.fullmatch(r"[A-Z0-9+*]{2,13}", value[2:]) is not None
        )
    if kind == "gb_vat":
        return re.fullmatch(r"(GB|XI)?\d{9}(\d{3})?", value) is not None
    if kind == "ch_vat":
        return re.fullmatch(r"CHE-?\d{3}\.?\d{3}\.?\d{3} ?(MWST|TVA|IVA)", value) is not None
    if kind == "au_abn":
        return re.fullmatch(r"\d{11}", value) is not None
    return True


def _spread(items: list[dict[str, Any]], key: str, total: int) -> None:
    """Share ``total`` out over the line items in proportion to their subtotals (the last item
    takes the rounding), as Stripe does with a session-wide discount or tax."""
    base = sum(item["amount_subtotal"] for item in items)
    left = total
    for i, item in enumerate(items):
        share = (
            left
            if i == len(items) - 1
            else (total * item["amount_subtotal"] // base if base else 0)
        )
        item[key] = share
        left -= share


def _set_livemode(value: Any, livemode: bool) -> None:
    """``livemode`` on every Stripe object (a dict with ``object`` and ``livemode``) inside."""
    if isinstance(value, dict):
        if "object" in value and "livemode" in value:
            value["livemode"] = livemode
        for item in value.values():
            _set_livemode(item, livemode)
    elif isinstance(value, list):
        for item in value:
            _set_livemode(item, livemode)
