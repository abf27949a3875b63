"""The whole journey in a real browser, on the production column of every concern.

PostgreSQL, S3 (moto's server), Stripe (the fake API, its hosted checkout page), Redis (rate
limits and the job queue, run by a `rapport worker` process) and SMTP (a loopback server):
a visitor lands from a UTM-tagged link, buys a course and an e-book, signs in through the
emailed link, watches and reads until engaged, sends the pre-filled inquiry; the admin moves
it to won, and the dashboard shows one client from that source.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import date
from email import message_from_bytes, policy

import pytest

from app.integrations.s3 import S3Storage
from tests.conftest import (
    COURSES,
    ROOT,
    MotoServer,
    SmtpInbox,
    create_pg_database,
    drop_pg_database,
    free_port,
    missing,
    start_server,
)
from tests.test_browser import ARTIFACTS, browser, wait_js  # noqa: F401 - the shared fixture

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.s3,
    pytest.mark.xdist_group("browser"),
]

SHOTS = ARTIFACTS / "journey"
SOURCE = "journey-newsletter"
BUYER = "mira.koch@example.com"
ADMIN = "owner@example.com"
REDIS_URL = os.environ.get("RAPPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
PERSON = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/156.0 Safari/537.36"
)
VIDEOS = (
    "welcome",
    "first-call-limits",
    "linkedin-profile",
    "content-that-builds-trust",
    "existing-clients",
)


def _redis_up() -> bool:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False
    return True


def _run(args: list[str], env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "app", *args], env=env, check=True, cwd=ROOT, capture_output=True
    )


@pytest.fixture(scope="module")
def shop(
    moto: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, SmtpInbox]]:
    """The app on PostgreSQL + S3 + fake Stripe + Redis + SMTP, with a worker; its URL."""
    from tests.fakes.stripe_api import FakeStripe

    if not _redis_up():
        missing("Redis", f"start a Redis server or set RAPPORT_TEST_REDIS_URL (tried {REDIS_URL})")
    import redis

    # Rate-limit counters of an earlier run (same loopback address) would refuse this one.
    r = redis.Redis.from_url(REDIS_URL)
    stale = list(r.scan_iter("LIMITS*"))
    if stale:
        r.delete(*stale)
    try:
        database = create_pg_database()
    except Exception as exc:
        missing("PostgreSQL", f"{exc}; set RAPPORT_TEST_DATABASE_URL")
    bucket = f"rapport-journey-{uuid.uuid4().hex[:8]}"
    client = S3Storage(bucket=bucket, endpoint_url=moto.url).client
    client.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}
    )
    # As a deployment would: the browser reads media (video, the PDF) straight from the bucket.
    client.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": ["*"],
                    "AllowedMethods": ["GET", "HEAD"],
                    "AllowedHeaders": ["*"],
                }
            ]
        },
    )
    inbox = SmtpInbox()
    inbox.start()
    stripe = FakeStripe()
    stripe.start()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")},
        "RAPPORT_DATA_DIR": str(tmp_path_factory.mktemp("journey")),
        "RAPPORT_BASE_URL": f"http://127.0.0.1:{port}",
        "RAPPORT_DATABASE_URL": database,
        "RAPPORT_STORAGE": "s3",
        "RAPPORT_S3_BUCKET": bucket,
        "RAPPORT_S3_ENDPOINT_URL": moto.url,
        "RAPPORT_STRIPE_SECRET_KEY": "sk_test_rapport",
        "RAPPORT_STRIPE_WEBHOOK_SECRET": "whsec_journey",
        "RAPPORT_STRIPE_API_BASE": stripe.url,
        "RAPPORT_REDIS_URL": REDIS_URL,
        "RAPPORT_JOBS_QUEUE": f"journey-{uuid.uuid4().hex[:8]}",
        "RAPPORT_SMTP_URL": inbox.url,
        "RAPPORT_ADMIN_EMAIL": ADMIN,
        "RAPPORT_ACCESS_LOG": "false",
    }
    _run(["migrate"], env)
    for slug in ("trust-at-a-distance", "linkedin-playbook"):
        _run(["publish", str(COURSES / slug)], env)
    _run(["create-user", ADMIN, "--role", "admin"], env)
    # The worker first: it waits for jobs, and a server that does not start stops the test.
    worker = subprocess.Popen(
        [sys.executable, "-m", "app", "worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server = start_server(env, port, ready="/readyz")
    except RuntimeError:
        worker.kill()
        raise
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, inbox
    finally:
        for proc in (server, worker):
            proc.terminate()
        for proc in (server, worker):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        stripe.stop()
        inbox.stop()
        drop_pg_database(database)


def shot(page: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def mail_link(inbox: SmtpInbox, to: str, pattern: str, seen: int = 0) -> str:
    """The first link matching pattern in a mail to `to` (waiting for it to arrive)."""
    deadline = time.monotonic() + 90  # a loaded CI machine sends slowly
    while time.monotonic() < deadline:
        for raw in inbox.messages[seen:]:
            message = message_from_bytes(raw, policy=policy.default)
            if message["To"] != to:
                continue
            text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            found = re.search(pattern, text)
            if found:
                return found.group(0)
        time.sleep(0.2)
    raise AssertionError(f"no mail to {to} with {pattern!r}")


def buy(page: object, url: str, slug: str, step: str) -> None:
    """Checkout through the (fake) Stripe hosted page."""
    page.goto(f"{url}/products/{slug}")  # type: ignore[attr-defined]
    page.locator(f"a[href='/checkout/{slug}']").first.click()  # type: ignore[attr-defined]
    page.wait_for_url(f"**/checkout/{slug}")  # type: ignore[attr-defined]
    if page.locator("#email").count():  # type: ignore[attr-defined]
        page.fill("#email", BUYER)  # type: ignore[attr-defined]
    if page.locator("input[name=consent]").count():  # type: ignore[attr-defined]
        page.locator("input[name=consent]").check()  # type: ignore[attr-defined]
    shot(page, f"{step}-checkout")
    page.locator("form.panel button[type=submit]").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/pay/**")  # type: ignore[attr-defined]
    page.locator("button[value=pay]").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/checkout/success**")  # type: ignore[attr-defined]
    wait_js(page, "document.body.innerText.length > 0")
    shot(page, f"{step}-paid")


def test_from_a_newsletter_link_to_a_client(shop: tuple[str, SmtpInbox], browser: object) -> None:  # noqa: F811
    url, inbox = shop
    errors: list[str] = []
    # Headless chromium names itself in its user agent and would be counted as a bot.
    context = browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 1280, "height": 900}, locale="de-DE", user_agent=PERSON
    )
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))

    # 1. A visitor arrives from the newsletter and buys the course and the e-book.
    page.goto(f"{url}/?utm_source={SOURCE}&utm_medium=email&utm_campaign=november")
    shot(page, "01-landing")
    buy(page, url, "trust-at-a-distance", "02")
    buy(page, url, "linkedin-playbook", "03")
    context.close()

    # 2. On another day, another browser: the link from the purchase email signs in.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="de-DE")  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    link = mail_link(inbox, BUYER, r"http://127\.0\.0\.1:\d+/auth/magic\?\S+")
    page.goto(link)
    shot(page, "04-sign-in-link")
    page.locator("form button[type=submit]").first.click()
    page.wait_for_url("**/library")
    assert page.locator(".card").count() == 2
    shot(page, "05-library")

    # 3. Watch the videos (at 4x, the fastest rate that counts), read the checklists ...
    for key in VIDEOS:
        page.goto(f"{url}/learn/trust-at-a-distance/{key}")
        wait_js(page, "document.getElementById('player').readyState >= 1", 20.0)
        page.evaluate(
            "() => { const v = document.getElementById('player'); v.muted = true;"
            " v.playbackRate = 4; return v.play(); }"
        )
        wait_js(page, "document.getElementById('player').ended", 40.0)
        wait_js(page, "Number(document.querySelector('[data-events-url]').dataset.eventsSent) > 0")
        if key == "welcome":
            shot(page, "06-lesson")
    for slug, key in (
        ("trust-at-a-distance", "first-call-checklist"),
        ("trust-at-a-distance", "silent-inquiry"),
        ("linkedin-playbook", "sample-profile-as-first-meeting"),
    ):
        page.goto(f"{url}/learn/{slug}/{key}")
        page.locator("#lesson-end").scroll_into_view_if_needed()
        wait_js(page, "Number(document.querySelector('[data-events-url]').dataset.eventsSent) > 0")

    # ... and read the e-book, a few pages (a page counts after two seconds on screen).
    page.goto(f"{url}/learn/linkedin-playbook/playbook-pdf")
    page.wait_for_selector("#reader[data-ready=true]", timeout=20000)
    for number in (2, 3, 4):
        time.sleep(2.3)
        page.locator("#next-page").click()
        wait_js(page, f"document.getElementById('reader').dataset.page === '{number}'")
    time.sleep(2.3)
    shot(page, "07-reader")
    # Leaving the reader sends its last page; batches still in flight (kept in the browser
    # until the server confirms them) may land a moment after the library is shown.
    deadline = time.monotonic() + 30
    while True:
        page.goto(f"{url}/library")
        if page.locator("#invitation").is_visible() or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert page.locator("#invitation").is_visible()
    shot(page, "08-invitation")

    # 4. The pre-filled inquiry, with what was studied.
    page.locator("#invitation-link").click()
    page.wait_for_url("**/inquiry")
    assert page.locator("#email").input_value() == BUYER
    page.fill("#name", "Mira Koch")
    page.fill("#company_name", "Koch Antriebstechnik GmbH")
    page.fill(
        "#message",
        "Unser Vertrieb hat den Kurs durchgearbeitet. Können wir über LinkedIn sprechen?",
    )
    shot(page, "09-inquiry")
    page.locator("form.panel button[type=submit]").click()
    page.wait_for_url("**/inquiry/thanks")
    shot(page, "10-thanks")
    context.close()

    # 5. The admin hears of it by email, works it to "won" and sees the client on the dashboard.
    context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-US")  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    inquiry_link = mail_link(inbox, ADMIN, r"http://127\.0\.0\.1:\d+/admin/inquiries/\d+")
    seen = len(inbox.messages)
    page.goto(f"{url}/auth/login")
    page.fill("#email", ADMIN)
    page.get_by_role("button", name="Email me a sign-in link").click()
    page.wait_for_url("**/auth/check-email")
    page.goto(mail_link(inbox, ADMIN, r"http://127\.0\.0\.1:\d+/auth/magic\?\S+", seen))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/account")
    page.goto(inquiry_link)
    assert "Mira Koch" in page.content() and "engaged" in page.locator(".evidence").inner_text()
    for status in ("contacted", "call_scheduled", "proposal_sent", "won"):
        page.select_option("#status", status)
        page.get_by_role("button", name="Save").click()
        page.wait_for_selector(".flashes")
    shot(page, "11-won")
    today = date.today().isoformat()
    page.goto(f"{url}/admin?from={today}&to={today}")
    row = page.locator("#table-source tbody tr", has_text=SOURCE)
    assert row.count() == 1
    assert row.locator("td[data-stage=visitors]").inner_text().strip() == "1"
    assert row.locator("td[data-stage=buyers]").inner_text().strip() == "1"
    assert row.locator("td[data-stage=clients]").inner_text().strip() == "1"
    shot(page, "12-dashboard")
    assert errors == [], errors
    context.close()
