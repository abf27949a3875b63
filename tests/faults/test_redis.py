"""Redis goes away and comes back: pages are served, rate limits degrade, queued work waits.

The app queues its jobs in Redis for a `rapport worker` process. While Redis is down the app
keeps the jobs it could not queue in memory and queues them as soon as Redis answers again;
the worker, caught in the middle of a job by the outage, waits for Redis and runs what was
queued before and after. Neither process is restarted. Redis keeps an append-only file, as
a Redis holding a job queue must (see PrivateRedis).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import httpx2 as httpx
import pytest
import redis

from tests.conftest import SmtpInbox, make_user
from tests.faults.conftest import (
    PrivateRedis,
    Rapport,
    Stopwatch,
    csrf,
    recipients,
    send_inquiry,
    wait_until,
)

pytestmark = [pytest.mark.xdist_group("faults")]

SLUG = "trust-at-a-distance"


class SlowInbox(SmtpInbox):
    """An SMTP server that can take its time over a message, so that the worker is caught in
    the middle of a job; `receiving` is set when a message has begun to arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0
        self.receiving = threading.Event()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.receiving.set()
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def inbox() -> Iterator[SlowInbox]:
    box = SlowInbox()
    box.start()
    yield box
    box.stop()


def ask_for_link(client: httpx.Client, email: str) -> httpx.Response:
    return client.post(
        "/auth/magic-link", data={"email": email, "next": "/account", "csrftoken": csrf(client)}
    )


def buy_in_test_mode(client: httpx.Client, email: str) -> httpx.Response:
    """The test-mode checkout, as a visitor clicks through it; returns the success page."""
    form = client.get(f"/checkout/{SLUG}")
    found = re.search(r'name="checkout_key" value="([^"]+)"', form.text)
    assert form.status_code == 200 and found, form.text[:500]
    started = client.post(
        f"/checkout/{SLUG}",
        data={
            "checkout_key": found.group(1),
            "currency": "EUR",
            "email": email,
            "consent": "true",
            "csrftoken": csrf(client),
        },
    )
    assert started.status_code == 303, started.text[:500]
    paid = client.post(
        started.headers["location"], data={"action": "pay", "csrftoken": csrf(client)}
    )
    assert paid.status_code == 303, paid.text[:500]
    return client.get(paid.headers["location"])


def limit_keys(server: PrivateRedis) -> list[str]:
    """The rate-limit counters in Redis (the `limits` library's keys)."""
    client = redis.Redis.from_url(server.url(), socket_connect_timeout=2)
    try:
        return [k.decode() for k in client.scan_iter(match="LIMITS*")]
    finally:
        client.close()


def test_redis_outage_serves_pages_and_runs_queued_jobs_after(
    make_rapport: Callable[[dict[str, str]], Rapport],
    private_redis: PrivateRedis,
    inbox: SlowInbox,
) -> None:
    app = make_rapport(
        {
            "RAPPORT_REDIS_URL": private_redis.url(),
            "RAPPORT_SMTP_URL": inbox.url,
            "RAPPORT_ADMIN_EMAIL": "boss@example.com",
        }
    )
    make_user(app.engine(), "lena@example.com", name="Lena")
    app.serve()
    app.start_worker()
    clock = Stopwatch("redis")
    with app.client() as client:
        assert send_inquiry(client, "before@example.com").status_code == 303
        wait_until(lambda: len(inbox.messages) >= 2, timeout=60, what="the worker's first emails")
        assert limit_keys(private_redis)  # the limits are kept in Redis
        clock.mark("baseline: two inquiry emails sent by the worker")

        # Redis goes while the worker is in the middle of a job (a slow mail server holds it),
        # with the inquiry's second email still queued in Redis.
        inbox.delay = 3.0
        inbox.receiving.clear()
        assert send_inquiry(client, "midjob@example.com").status_code == 303
        wait_until(inbox.receiving.is_set, timeout=30, what="the worker to be sending a mail")
        private_redis.stop()
        inbox.delay = 0.0  # the mail in flight still takes its 3 s
        clock.mark("Redis stopped, the worker in the middle of a job")
        assert client.get("/healthz").status_code == 200
        for path in ("/", f"/products/{SLUG}", "/auth/login", "/inquiry"):
            assert client.get(path).status_code == 200, path
        ready = client.get("/readyz")
        # Still ready (it serves), but it names what is degraded.
        assert ready.status_code == 200 and ready.json()["degraded"] == ["redis"], ready.text
        assert ready.json()["checks"]["redis"].startswith("unreachable"), ready.json()
        # Rate limits fall back to this process's memory: still enforced, never a 500 or 503.
        assert ask_for_link(client, "lena@example.com").status_code == 303
        for _ in range(5):
            assert ask_for_link(client, "nobody@example.com").status_code == 303
        limited = ask_for_link(client, "nobody@example.com")
        assert limited.status_code == 429 and limited.headers["retry-after"]
        # Work that queues jobs is accepted; its jobs wait in the app until Redis is back.
        sent = send_inquiry(client, "during@example.com")
        assert sent.status_code == 303 and sent.headers["location"] == "/inquiry/thanks"
        success = buy_in_test_mode(client, "new-buyer@example.com")
        assert success.status_code == 200
        # Held: the six sign-in link jobs (known or not, each request queues one; the
        # refused seventh queues none), two inquiry mails and the purchase email.
        assert app.log_events().count("job.held") == 9, app.log_tail()
        assert "held in memory" in client.get("/readyz").json()["checks"]["redis"]
        # The mail the worker had in hand when Redis went is delivered.
        wait_until(lambda: len(inbox.messages) >= 3, timeout=15, what="the mails in flight")
        clock.mark("answers checked; nine jobs held in the app")

        private_redis.start()  # the same port and data; neither process is restarted
        clock.mark("Redis started again")
        wait_until(lambda: len(inbox.messages) >= 8, timeout=60, what="the waiting jobs' mails")
        clock.mark("the waiting jobs ran: all inquiry and purchase emails arrived")
        assert Counter(recipients(inbox)) == {
            "before@example.com": 1,
            "midjob@example.com": 1,
            "lena@example.com": 1,
            "during@example.com": 1,
            "new-buyer@example.com": 1,
            "boss@example.com": 3,  # one per inquiry
        }
        assert app.worker is not None and app.worker.poll() is None, app.log_tail("worker")
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok", ready.text
        # The limits are counted in Redis again: the address refused from memory above is
        # let through, and its counter is in Redis.
        wait_until(
            lambda: ask_for_link(client, "nobody@example.com").status_code == 303,
            timeout=30,
            what="rate limits back in Redis",
        )
        assert any("nobody@example.com" in key for key in limit_keys(private_redis))
        clock.mark("rate limits back in Redis")
    assert "job.failed" not in app.log_events("worker"), app.log_tail("worker")
