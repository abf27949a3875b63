"""The fake Stripe API against the official library: what the app's Stripe code will meet."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from tests.fakes.stripe_api import FakeStripe, decode_form, stripe_signature

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
    status, body = raw(fake, "GET", "/v1/customers", Authorization=f"Bearer {KEY}")
    assert status == 404
    assert body["error"]["message"].startswith("Unrecognized request URL (GET: /v1/customers)")


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
    assert event["api_version"] == stripe.api_version and event["livemode"] is False
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
