"""The fake Stripe API against the official library: what the app's Stripe code will meet."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe

from app.checkout.providers import CheckoutRequest
from app.config import Settings
from app.integrations.stripe_api import StripeProvider
from tests.fakes.stripe_api import (
    MINIMUM_CHARGE,
    WEBHOOK_API_VERSION,
    FakeStripe,
    decode_form,
    stripe_signature,
)
from tests.fakes.stripe_params import LIBRARY_OPTIONS, ParamError, fields, validate

KEY = "sk_test_rapport"
WHSEC = "whsec_test_rapport"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    server = FakeStripe(KEY)
    server.start()
    yield server
    server.stop()
    assert server.errors == []


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient(KEY, base_addresses={"api": fake.url}, max_network_retries=0)


def session_params(**extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "mode": "payment",
        "success_url": "https://shop.test/thanks?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://shop.test/cart",
        "client_reference_id": "order-42",
        "customer_email": "ada@example.com",
        "metadata": {"order_id": "42"},
        "payment_intent_data": {"metadata": {"order_id": "42"}},
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": "eur",
                    "unit_amount": 14900,
                    "product_data": {"name": "Pricing for experts"},
                },
            }
        ],
    }
    params.update(extra)
    return params


def create(client: stripe.StripeClient, key: str = "order-42", **extra: Any) -> Any:
    return client.v1.checkout.sessions.create(
        params=session_params(**extra),  # type: ignore[arg-type]
        options={"idempotency_key": key},
    )


def raw(fake: FakeStripe, method: str, path: str, **headers: str) -> tuple[int, dict[str, Any]]:
    """A request without the library, for what it would not send."""
    request = urllib.request.Request(f"{fake.url}{path}", method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


# Checkout Sessions -----------------------------------------------------------------------------


def test_create_session_as_stripe_does(client: stripe.StripeClient, fake: FakeStripe) -> None:
    session = create(client)

    assert session.object == "checkout.session"
    assert session.id.startswith("cs_test_") and len(session.id) == len("cs_test_") + 24
    assert session.url == f"{fake.url}/pay/{session.id}"
    assert session.status == "open" and session.payment_status == "unpaid"
    assert session.amount_total == session.amount_subtotal == 14900
    assert session.currency == "eur" and session.mode == "payment"
    assert session.success_url == f"https://shop.test/thanks?session_id={session.id}"
    assert session.cancel_url == "https://shop.test/cart"
    assert session.client_reference_id == "order-42"
    assert session.customer_email == "ada@example.com"
    assert session.metadata.to_dict() == {"order_id": "42"}
    assert session.payment_intent is None and session.customer_details is None
    assert session.livemode is False
    assert 24 * 3600 - 5 <= session.expires_at - session.created <= 24 * 3600
    assert "line_items" not in session  # only when expanded, as at Stripe
    assert set(session.to_dict()) >= {"total_details", "automatic_tax", "invoice_creation"}

    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/checkout/sessions")
    assert sent.form["line_items[0][price_data][product_data][name]"] == "Pricing for experts"
    assert sent.form["line_items[0][price_data][unit_amount]"] == "14900"
    assert sent.form["metadata[order_id]"] == "42"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["idempotency-key"] == "order-42"
    assert sent.headers["stripe-version"] == stripe.api_version
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"


def test_same_idempotency_key_replays_the_first_answer(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    first = create(client)
    again = create(client)

    assert again.id == first.id
    assert again.to_dict() == first.to_dict()
    replay = again.last_response
    assert replay is not None and first.last_response is not None
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Original-Request"] == first.last_response.request_id
    assert fake.created_count == 1 and len(fake.sessions) == 1
    assert create(client, key="order-43").id != first.id
    assert fake.created_count == 2


def test_same_key_other_params_is_an_idempotency_error(client: stripe.StripeClient) -> None:
    create(client)
    with pytest.raises(stripe.IdempotencyError) as caught:
        create(client, client_reference_id="order-99")
    assert caught.value.http_status == 400
    assert "same parameters" in str(caught.value.user_message)


def test_library_sends_an_idempotency_key_of_its_own(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    client.v1.checkout.sessions.create(params=session_params())  # type: ignore[arg-type]
    assert fake.requests[-1].headers["idempotency-key"]  # a random UUID per call


def test_missing_params_answer_400_with_param(client: stripe.StripeClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"mode": None}, "mode"),
        ({"success_url": None}, "success_url"),
        ({"line_items": None}, "line_items"),
        ({"line_items": [{"quantity": 1}]}, "line_items[0]"),
        (
            {"line_items": [{"quantity": 1, "price_data": {"unit_amount": 1}}]},
            "line_items[0][price_data][currency]",
        ),
        (
            {"line_items": [{"quantity": 1, "price_data": {"currency": "eur", "unit_amount": 1}}]},
            "line_items[0][price_data][product_data][name]",
        ),
        (
            {"line_items": [{"price_data": {"currency": "eur", "unit_amount": 1}}]},
            "line_items[0][quantity]",
        ),
        ({"customer_email": "not an email"}, "customer_email"),
    ]
    for i, (change, param) in enumerate(cases):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            create(client, key=f"bad-{i}", **change)
        assert caught.value.http_status == 400
        assert caught.value.param == param, change


def test_validation_failures_are_not_kept_for_the_key(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError):
        create(client, mode=None)
    assert create(client).status == "open"  # same key, now valid: Stripe runs it


def test_price_ids_come_from_the_fakes_price_table(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    fake.prices["price_book"] = {"unit_amount": 2500, "currency": "eur", "product_name": "Book"}
    session = create(client, line_items=[{"price": "price_book", "quantity": 2}])
    assert session.amount_total == 5000
    with pytest.raises(stripe.InvalidRequestError) as caught:
        create(client, key="other", line_items=[{"price": "price_nope", "quantity": 1}])
    assert caught.value.code == "resource_missing"


def test_retrieve_and_expand(client: stripe.StripeClient, fake: FakeStripe) -> None:
    created = create(client)
    session = client.v1.checkout.sessions.retrieve(created.id)
    assert session.to_dict() == created.to_dict()

    expanded = client.v1.checkout.sessions.retrieve(created.id, params={"expand": ["line_items"]})
    assert fake.requests[-1].query == {"expand[0]": "line_items"}
    assert expanded.line_items is not None
    (item,) = expanded.line_items.data
    assert (item.quantity, item.amount_total, item.description) == (1, 14900, "Pricing for experts")
    assert item.price is not None and item.price.unit_amount == 14900

    items = client.v1.checkout.sessions.line_items.list(created.id)
    assert [i.description for i in items.data] == ["Pricing for experts"]


def test_unknown_session_is_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.retrieve("cs_test_nope")
    error = caught.value
    assert error.http_status == 404
    assert (error.code, error.param) == ("resource_missing", "session")
    assert error.user_message == "No such checkout.session: 'cs_test_nope'"
    assert error.request_id and error.request_id.startswith("req_")


def test_complete_then_retrieve(client: stripe.StripeClient, fake: FakeStripe) -> None:
    created = create(client)
    fake.complete(
        created.id, name="Ada Lovelace", business_name="Analytical Ltd", tax_id="DE123456789"
    )

    session = client.v1.checkout.sessions.retrieve(created.id)
    assert session.status == "complete" and session.payment_status == "paid"
    assert session.payment_intent is not None and str(session.payment_intent).startswith("pi_")
    details = session.customer_details
    assert details is not None
    assert details.email == "ada@example.com"  # the session's customer_email
    assert (details.name, details.business_name) == ("Ada Lovelace", "Analytical Ltd")
    assert details.tax_ids is not None
    assert [t.to_dict() for t in details.tax_ids] == [{"type": "eu_vat", "value": "DE123456789"}]
    assert session.url is None  # only while open

    intent = client.v1.payment_intents.retrieve(str(session.payment_intent))
    assert (intent.status, intent.amount, intent.amount_received) == ("succeeded", 14900, 14900)
    assert intent.metadata.to_dict() == {"order_id": "42"}  # from payment_intent_data
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    assert charge.to_dict() == fake.charge_for(created.id)
    assert (charge.amount, charge.currency, charge.paid, charge.refunded) == (
        14900,
        "eur",
        True,
        False,
    )
    assert charge.receipt_url == f"{fake.url}/receipts/{charge.id}"
    assert charge.billing_details.email == "ada@example.com"

    deep = client.v1.checkout.sessions.retrieve(
        created.id, params={"expand": ["payment_intent.latest_charge"]}
    )
    assert deep.payment_intent is not None and not isinstance(deep.payment_intent, str)
    latest = deep.payment_intent.latest_charge
    assert latest is not None and not isinstance(latest, str) and latest.id == charge.id


def test_replay_returns_the_original_answer_even_after_completion(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    created = create(client)
    fake.complete(created.id)
    assert create(client).status == "open"  # Stripe replays the stored response verbatim


def test_expire(client: stripe.StripeClient, fake: FakeStripe) -> None:
    session = create(client)
    assert fake.expire(session.id)["status"] == "expired"
    assert client.v1.checkout.sessions.retrieve(session.id).status == "expired"
    with pytest.raises(ValueError, match="expired"):
        fake.complete(session.id)

    other = create(client, key="other")
    assert client.v1.checkout.sessions.expire(other.id).status == "expired"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(other.id)


def test_sepa_session_is_unpaid_until_settled(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    session = create(client)
    fake.complete(session.id, payment_status="unpaid")
    assert client.v1.checkout.sessions.retrieve(session.id).payment_status == "unpaid"
    assert fake.charge_for(session.id)["status"] == "pending"
    assert fake.settle(session.id)["payment_status"] == "paid"
    assert fake.charge_for(session.id)["status"] == "succeeded"


# Refunds ---------------------------------------------------------------------------------------


def test_full_refund_marks_the_charge_refunded(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    session = fake.complete(create(client).id)

    refund = client.v1.refunds.create(
        params={"payment_intent": session["payment_intent"]}, options={"idempotency_key": "r1"}
    )
    assert refund.object == "refund" and refund.id.startswith("re_")
    assert (refund.amount, refund.currency, refund.status) == (14900, "eur", "succeeded")
    assert refund.payment_intent == session["payment_intent"]
    charge = fake.charge_for(session["id"])
    assert refund.charge == charge["id"]
    assert charge["refunded"] is True and charge["amount_refunded"] == 14900
    assert [r["id"] for r in fake.refunds] == [refund.id]

    again = client.v1.refunds.create(
        params={"payment_intent": session["payment_intent"]}, options={"idempotency_key": "r1"}
    )
    assert again.id == refund.id and len(fake.refunds) == 1
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": session["payment_intent"]})
    assert caught.value.code == "charge_already_refunded"


def test_partial_refunds(client: stripe.StripeClient, fake: FakeStripe) -> None:
    session = fake.complete(create(client).id)
    pi = session["payment_intent"]
    assert client.v1.refunds.create(params={"payment_intent": pi, "amount": 4900}).amount == 4900
    assert fake.charge_for(session["id"])["refunded"] is False
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": pi, "amount": 20000})
    assert caught.value.param == "amount"
    assert client.v1.refunds.create(params={"payment_intent": pi}).amount == 10000
    charge = client.v1.charges.retrieve(fake.charge_for(session["id"])["id"])
    assert (charge.refunded, charge.amount_refunded) == (True, 14900)


def test_refund_of_unknown_payment_intent(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": "pi_nope"})
    assert caught.value.http_status == 400
    assert (caught.value.code, caught.value.param) == ("resource_missing", "payment_intent")


def test_disputed_charge_cannot_be_refunded(client: stripe.StripeClient, fake: FakeStripe) -> None:
    session = fake.complete(create(client).id)
    dispute = fake.dispute_for(session["id"])
    assert dispute["id"].startswith("dp_") and dispute["object"] == "dispute"
    assert (dispute["status"], dispute["reason"], dispute["amount"]) == (
        "needs_response",
        "fraudulent",
        14900,
    )
    assert dispute["charge"] == fake.charge_for(session["id"])["id"]
    assert dispute["payment_intent"] == session["payment_intent"]
    assert fake.dispute_for(session["id"]) == dispute
    assert client.v1.disputes.retrieve(dispute["id"]).status == "needs_response"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": session["payment_intent"]})
    assert caught.value.code == "charge_disputed"


# Failures ----------------------------------------------------------------------------------------


def test_wrong_or_missing_key_is_401(fake: FakeStripe) -> None:
    wrong = stripe.StripeClient("sk_test_other", base_addresses={"api": fake.url})
    with pytest.raises(stripe.AuthenticationError) as caught:
        wrong.v1.checkout.sessions.retrieve("cs_test_x")
    assert caught.value.http_status == 401
    assert "Invalid API Key provided" in str(caught.value.user_message)

    status, body = raw(fake, "GET", "/v1/checkout/sessions/cs_test_x")
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
    assert "did not provide an API key" in body["error"]["message"]


def test_unknown_url_is_404(fake: FakeStripe) -> None:
    status, body = raw(fake, "GET", "/v1/products", Authorization=f"Bearer {KEY}")
    assert status == 404
    assert body["error"]["message"].startswith("Unrecognized request URL (GET: /v1/products)")


def test_down_is_503_api_error(client: stripe.StripeClient, fake: FakeStripe) -> None:
    fake.down = True
    with pytest.raises(stripe.APIError) as caught:
        create(client)
    assert caught.value.http_status == 503
    assert fake.created_count == 0
    assert len(fake.requests) == 1  # max_network_retries=0: one try


def test_library_retries_5xx_with_the_same_idempotency_key(
    fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.01)  # backoff is ≥ 0.5 s a try
    retrying = stripe.StripeClient(KEY, base_addresses={"api": fake.url}, max_network_retries=2)
    fake.fail_next = 2
    session = create(retrying, key="retry-me")
    assert session.status == "open" and fake.created_count == 1
    assert [r.headers["idempotency-key"] for r in fake.requests] == ["retry-me"] * 3
    fake.down = True
    with pytest.raises(stripe.APIError):
        retrying.v1.checkout.sessions.retrieve(session.id)
    assert len(fake.requests) == 3 + 3  # 1 try + max_network_retries


def test_client_timeout_then_retry_gets_the_session_made_meanwhile(fake: FakeStripe) -> None:
    impatient = stripe.StripeClient(
        KEY,
        base_addresses={"api": fake.url},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=0.2),
    )
    fake.delay = 0.5
    with pytest.raises(stripe.APIConnectionError) as caught:
        create(impatient)
    assert caught.value.should_retry is True
    deadline = time.monotonic() + 5
    while fake.created_count == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.created_count == 1  # Stripe carried it out although the client gave up
    fake.delay = 0
    again = create(impatient)
    assert again.id in fake.sessions and fake.created_count == 1


def test_stopped_server_is_a_connection_error() -> None:
    server = FakeStripe()
    server.start()
    url = server.url
    server.stop()
    gone = stripe.StripeClient(KEY, base_addresses={"api": url}, max_network_retries=0)
    with pytest.raises(stripe.APIConnectionError):
        gone.v1.checkout.sessions.retrieve("cs_test_x")


def test_parallel_clients(fake: FakeStripe) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        client = stripe.StripeClient(KEY, base_addresses={"api": fake.url}, max_network_retries=0)
        try:
            for i in range(5):
                session = create(client, key=f"k-{n}-{i}")
                create(client, key=f"k-{n}-{i}")
                create(client, key="shared")
                client.v1.checkout.sessions.retrieve(session.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert fake.created_count == 8 * 5 + 1 == len(fake.sessions)
    assert len(fake.requests) == 8 * 5 * 4


def test_server_is_quiet(
    client: stripe.StripeClient, fake: FakeStripe, capfd: pytest.CaptureFixture[str]
) -> None:
    create(client)
    fake.down = True
    with pytest.raises(stripe.APIError):
        create(client, key="x")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


# Hosted pages ----------------------------------------------------------------------------------


def test_pay_page_completes_and_redirects(client: stripe.StripeClient, fake: FakeStripe) -> None:
    session = create(client)
    with urllib.request.urlopen(session.url, timeout=5) as page:
        assert "149.00 EUR" in page.read().decode()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    form = b"action=pay&email=grace%40example.com"
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(urllib.request.Request(session.url, data=form, method="POST"), timeout=5)
    with caught.value as response:
        assert response.code == 303
        assert response.headers["Location"] == session.success_url
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done.payment_status == "paid"
    assert done.customer_details is not None
    assert done.customer_details.email == "grace@example.com"


# Webhooks ----------------------------------------------------------------------------------------


def test_signature_is_accepted_by_the_library(fake: FakeStripe) -> None:
    event = fake.event("checkout.session.completed", {"id": "cs_test_1", "object": "x"})
    assert event["id"].startswith("evt_") and event["object"] == "event"
    assert event["api_version"] == WEBHOOK_API_VERSION and event["livemode"] is False
    payload = json.dumps(event).encode()

    parsed = stripe.Webhook.construct_event(payload, stripe_signature(payload, WHSEC), WHSEC)
    assert parsed.id == event["id"] and parsed.type == "checkout.session.completed"
    assert parsed.data.object["id"] == "cs_test_1"

    header = stripe_signature(payload, WHSEC, timestamp=1_700_000_000)
    expected = stripe.WebhookSignature.generate_signature_header(
        payload.decode(), WHSEC, timestamp=1_700_000_000
    )
    assert header == expected


def test_signature_is_refused_with_another_secret_or_when_old(fake: FakeStripe) -> None:
    payload = json.dumps(fake.event("charge.refunded", {"id": "ch_1"})).encode()
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stripe_signature(payload, "whsec_other"), WHSEC)
    old = stripe_signature(payload, WHSEC, timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, old, WHSEC)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload + b" ", stripe_signature(payload, WHSEC), WHSEC)


def test_event_takes_given_id_and_created(fake: FakeStripe) -> None:
    event = fake.event("charge.dispute.created", {"id": "dp_1"}, event_id="evt_1", created=5)
    assert (event["id"], event["created"], event["data"]) == (
        "evt_1",
        5,
        {"object": {"id": "dp_1"}},
    )
    assert set(event) == {
        "id",
        "object",
        "api_version",
        "created",
        "data",
        "livemode",
        "pending_webhooks",
        "request",
        "type",
    }


# The decoder -------------------------------------------------------------------------------------


def test_decode_form() -> None:
    pairs = [
        ("mode", "payment"),
        ("line_items[0][price_data][currency]", "eur"),
        ("line_items[0][quantity]", "1"),
        ("line_items[1][price]", "price_1"),
        ("metadata[order_id]", "42"),
        ("metadata[0]", "zero"),
        ("expand[0]", "line_items"),
        ("expand[1]", "payment_intent"),
        ("tags[]", "a"),
        ("tags[]", "b"),
    ]
    assert decode_form(pairs) == {
        "mode": "payment",
        "line_items": [{"price_data": {"currency": "eur"}, "quantity": "1"}, {"price": "price_1"}],
        "metadata": {"order_id": "42", "0": "zero"},
        "expand": ["line_items", "payment_intent"],
        "tags": ["a", "b"],
    }


# Strict as Stripe: parameters against the library's own types --------------------------------


def refused(call: Callable[[], object], *, status: int = 400) -> stripe.InvalidRequestError:
    """The error Stripe answers ``call`` with, checked for Stripe's shape."""
    with pytest.raises(stripe.InvalidRequestError) as caught:
        call()
    error = caught.value
    assert error.http_status == status
    body = body_of(error)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == error.user_message
    return error


def body_of(error: stripe.StripeError) -> dict[str, Any]:
    assert isinstance(error.json_body, dict)
    return error.json_body


def test_a_misspelt_parameter_is_unknown(client: stripe.StripeClient, fake: FakeStripe) -> None:
    params = session_params()
    params["sucess_url"] = params.pop("success_url")
    error = refused(lambda: create(client, **{"success_url": None, **params}))
    assert error.user_message == "Received unknown parameter: sucess_url"
    assert (error.param, error.code) == ("sucess_url", "parameter_unknown")

    nested = session_params()
    nested["line_items"][0]["price_data"]["product_data"]["nmae"] = "typo"
    error = refused(lambda: create(client, key="nested", **nested))
    param = "line_items[0][price_data][product_data][nmae]"
    assert error.user_message == f"Received unknown parameter: {param}"
    assert error.param == param
    assert fake.created_count == 0


def test_the_librarys_own_options_are_not_parameters(client: stripe.StripeClient) -> None:
    # RequestOptions fields sit in every *Params TypedDict; in a body Stripe refuses them.
    assert {"api_key", "idempotency_key", "stripe_account", "headers"} <= LIBRARY_OPTIONS
    assert not LIBRARY_OPTIONS & set(fields(stripe.params.checkout.SessionCreateParams))
    error = refused(lambda: create(client, idempotency_key="k"))
    assert error.user_message == "Received unknown parameter: idempotency_key"
    assert "expand" in fields(stripe.params.checkout.SessionCreateParams)


@pytest.mark.parametrize(
    ("change", "param", "message"),
    [
        (
            {"locale": "xx"},
            "locale",
            "Invalid locale: must be one of auto, bg, cs, da, de, el, en, en-GB, es, es-419, et, "
            "fi, fil, fr, fr-CA, hi-IN, hr, hu, id, it, ja, ko, lt, lv, ms, mt, nb, nl, pl, pt, "
            "pt-BR, ro, ru, sk, sl, sv, th, tr, vi, zh, zh-HK, or zh-TW",
        ),
        (
            {"billing_address_collection": "always"},
            "billing_address_collection",
            "Invalid billing_address_collection: must be one of auto or required",
        ),
        (
            {"mode": "buy"},
            "mode",
            "Invalid mode: must be one of payment, setup, or subscription",
        ),
        (
            {"customer_update": {"name": "always"}},
            "customer_update[name]",
            "Invalid customer_update[name]: must be one of auto or never",
        ),
    ],
)
def test_a_value_outside_the_enum_is_refused(
    client: stripe.StripeClient, change: dict[str, Any], param: str, message: str
) -> None:
    error = refused(lambda: create(client, **change))
    assert (error.param, error.user_message) == (param, message)


@pytest.mark.parametrize(
    ("change", "param", "message"),
    [
        # a hash where an array is expected
        (
            {"line_items": {"quantity": 1, "price": "price_1"}},
            "line_items",
            "Invalid array",
        ),
        # a scalar where a hash is expected
        ({"metadata": "order-42"}, "metadata", "Invalid hash"),
        ({"adaptive_pricing": "false"}, "adaptive_pricing", "Invalid hash"),
        # an array where a hash is expected
        ({"tax_id_collection": ["true"]}, "tax_id_collection", "Invalid hash"),
        # a hash where a string is expected
        (
            {"client_reference_id": {"id": "42"}},
            "client_reference_id",
            'Invalid string: {"id"=>"42"}',
        ),
    ],
)
def test_wrong_nesting_is_refused(
    client: stripe.StripeClient, change: dict[str, Any], param: str, message: str
) -> None:
    error = refused(lambda: create(client, **change))
    assert (error.param, error.user_message) == (param, message)


def test_wrong_scalar_types_are_refused(client: stripe.StripeClient) -> None:
    items = session_params()["line_items"]
    items[0]["quantity"] = "two"
    error = refused(lambda: create(client, line_items=items))
    assert (error.param, error.code) == ("line_items[0][quantity]", "parameter_invalid_integer")
    assert error.user_message == "Invalid integer: two"

    items[0]["quantity"] = 1
    items[0]["price_data"]["unit_amount"] = "14.90"
    error = refused(lambda: create(client, key="amount", line_items=items))
    assert error.param == "line_items[0][price_data][unit_amount]"
    assert error.user_message == "Invalid integer: 14.90"

    error = refused(lambda: create(client, key="bool", allow_promotion_codes="yes"))
    assert (error.param, error.user_message) == ("allow_promotion_codes", "Invalid boolean: yes")
    error = refused(lambda: create(client, key="bool2", invoice_creation={"enabled": 1}))
    assert (error.param, error.user_message) == ("invoice_creation[enabled]", "Invalid boolean: 1")

    error = refused(lambda: create(client, key="empty", customer_email=""))
    assert error.param == "customer_email"
    assert error.user_message == (
        "You passed an empty string for 'customer_email'. We assume empty values are an attempt "
        "to unset a parameter; however 'customer_email' cannot be unset. You should remove "
        "'customer_email' from your request or supply a non-empty value."
    )


def test_the_apps_own_additions_pass(client: stripe.StripeClient) -> None:
    session = create(
        client,
        allow_promotion_codes=True,
        invoice_creation={"enabled": True},
        locale="de",
        adaptive_pricing={"enabled": False},
        billing_address_collection="required",
        tax_id_collection={"enabled": True},
        automatic_tax={"enabled": True},
    )
    assert session.adaptive_pricing is not None and session.adaptive_pricing.enabled is False
    assert session.locale == "de" and session.allow_promotion_codes is True
    assert session.tax_id_collection is not None and session.tax_id_collection.enabled is True
    assert session.automatic_tax.enabled is True


def test_retrieve_and_list_params_are_checked_too(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    session = create(client)
    bad: dict[str, Any] = {"expand": ["line_items"], "include": "all"}
    error = refused(lambda: client.v1.checkout.sessions.retrieve(session.id, params=bad))  # type: ignore[arg-type]
    assert (error.param, error.user_message) == ("include", "Received unknown parameter: include")
    bad = {"limit": "ten"}
    error = refused(lambda: client.v1.checkout.sessions.line_items.list(session.id, params=bad))  # type: ignore[arg-type]
    assert (error.param, error.user_message) == ("limit", "Invalid integer: ten")
    assert client.v1.checkout.sessions.line_items.list(session.id, params={"limit": 10}).data
    fake.complete(session.id)
    intent = str(fake.sessions[session.id]["payment_intent"])
    bad = {"expand": "latest_charge"}
    error = refused(lambda: client.v1.payment_intents.retrieve(intent, params=bad))  # type: ignore[arg-type]
    assert (error.param, error.user_message) == ("expand", "Invalid array")


def test_the_walker_is_one_function_for_any_params_type() -> None:
    validate(stripe.params.RefundCreateParams, {"payment_intent": "pi_1", "amount": "100"})
    validate(stripe.params.CustomerCreateParams, {"address": "", "tax_exempt": ""})  # emptyable
    with pytest.raises(ParamError) as caught:
        validate(stripe.params.CustomerCreateParams, {"tax_id_data": [{"type": "eu_vat"}]})
    assert caught.value.param == "tax_id_data[0][value]"
    assert caught.value.message == "Missing required param: tax_id_data[0][value]."
    assert caught.value.code == "parameter_missing"


# Strict as Stripe: minimum charge amounts -------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "amount", "message"),
    [
        ("eur", 10, "The Checkout Session's total amount due must add up to at least €0.50 eur"),
        ("eur", 49, "The Checkout Session's total amount due must add up to at least €0.50 eur"),
        ("usd", 49, "The Checkout Session's total amount due must add up to at least $0.50 usd"),
        ("gbp", 29, "The Checkout Session's total amount due must add up to at least £0.30 gbp"),
        ("hkd", 399, "The Checkout Session's total amount due must add up to at least $4.00 hkd"),
        ("jpy", 49, "The Checkout Session's total amount due must add up to at least ¥50 jpy"),
    ],
)
def test_a_session_under_the_minimum_charge_is_refused(
    client: stripe.StripeClient, fake: FakeStripe, currency: str, amount: int, message: str
) -> None:
    items = session_params()["line_items"]
    items[0]["price_data"].update(currency=currency, unit_amount=amount)
    error = refused(lambda: create(client, line_items=items))
    assert error.user_message == message
    assert (error.param, error.code) == ("line_items", "amount_too_small")
    assert fake.created_count == 0


@pytest.mark.parametrize(("currency", "amount"), [("eur", 50), ("gbp", 30), ("usd", 50)])
def test_the_minimum_itself_is_accepted(
    client: stripe.StripeClient, currency: str, amount: int
) -> None:
    assert MINIMUM_CHARGE[currency] == amount
    items = session_params()["line_items"]
    items[0]["price_data"].update(currency=currency, unit_amount=amount)
    assert create(client, line_items=items).amount_total == amount


def test_the_minimum_is_on_the_total_of_all_line_items(client: stripe.StripeClient) -> None:
    item = session_params()["line_items"][0]
    item["price_data"]["unit_amount"] = 20
    item["quantity"] = 3  # 3 x 0.20 EUR = 0.60 EUR
    assert create(client, line_items=[item]).amount_total == 60


# Strict as Stripe: refunds ----------------------------------------------------------------------


def test_a_refund_with_an_unknown_parameter_is_refused(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    session = fake.complete(create(client).id)
    pi = session["payment_intent"]
    bad: dict[str, Any] = {"payment_intent": pi, "amout": 100}
    error = refused(lambda: client.v1.refunds.create(params=bad))  # type: ignore[arg-type]
    assert (error.param, error.code) == ("amout", "parameter_unknown")
    assert error.user_message == "Received unknown parameter: amout"
    error = refused(
        lambda: client.v1.refunds.create(params={"payment_intent": pi, "reason": "changed_mind"})
    )
    assert error.param == "reason"
    assert error.user_message == (
        "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer"
    )
    assert fake.refunds == [] and fake.charge_for(session["id"])["amount_refunded"] == 0


# Customers --------------------------------------------------------------------------------------


def business_customer(client: stripe.StripeClient, **extra: Any) -> Any:
    params: dict[str, Any] = {
        "name": "Muster GmbH",
        "email": "einkauf@muster.example",
        "preferred_locales": ["de"],
        "metadata": {"order_number": "R-2026-00042"},
        "tax_id_data": [{"type": "eu_vat", "value": "DE123456789"}],
        **extra,
    }
    return client.v1.customers.create(params=params)  # type: ignore[arg-type]


def test_create_and_retrieve_a_customer(client: stripe.StripeClient, fake: FakeStripe) -> None:
    customer = business_customer(client, address={"country": "DE", "city": "Berlin"})
    assert customer.object == "customer" and customer.id.startswith("cus_")
    assert (customer.name, customer.email) == ("Muster GmbH", "einkauf@muster.example")
    assert customer.preferred_locales == ["de"] and customer.livemode is False
    assert customer.metadata.to_dict() == {"order_number": "R-2026-00042"}
    assert customer.address is not None and customer.address.country == "DE"
    assert "tax_ids" not in customer  # only when expanded, as at Stripe
    again = client.v1.customers.retrieve(customer.id, params={"expand": ["tax_ids"]})
    assert again.tax_ids is not None
    (tax_id,) = again.tax_ids.data
    assert (tax_id.type, tax_id.value, tax_id.customer) == ("eu_vat", "DE123456789", customer.id)
    assert set(fake.customers) == {customer.id}
    error = refused(lambda: client.v1.customers.retrieve("cus_nope"), status=404)
    assert (error.code, error.user_message) == ("resource_missing", "No such customer: 'cus_nope'")


def test_a_customers_tax_id_is_checked(client: stripe.StripeClient) -> None:
    error = refused(
        lambda: business_customer(client, tax_id_data=[{"type": "vat", "value": "DE123456789"}])
    )
    assert error.param == "tax_id_data[0][type]"
    assert error.user_message.startswith("Invalid tax_id_data[0][type]: must be one of ad_nrt,")
    error = refused(
        lambda: business_customer(client, tax_id_data=[{"type": "eu_vat", "value": "DE 123"}])
    )
    assert (error.param, error.code) == ("tax_id_data[0][value]", "tax_id_invalid")
    assert error.user_message == "Invalid value for eu_vat."
    error = refused(lambda: business_customer(client, preferred_locales="de"))
    assert (error.param, error.user_message) == ("preferred_locales", "Invalid array")


def test_customer_and_customer_email_together_are_refused(client: stripe.StripeClient) -> None:
    customer = business_customer(client)
    error = refused(lambda: create(client, customer=customer.id))  # customer_email is set
    assert error.user_message == (
        "You may only specify one of these parameters: customer, customer_email."
    )
    assert error.param is None
    error = refused(lambda: create(client, key="nope", customer="cus_nope", customer_email=None))
    assert (error.code, error.param) == ("resource_missing", "customer")


def test_customer_update_needs_a_customer(client: stripe.StripeClient) -> None:
    error = refused(lambda: create(client, customer_update={"name": "auto"}))
    assert error.user_message == (
        "`customer_update` can only be used with `customer` or `customer_account`."
    )


def test_tax_id_collection_for_an_existing_customer_needs_customer_update_name(
    client: stripe.StripeClient,
) -> None:
    customer = business_customer(client)
    base = {"customer": customer.id, "customer_email": None, "tax_id_collection": {"enabled": True}}
    error = refused(lambda: create(client, **base))
    assert error.user_message == (
        "Tax ID collection requires updating business name on the customer. To enable tax ID "
        "collection for an existing customer, please set `customer_update[name]` to `auto`."
    )
    error = refused(lambda: create(client, key="k2", customer_update={"address": "auto"}, **base))
    assert "`customer_update[name]` to `auto`" in error.user_message
    session = create(client, key="k3", customer_update={"name": "auto"}, **base)
    assert session.customer == customer.id and session.customer_email is None


def test_automatic_tax_for_a_customer_without_address_needs_customer_update_address(
    client: stripe.StripeClient,
) -> None:
    customer = business_customer(client)
    base = {"customer": customer.id, "customer_email": None, "automatic_tax": {"enabled": True}}
    error = refused(lambda: create(client, **base))
    assert error.code == "customer_tax_location_invalid"
    assert error.user_message.startswith(
        "Automatic tax calculation in Checkout requires a valid address on the Customer."
    )
    assert create(client, key="k2", customer_update={"address": "auto"}, **base).id
    located = business_customer(client, address={"country": "DE"})
    assert create(client, key="k3", **(base | {"customer": located.id})).id


def test_a_customers_session_completes_with_the_customers_email_and_tax_id(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    customer = business_customer(client)
    session = create(
        client,
        customer=customer.id,
        customer_email=None,
        tax_id_collection={"enabled": True},
        customer_update={"name": "auto", "address": "auto"},
    )
    done = fake.complete(session.id, email="someone@else.example", business_name="Muster AG")
    details = done["customer_details"]
    assert details["email"] == "einkauf@muster.example"  # the customer's, not typed again
    assert details["tax_ids"] == [{"type": "eu_vat", "value": "DE123456789"}]
    assert done["customer"] == customer.id
    assert fake.charge_for(session.id)["customer"] == customer.id
    assert fake.customers[customer.id]["name"] == "Muster AG"  # customer_update[name]=auto


# Idempotency: saved 500s ------------------------------------------------------------------------


def test_a_saved_500_is_replayed_under_the_same_key(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    fake.fail_next_500 = 1
    with pytest.raises(stripe.APIError) as caught:
        create(client, key="k500")
    first = caught.value
    assert first.http_status == 500 and fake.created_count == 0
    assert body_of(first)["error"]["type"] == "api_error"
    assert first.headers is not None and first.headers["Stripe-Should-Retry"] == "false"
    assert fake.fail_next_500 == 0

    with pytest.raises(stripe.APIError) as caught:
        create(client, key="k500")  # the switch is off now; Stripe replays what it saved
    again = caught.value
    assert again.http_status == 500 and body_of(again) == body_of(first)
    assert again.headers is not None and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Original-Request"] == first.request_id
    assert fake.created_count == 0

    with pytest.raises(stripe.IdempotencyError):
        create(client, key="k500", client_reference_id="order-43")
    assert create(client, key="k501").status == "open"  # a fresh key gets through
    assert fake.created_count == 1


def test_the_library_does_not_retry_a_saved_500(
    fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.01)
    retrying = stripe.StripeClient(KEY, base_addresses={"api": fake.url}, max_network_retries=2)
    fake.fail_next_500 = 1
    with pytest.raises(stripe.APIError):
        create(retrying, key="once")
    assert len(fake.requests) == 1  # Stripe-Should-Retry: false


def test_requests_refused_by_validation_are_not_saved_nor_fail(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    fake.fail_next_500 = 1
    refused(lambda: create(client, locale="xx"))
    assert fake.fail_next_500 == 1  # validation comes first: the 500 is still to come
    with pytest.raises(stripe.APIError):
        create(client)  # same key, valid parameters now: not an idempotency_error
    with pytest.raises(stripe.APIError):
        create(client)


def test_a_500_on_a_get_is_not_saved(client: stripe.StripeClient, fake: FakeStripe) -> None:
    session = create(client)
    fake.fail_next_500 = 1
    with pytest.raises(stripe.APIError) as caught:
        client.v1.checkout.sessions.retrieve(session.id)
    assert caught.value.http_status == 500
    assert client.v1.checkout.sessions.retrieve(session.id).id == session.id


def test_fail_next_is_still_connection_level(client: stripe.StripeClient, fake: FakeStripe) -> None:
    fake.fail_next = 1
    with pytest.raises(stripe.APIError) as caught:
        create(client)
    assert caught.value.http_status == 503
    assert create(client).status == "open"  # nothing was saved under the key


# Promotion codes and discounts ------------------------------------------------------------------


def test_a_full_discount_needs_no_payment(client: stripe.StripeClient, fake: FakeStripe) -> None:
    session = create(client, allow_promotion_codes=True)
    done = fake.complete(session.id, discount_percent=100, promotion_code="FREE")
    assert done["payment_status"] == "no_payment_required" and done["status"] == "complete"
    assert done["payment_intent"] is None
    assert (done["amount_subtotal"], done["amount_total"]) == (14900, 0)
    assert done["total_details"] == {
        "amount_discount": 14900,
        "amount_shipping": 0,
        "amount_tax": 0,
    }
    assert fake.charges == {} and fake.payment_intents == {}
    (discount,) = done["discounts"]
    assert discount["promotion_code"].startswith("promo_") and discount["coupon"] in fake.coupons
    with pytest.raises(ValueError, match="no payment"):
        fake.charge_for(session.id)

    got = client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["discounts.promotion_code", "line_items"]}
    )
    assert got.payment_intent is None and got.payment_status == "no_payment_required"
    assert got.discounts is not None
    promo = got.discounts[0].promotion_code
    assert promo is not None and not isinstance(promo, str)
    assert (promo.code, promo.promotion.coupon) == ("FREE", discount["coupon"])
    assert got.line_items is not None
    (item,) = got.line_items.data
    assert (item.amount_subtotal, item.amount_discount, item.amount_total) == (14900, 14900, 0)


def test_a_partial_discount_with_tax_charges_the_discounted_amount(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    session = create(client, allow_promotion_codes=True)
    done = fake.complete(session.id, discount_percent=20, promotion_code="LAUNCH20", tax=2264)
    assert (done["amount_subtotal"], done["amount_total"]) == (14900, 14900 - 2980 + 2264)
    assert done["total_details"]["amount_discount"] == 2980
    assert done["total_details"]["amount_tax"] == 2264
    assert done["payment_status"] == "paid"
    intent = fake.payment_intents[done["payment_intent"]]
    charge = fake.charge_for(session.id)
    assert intent["amount"] == charge["amount"] == done["amount_total"] == 14184
    refund = client.v1.refunds.create(params={"payment_intent": done["payment_intent"]})
    assert refund.amount == 14184  # a full refund is of what was charged

    got = client.v1.checkout.sessions.retrieve(
        session.id, params={"expand": ["total_details.breakdown"]}
    )
    breakdown = got.total_details.breakdown if got.total_details else None
    assert breakdown is not None
    assert [d.amount for d in breakdown.discounts] == [2980]
    assert [t.amount for t in breakdown.taxes] == [2264]
    assert breakdown.discounts[0].discount.promotion_code == done["discounts"][0]["promotion_code"]


def test_the_same_code_twice_is_the_same_promotion_code(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    one = fake.complete(create(client, allow_promotion_codes=True).id, discount_percent=10)
    two = fake.complete(create(client, key="b", allow_promotion_codes=True).id, discount_percent=10)
    assert one["discounts"] == two["discounts"]
    (promo,) = fake.promotion_codes.values()
    assert (promo["code"], promo["times_redeemed"]) == ("SAVE10", 2)


def test_promotion_codes_only_where_the_session_allows_them(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    session = create(client)  # no allow_promotion_codes
    with pytest.raises(ValueError, match="allow_promotion_codes"):
        fake.complete(session.id, discount_percent=50, promotion_code="HALF")
    assert fake.sessions[session.id]["status"] == "open"
    with pytest.raises(ValueError, match="discount_percent"):
        fake.complete(session.id, promotion_code="HALF")


def test_a_code_that_leaves_less_than_the_minimum_is_refused(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    items = session_params()["line_items"]
    items[0]["price_data"]["unit_amount"] = 100
    session = create(client, allow_promotion_codes=True, line_items=items)
    with pytest.raises(ValueError, match=re.escape("€0.50 eur")):
        fake.complete(session.id, discount_percent=60)
    assert fake.complete(session.id, discount_percent=50)["amount_total"] == 50


# Disputes ---------------------------------------------------------------------------------------


def test_a_chargeback_withdraws_funds_and_is_won_or_lost(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    won = fake.complete(create(client).id)
    dispute = fake.dispute_for(won["id"])
    assert dispute["payment_method_details"]["card"]["case_type"] == "chargeback"
    assert dispute["is_charge_refundable"] is False
    (withdrawal,) = dispute["balance_transactions"]
    assert (withdrawal["amount"], withdrawal["type"], withdrawal["reporting_category"]) == (
        -14900,
        "adjustment",
        "dispute",
    )
    assert withdrawal["net"] == -14900 - withdrawal["fee"]
    closed = fake.close_dispute(dispute["id"], won=True)
    assert closed["status"] == "won"
    assert [t["amount"] for t in closed["balance_transactions"]] == [-14900, 14900]
    assert client.v1.disputes.retrieve(dispute["id"]).status == "won"
    assert fake.charge_for(won["id"])["disputed"] is True  # it was disputed, and stays so
    with pytest.raises(ValueError, match="already closed"):
        fake.close_dispute(dispute["id"], won=False)

    lost = fake.complete(create(client, key="other").id)
    dispute = fake.dispute_for(lost["id"], reason="product_not_received")
    closed = fake.close_dispute(dispute["id"], won=False)
    assert (closed["status"], closed["reason"]) == ("lost", "product_not_received")
    assert [t["amount"] for t in closed["balance_transactions"]] == [-14900]


def test_an_inquiry_withdraws_nothing_and_can_still_be_refunded(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    session = fake.complete(create(client).id)
    inquiry = fake.dispute_for(session["id"], status="warning_needs_response")
    assert inquiry["status"] == "warning_needs_response"
    assert inquiry["payment_method_details"]["card"]["case_type"] == "inquiry"
    assert inquiry["balance_transactions"] == [] and inquiry["is_charge_refundable"] is True
    with pytest.raises(ValueError, match="escalate"):
        fake.close_dispute(inquiry["id"], won=False)
    assert fake.close_dispute(inquiry["id"], won=True)["status"] == "warning_closed"
    refund = client.v1.refunds.create(params={"payment_intent": session["payment_intent"]})
    assert refund.status == "succeeded"


def test_an_escalated_inquiry_is_a_chargeback(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    session = fake.complete(create(client).id)
    inquiry = fake.dispute_for(session["id"], status="warning_needs_response")
    chargeback = fake.escalate_dispute(inquiry["id"])
    assert chargeback["status"] == "needs_response" and len(chargeback["balance_transactions"]) == 1
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": session["payment_intent"]})
    assert caught.value.code == "charge_disputed"
    assert fake.close_dispute(inquiry["id"], won=False)["status"] == "lost"


# Refunds that fail ------------------------------------------------------------------------------


def test_a_failed_refund_gives_the_charge_its_amount_back(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    session = fake.complete(create(client).id)
    refund = client.v1.refunds.create(params={"payment_intent": session["payment_intent"]})
    assert fake.charge_for(session["id"])["refunded"] is True
    failed = fake.fail_refund(refund.id, status="failed")
    assert failed["status"] == "failed" and failed["failure_reason"] == "expired_or_canceled_card"
    assert failed["failure_balance_transaction"].startswith("txn_")
    charge = fake.charge_for(session["id"])
    assert (charge["amount_refunded"], charge["refunded"]) == (0, False)
    assert charge["refunds"]["data"][0]["status"] == "failed"
    assert client.v1.refunds.retrieve(refund.id).status == "failed"
    with pytest.raises(ValueError, match="already failed"):
        fake.fail_refund(refund.id)
    # The money is back on the charge: it can be refunded again.
    assert (
        client.v1.refunds.create(params={"payment_intent": session["payment_intent"]}).amount
        == 14900
    )


def test_a_canceled_partial_refund(client: stripe.StripeClient, fake: FakeStripe) -> None:
    session = fake.complete(create(client).id)
    pi = session["payment_intent"]
    first = client.v1.refunds.create(params={"payment_intent": pi, "amount": 4900})
    client.v1.refunds.create(params={"payment_intent": pi, "amount": 1000})
    canceled = fake.fail_refund(first.id, status="canceled")
    assert canceled["status"] == "canceled" and "failure_reason" not in canceled
    charge = fake.charge_for(session["id"])
    assert (charge["amount_refunded"], charge["refunded"]) == (1000, False)


# Events -----------------------------------------------------------------------------------------


def test_events_carry_the_endpoints_api_version(fake: FakeStripe) -> None:
    assert stripe.api_version != WEBHOOK_API_VERSION  # the endpoint was made long ago
    assert fake.event("charge.refunded", {"id": "ch_1"})["api_version"] == WEBHOOK_API_VERSION
    pinned = FakeStripe(KEY, webhook_api_version="2025-03-31.basil")
    assert pinned.event("charge.refunded", {"id": "ch_1"})["api_version"] == "2025-03-31.basil"
    pinned.webhook_api_version = stripe.api_version
    assert pinned.event("charge.refunded", {"id": "ch_1"})["api_version"] == stripe.api_version


def test_events_and_their_objects_carry_livemode(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    session = create(client, allow_promotion_codes=True)
    done = fake.complete(session.id)
    test_event = fake.event("checkout.session.completed", done)
    assert test_event["livemode"] is False and test_event["data"]["object"]["livemode"] is False
    live = fake.event("checkout.session.completed", done, livemode=True)
    assert live["livemode"] is True and live["data"]["object"]["livemode"] is True
    assert done["livemode"] is False  # the object passed in is left alone
    charge = fake.event("charge.refunded", fake.charge_for(session.id), livemode=True)
    assert charge["data"]["object"]["livemode"] is True
    payload = json.dumps(live).encode()
    parsed = stripe.Webhook.construct_event(payload, stripe_signature(payload, WHSEC), WHSEC)
    assert parsed.livemode is True


# Payment Links: sessions the app did not create -------------------------------------------------


def test_a_foreign_session(client: stripe.StripeClient, fake: FakeStripe) -> None:
    session = fake.foreign_session(client_reference_id="R-2026-00015")
    assert session["payment_link"].startswith("plink_")
    assert (session["amount_total"], session["currency"]) == (100, "eur")
    assert session["client_reference_id"] == "R-2026-00015" and session["metadata"] == {}
    assert session["status"] == "complete" and session["payment_status"] == "paid"
    assert fake.charge_for(session["id"])["amount"] == 100
    assert fake.created_count == 0  # not created through the API by the app
    assert (
        client.v1.checkout.sessions.retrieve(session["id"]).payment_link == session["payment_link"]
    )
    with pytest.raises(ValueError, match=re.escape("€0.50 eur")):
        fake.foreign_session(amount=10)


def test_a_payment_link_session_made_through_the_api(
    client: stripe.StripeClient, fake: FakeStripe
) -> None:
    # What a test can do itself: the same account, 1 EUR, someone else's client_reference_id.
    link = client.v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "client_reference_id": "R-2026-00015",
            "success_url": "https://example.com/thanks",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": "eur",
                        "unit_amount": 100,
                        "product_data": {"name": "Tip"},
                    },
                }
            ],
        }
    )
    assert fake.complete(link.id)["amount_total"] == 100


# The app's own requests pass --------------------------------------------------------------------


def provider(fake: FakeStripe, **settings: Any) -> StripeProvider:
    return StripeProvider(
        Settings(
            base_url="http://testserver",
            env="test",
            secret_key="test-secret-key-with-enough-length-0123456789",
            database_url="sqlite://",
            stripe_secret_key=KEY,
            stripe_api_base=fake.url,
            stripe_webhook_secret=WHSEC,
            _env_file=None,
            **settings,
        )
    )


def checkout_request(**extra: Any) -> CheckoutRequest:
    fields_: dict[str, Any] = {
        "order_number": "R-2026-00042",
        "order_id": 42,
        "checkout_key": "k-42",
        "product_name": "LinkedIn playbook",
        "amount": 2900,
        "currency": "EUR",
        "success_url": "https://shop.test/checkout/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://shop.test/checkout/linkedin-playbook",
        "customer_email": "lena@example.com",
        "locale": "de",
        "business": False,
        **extra,
    }
    return CheckoutRequest(**fields_)


BUSINESS = {"business": True, "company_name": "Muster GmbH", "vat_id": "DE123456789"}


@pytest.mark.parametrize("tax_id_collection", [True, False])
@pytest.mark.parametrize("automatic_tax", [False, True])
@pytest.mark.parametrize("buyer", ["consumer", "business"])
def test_the_apps_checkout_requests_pass(
    fake: FakeStripe, tax_id_collection: bool, automatic_tax: bool, buyer: str
) -> None:
    app = provider(
        fake, stripe_tax_id_collection=tax_id_collection, stripe_automatic_tax=automatic_tax
    )
    request = checkout_request(**(BUSINESS if buyer == "business" else {}))
    session_id, url = app.create_checkout(request)
    assert url == f"{fake.url}/pay/{session_id}"
    session = fake.sessions[session_id]
    assert (session["amount_total"], session["currency"]) == (2900, "eur")
    assert session["client_reference_id"] == "R-2026-00042"
    if buyer == "business":
        assert session["customer"] in fake.customers and session["customer_email"] is None
    else:
        assert session["customer"] is None and session["customer_email"] == "lena@example.com"
    details = app.retrieve(session_id)
    assert details.status == "open" and details.amount_total == 2900
    fake.complete(session_id, business_name="Muster GmbH" if buyer == "business" else None)
    assert app.retrieve(session_id).payment_status == "paid"
    assert fake.errors == []


@pytest.mark.parametrize("locale", ["en", "de", "fr"])
def test_the_apps_locales_pass(fake: FakeStripe, locale: str) -> None:
    session_id, _ = provider(fake).create_checkout(checkout_request(locale=locale))
    assert fake.sessions[session_id]["locale"] in ("en", "de", "auto")


def test_the_apps_refund_request_passes(client: stripe.StripeClient, fake: FakeStripe) -> None:
    app = provider(fake)
    session_id, _ = app.create_checkout(checkout_request())
    done = fake.complete(session_id)
    info = app.refund(payment_intent=done["payment_intent"], idempotency_key="refund-R-2026-00042")
    assert (info.amount, info.status) == (2900, "succeeded")
    assert [r["id"] for r in fake.refunds] == [info.refund_id]
