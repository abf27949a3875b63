"""The catalog in a real browser: Debian's chromium driven by Playwright."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    COURSES,
    ROOT,
    MotoServer,
    SmtpInbox,
    free_port,
    make_bucket,
    missing,
    start_server,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "tests" / "artifacts"
ADMIN = "admin@example.com"  # an admin account on the live server; sign in with sign_in_by_mail
AUTHOR = "ada@example.com"  # the author (role author, not admin)

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


@pytest.fixture(scope="module")
def inbox() -> Iterator[SmtpInbox]:
    box = SmtpInbox()
    box.start()
    yield box
    box.stop()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory, inbox: SmtpInbox) -> Iterator[str]:
    """`rapport serve` in its own process, on a fresh SQLite database with the demo published,
    sending its email to the loopback SMTP server of this test."""
    tmp = tmp_path_factory.mktemp("live")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")},
        "RAPPORT_DATA_DIR": str(tmp),
        "RAPPORT_BASE_URL": f"http://127.0.0.1:{port}",
        "RAPPORT_SMTP_URL": inbox.url,
        "RAPPORT_ACCESS_LOG": "false",
    }
    subprocess.run(
        [sys.executable, "-m", "app", "migrate"], env=env, check=True, cwd=ROOT, capture_output=True
    )
    for folder in sorted(p for p in COURSES.iterdir() if (p / "course.toml").exists()):
        subprocess.run(
            [sys.executable, "-m", "app", "publish", str(folder)],
            env=env,
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
    for user in (
        ["lena@example.com", "--name", "Lena"],
        [ADMIN, "--role", "admin"],
        [AUTHOR, "--role", "author", "--name", "Ada"],
    ):
        subprocess.run(
            [sys.executable, "-m", "app", "create-user", *user],
            env=env,
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
    proc = start_server(env, port)
    url = f"http://127.0.0.1:{port}"
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        missing(
            "Debian's chromium",
            "run `sudo apt-get install -y chromium` (make test does this as root)",
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def test_catalog_in_chromium(live_server: str, browser: object) -> None:
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")  # type: ignore[attr-defined]
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_server + "/")
    cards = page.locator(".card")
    assert cards.count() == 2
    assert page.locator("h1").inner_text() == "Build trust before the first call."
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "catalog.png"), full_page=True)

    page.get_by_role("link", name="Trust at a Distance").first.click()
    page.wait_for_url("**/products/trust-at-a-distance")
    assert page.locator(".outline-module").count() == 3
    assert page.locator(".free").count() >= 2
    page.screenshot(path=str(ARTIFACTS / "product.png"), full_page=True)

    page.get_by_role("link", name="DE", exact=True).click()
    page.wait_for_url("**/products/trust-at-a-distance")
    assert page.locator("html").get_attribute("lang") == "de"
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(ARTIFACTS / "product-de-mobile.png"), full_page=True)
    assert errors == [], errors  # the pages work under the Content-Security-Policy


def test_sign_in_with_a_link_from_the_mailbox(
    live_server: str, browser: object, inbox: SmtpInbox
) -> None:
    import re
    from email import message_from_bytes, policy

    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_server + "/account")
    page.wait_for_url("**/auth/login?next=%2Faccount")
    before = len(inbox.messages)
    page.fill("#email", "lena@example.com")
    page.get_by_role("button", name="Email me a sign-in link").click()
    page.wait_for_url("**/auth/check-email")
    assert "Check your inbox" in page.content()
    raw = inbox.wait_for(before + 1)[before]
    message = message_from_bytes(raw, policy=policy.default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    link = re.search(r"(http://127\.0\.0\.1:\d+/auth/magic\?\S+)", text)
    assert link, text
    page.goto(link.group(1))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/account")
    assert page.locator("h1").inner_text() == "Your account"
    assert "lena@example.com" in page.content()
    page.screenshot(path=str(ARTIFACTS / "account.png"), full_page=True)
    # The catalog now greets the signed-in person, not a cached stranger's page.
    page.goto(live_server + "/")
    assert page.locator(".account-nav").inner_text().startswith("Lena")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(live_server + "/")
    assert "Sign in" in page.locator(".account-nav").inner_text()
    assert errors == [], errors
    context.close()


def test_test_mode_purchase_from_catalog_to_library(
    live_server: str, browser: object, inbox: SmtpInbox
) -> None:
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="de-DE")  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_server + "/?utm_source=linkedin&utm_campaign=launch")
    page.locator(".card-link", has_text="Playbook").click()
    page.wait_for_url("**/products/linkedin-playbook")
    page.locator("a[href='/checkout/linkedin-playbook']").click()
    page.wait_for_url("**/checkout/linkedin-playbook")
    assert page.locator(".test-banner").is_visible()
    page.fill("#email", "neu@example.com")
    page.locator("input[name=consent]").check()
    page.screenshot(path=str(ARTIFACTS / "checkout.png"), full_page=True)
    page.locator("form.panel button[type=submit]").click()
    page.wait_for_url("**/checkout/test/**")
    assert page.locator(".test-banner").is_visible()
    page.screenshot(path=str(ARTIFACTS / "test-payment.png"), full_page=True)
    page.locator("button[value=pay]").click()
    page.wait_for_url("**/checkout/success**")
    follow_mailed_link(page, lambda: list(inbox.messages), "neu@example.com")
    assert page.locator(".card").count() == 1
    assert "Playbook" in page.locator(".card").inner_text()
    page.screenshot(path=str(ARTIFACTS / "library.png"), full_page=True)
    assert errors == [], errors
    context.close()


def wait_js(page: object, expression: str, timeout: float = 10.0) -> None:
    """Poll a JavaScript expression; Playwright's wait_for_function would need eval(), which
    the pages' Content-Security-Policy rightly forbids."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({expression})"):  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.1)


def test_lesson_plays_and_resumes_and_reader_turns_pages(
    live_server: str, browser: object, inbox: SmtpInbox
) -> None:
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    # A free preview plays for anyone.
    page.goto(live_server + "/learn/trust-at-a-distance/welcome")
    wait_js(page, "document.getElementById('player').readyState >= 1")
    page.evaluate(
        "() => { const v = document.getElementById('player'); v.muted = true; return v.play(); }"
    )
    wait_js(page, "document.getElementById('player').readyState >= 3")
    wait_js(page, "document.getElementById('player').currentTime > 2.5", 15.0)
    # the demo videos have HLS renditions (cut at publish): played natively or with hls.js
    assert page.evaluate("() => document.getElementById('player').dataset.playing") in (
        "hls",
        "hls.js",
    )
    page.evaluate("() => document.getElementById('player').pause()")
    saved = page.evaluate("() => document.getElementById('player').currentTime")
    page.screenshot(path=str(ARTIFACTS / "lesson.png"), full_page=True)
    page.reload()
    wait_js(page, "document.getElementById('player').readyState >= 1")
    wait_js(page, "document.getElementById('player').currentTime > 1")
    resumed = page.evaluate("() => document.getElementById('player').currentTime")
    assert abs(resumed - saved) < 1.5, (saved, resumed)
    assert page.locator("#resume-note").is_visible()

    # Buy the e-book (test mode), open it from the library, turn a page.
    page.goto(live_server + "/checkout/linkedin-playbook")
    page.fill("#email", "reader@example.com")
    page.locator("input[name=consent]").check()
    page.locator("form.panel button[type=submit]").click()
    page.wait_for_url("**/checkout/test/**")
    page.locator("button[value=pay]").click()
    page.wait_for_url("**/checkout/success**")
    follow_mailed_link(page, lambda: list(inbox.messages), "reader@example.com")
    page.locator(".card-link").first.click()
    page.wait_for_url("**/learn/linkedin-playbook/**")
    pdf_lesson = page.locator(".outline-side a", has_text="Playbook").first
    pdf_lesson.click()
    page.wait_for_selector("#reader[data-ready=true]", timeout=15000)
    wait_js(page, "document.getElementById('reader').dataset.page === '1'")
    page.locator("#next-page").click()
    wait_js(page, "document.getElementById('reader').dataset.page === '2'")
    assert page.locator("#page-num").inner_text() == "2"
    page.screenshot(path=str(ARTIFACTS / "reader.png"), full_page=True)
    assert errors == [], errors
    context.close()


def follow_mailed_link(page: object, messages: Callable[[], list[bytes]], email: str) -> None:
    """Open the newest sign-in link mailed to email (the purchase email carries one) and press
    its button: the checkout alone signs no one in."""
    import re
    from email import message_from_bytes, policy

    deadline = time.monotonic() + 20
    link = None
    while link is None:
        for raw in reversed(messages()):
            message = message_from_bytes(raw, policy=policy.default)
            if message["To"] == email:
                text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
                link = re.search(r"(http://127\.0\.0\.1:\d+/auth/magic\?\S+)", text)
                break
        if link is None:
            assert time.monotonic() < deadline, f"no sign-in link mailed to {email}"
            time.sleep(0.2)
    page.goto(link.group(1))  # type: ignore[attr-defined]
    page.locator("form[action='/auth/magic'] button[type=submit]").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/library")  # type: ignore[attr-defined]


def sign_in_by_mail(page: object, live_server: str, inbox: SmtpInbox, email: str) -> None:
    """Sign the page's browser in as email through a link that arrives by (loopback) mail."""
    import re
    from email import message_from_bytes, policy

    page.goto(live_server + "/auth/login")  # type: ignore[attr-defined]
    before = len(inbox.messages)
    page.fill("#email", email)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Email me a sign-in link").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/auth/check-email")  # type: ignore[attr-defined]
    for raw in reversed(inbox.wait_for(before + 1)[before:]):
        message = message_from_bytes(raw, policy=policy.default)
        if message["To"] == email:
            break
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    link = re.search(r"(http://127\.0\.0\.1:\d+/auth/magic\?\S+)", text)
    assert link, text
    page.goto(link.group(1))  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/account")  # type: ignore[attr-defined]


def test_author_edits_a_product_and_reorders_its_modules(
    live_server: str, browser: object, inbox: SmtpInbox
) -> None:
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in_by_mail(page, live_server, inbox, AUTHOR)
    page.get_by_role("link", name="Author", exact=True).click()
    page.wait_for_url("**/author")
    assert page.locator("h1").inner_text() == "Your products"
    page.screenshot(path=str(ARTIFACTS / "author-products.png"), full_page=True)
    page.locator("a.row-title", has_text="Trust at a Distance").click()
    page.wait_for_url("**/author/products/*")
    modules = page.locator(".outline-edit > li h3")
    first, second = modules.nth(0).inner_text(), modules.nth(1).inner_text()
    # The arrows move the first module down; the order is saved through the JSON API.
    page.locator(".outline-edit > li").first.locator("header .move-down").click()
    page.wait_for_selector(".reorder-status.ok")
    page.reload()
    assert page.locator(".outline-edit > li h3").nth(0).inner_text() == second
    page.locator(".outline-edit > li").first.locator("header .move-down").click()
    page.wait_for_selector(".reorder-status.ok")
    page.reload()
    assert page.locator(".outline-edit > li h3").nth(0).inner_text() == first
    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")  # a reload keeps the scroll position
    page.screenshot(path=str(ARTIFACTS / "author-product.png"), full_page=True)

    # A price that is not a number is refused beside its field, and nothing is saved.
    editor = page.url
    page.fill("#prices_EUR", "-5")
    page.get_by_role("button", name="Save prices").click()
    assert page.locator("#prices_EUR-error").is_visible()
    assert page.locator("#prices_EUR").get_attribute("aria-invalid") == "true"
    page.screenshot(path=str(ARTIFACTS / "author-product-refused.png"), full_page=True)

    page.goto(editor)
    page.get_by_role("link", name="DE", exact=True).click()
    page.wait_for_url(editor)
    assert page.locator("html").get_attribute("lang") == "de"
    assert "Module und Lektionen" in page.content()
    assert page.locator("#prices_EUR").input_value() == "149.00"
    page.screenshot(path=str(ARTIFACTS / "author-product-de.png"), full_page=True)
    page.locator(".lesson-title a").first.click()
    page.wait_for_url("**/author/lessons/*")
    assert page.locator("#upload").get_attribute("data-lesson-id")
    page.screenshot(path=str(ARTIFACTS / "author-lesson-de.png"), full_page=True)
    page.locator(".crumbs a[href^='/author/modules/']").click()
    page.wait_for_url("**/author/modules/*")
    assert page.locator(".lesson-row").count() == 3
    page.screenshot(path=str(ARTIFACTS / "author-module-de.png"), full_page=True)
    # The refused form's 422 is logged by the browser as a failed load; nothing else may be.
    assert [e for e in errors if "status of 422" not in e] == [], errors
    context.close()


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`rapport serve` on a database holding the dashboard's known story; (url, sign-in link)."""
    import re

    from app.db import make_engine
    from tests.admin.story import build

    tmp = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")},
        "RAPPORT_DATA_DIR": str(tmp),
        "RAPPORT_BASE_URL": f"http://127.0.0.1:{port}",
        "RAPPORT_ACCESS_LOG": "false",
    }

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "app", *args],
            env=env,
            check=True,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        return done.stdout

    cli("migrate")
    engine = make_engine(f"sqlite:///{tmp / 'rapport.db'}")
    build(engine)
    engine.dispose()
    cli("create-user", "admin@example.com", "--role", "admin", "--name", "Ada Admin")
    link = re.search(r"(http://\S+/auth/magic\?token=\S+)", cli("login-link", "admin@example.com"))
    assert link, "no sign-in link printed"
    proc = start_server(env, port)
    url = f"http://127.0.0.1:{port}"
    yield url, link.group(1)
    proc.terminate()
    proc.wait(timeout=10)


# Non-white pixels of a canvas, read back from its bitmap.
INKED_PIXELS = """(id) => {
  const c = document.getElementById(id);
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let inked = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 0 && (data[i] < 240 || data[i + 1] < 240 || data[i + 2] < 240)) inked++;
  }
  return inked;
}"""


def test_dashboard_draws_its_charts(dashboard_server: tuple[str, str], browser: object) -> None:
    url, link = dashboard_server
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(link)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/account")
    page.get_by_role("link", name="Admin", exact=True).click()
    page.wait_for_url("**/admin")
    page.fill("#from", "2026-03-01")
    page.fill("#to", "2026-04-30")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/admin?from=2026-03-01&to=2026-04-30")
    wait_js(page, "document.body.dataset.chartsDrawn === 'true'")
    canvases = ["chart-funnel", "chart-product", "chart-cohort", "chart-source", "chart-company"]
    for canvas in canvases:
        assert page.locator(f"#{canvas}").get_attribute("data-drawn") == "true", canvas
        assert page.evaluate(INKED_PIXELS, canvas) > 500, canvas
        png = page.evaluate(f"() => document.getElementById('{canvas}').toDataURL().length")
        assert png > 3000, canvas  # a blank canvas encodes to a few hundred bytes
    stages = page.locator("#funnel-stages .kpi-value").all_inner_texts()
    assert stages == ["40", "12", "6", "3", "1"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    page.get_by_role("link", name="DE", exact=True).click()
    page.wait_for_url("**/admin")  # the language switch keeps the path, not the query
    page.goto(url + "/admin?from=2026-03-01&to=2026-04-30")
    wait_js(page, "document.body.dataset.chartsDrawn === 'true'")
    assert page.locator("h1").inner_text() == "Vom Besucher zum Kunden"
    assert page.evaluate(INKED_PIXELS, "chart-funnel") > 500
    page.screenshot(path=str(ARTIFACTS / "dashboard-de.png"), full_page=True)

    page.locator(".admin-nav a[href='/admin/leads']").click()
    page.wait_for_url("**/admin/leads")
    assert page.locator("#buyer-leads tbody tr").count() == 5
    page.screenshot(path=str(ARTIFACTS / "leads-de.png"), full_page=True)
    page.locator("#buyer-leads a[href^='/admin/buyers/']").first.click()
    page.wait_for_url("**/admin/buyers/*")
    page.get_by_role("link", name="EN", exact=True).click()
    page.wait_for_url("**/admin/buyers/*")
    page.screenshot(path=str(ARTIFACTS / "buyer.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(url + "/admin?from=2026-03-01&to=2026-04-30")
    wait_js(page, "document.body.dataset.chartsDrawn === 'true'")
    page.screenshot(path=str(ARTIFACTS / "dashboard-mobile.png"), full_page=True)
    assert errors == [], errors
    context.close()


@pytest.fixture(scope="module")
def s3_server(
    tmp_path_factory: pytest.TempPathFactory, moto: MotoServer
) -> Iterator[tuple[str, dict[str, str]]]:
    """`rapport serve` on S3 storage: a bucket on moto's server whose CORS rule admits the
    site, the demo course published into it, 5 MiB upload parts. (url, environment)."""
    from app.integrations.s3 import S3Storage

    tmp = tmp_path_factory.mktemp("live-s3")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bucket = make_bucket(moto.url)
    S3Storage(bucket=bucket, endpoint_url=moto.url).client.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": [url],
                    "AllowedMethods": ["GET", "HEAD", "PUT"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag", "Content-Length", "Content-Range"],
                    "MaxAgeSeconds": 3600,
                }
            ]
        },
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")},
        "RAPPORT_DATA_DIR": str(tmp),
        "RAPPORT_BASE_URL": url,
        "RAPPORT_ACCESS_LOG": "false",
        "RAPPORT_STORAGE": "s3",
        "RAPPORT_S3_BUCKET": bucket,
        "RAPPORT_S3_ENDPOINT_URL": moto.url,
        "RAPPORT_UPLOAD_PART_MIB": "5",
    }
    for args in (
        ["migrate"],
        ["publish", str(COURSES / "trust-at-a-distance")],
        ["create-user", AUTHOR, "--role", "author", "--name", "Alex Author"],
    ):
        subprocess.run(
            [sys.executable, "-m", "app", *args], env=env, check=True, cwd=ROOT, capture_output=True
        )
    proc = start_server(env, port)
    yield url, env
    proc.terminate()
    proc.wait(timeout=10)


def test_author_uploads_a_video_resumes_after_a_drop_and_a_buyer_plays_it(
    s3_server: tuple[str, dict[str, str]],
    browser: object,
    tmp_path: Path,
) -> None:
    import re
    import sqlite3

    from tests.authoring.test_uploads import make_mp4

    url, env = s3_server
    video = make_mp4(tmp_path / "new-take.mp4", seconds=12, bitrate="16M")
    parts = -(-video.stat().st_size // (5 * 1024 * 1024))
    assert parts >= 4, parts
    db = Path(env["RAPPORT_DATA_DIR"]) / "rapport.db"
    with sqlite3.connect(db) as conn:
        (lesson_id,) = conn.execute(
            "SELECT id FROM lesson WHERE key = 'first-call-limits'"
        ).fetchone()
    link = subprocess.run(
        [sys.executable, "-m", "app", "login-link", AUTHOR],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = re.search(r"(http://\S+/auth/magic\?token=\S+)", link)
    assert found, link
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="en-US")  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(found.group(1))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/account")
    page.goto(f"{url}/author/lessons/{lesson_id}")
    page.wait_for_selector("#upload-current .file-box")

    # The connection drops after two parts: every later part PUT to the bucket fails.
    stored: list[str] = []

    def flaky(route: object) -> None:
        request = route.request  # type: ignore[attr-defined]
        if request.method != "PUT" or len(stored) < 2:
            if request.method == "PUT":
                stored.append(request.url)
            route.continue_()  # type: ignore[attr-defined]
        else:
            route.abort("connectionreset")  # type: ignore[attr-defined]

    page.route("**/*partNumber=*", flaky)
    page.set_input_files("#upload-file", str(video))
    message = page.locator("#upload-message")
    message.wait_for(state="visible", timeout=60000)
    assert message.inner_text().startswith("The upload stopped:"), message.inner_text()
    assert page.locator("#upload-resume").is_visible()  # after 3 tries per part
    assert page.evaluate("() => document.getElementById('upload-progress').value") > 0
    page.screenshot(path=str(ARTIFACTS / "upload-stopped.png"), full_page=True)
    page.unroute("**/*partNumber=*")
    # The browser logs each aborted part; nothing else may have failed (the CSP included).
    assert [e for e in errors if "net::ERR_CONNECTION_RESET" not in e] == [], errors
    errors.clear()

    # A reload: the page knows the upload; choosing the same file sends only missing parts.
    page.reload()
    message.wait_for(state="visible")
    assert "was interrupted at" in message.inner_text(), message.inner_text()
    resumed: list[str] = []
    page.on("request", lambda r: resumed.append(r.url) if r.method == "PUT" else None)
    page.set_input_files("#upload-file", str(video))
    page.wait_for_selector("#upload[data-state=ready]", timeout=120000)
    assert "Ready: new-take.mp4" in page.locator("#upload-line").inner_text()
    assert len(resumed) == parts - 2, (parts, resumed)
    assert not set(resumed) & set(stored)
    current = page.locator("#upload-current").inner_text()
    assert "new-take.mp4" in current and "Duration 0:12" in current, current
    assert page.locator("#upload-current img.upload-poster").count() == 1
    page.screenshot(path=str(ARTIFACTS / "upload-ready.png"), full_page=True)
    assert errors == [], errors
    context.close()

    # A buyer buys the course (test mode) and plays the new video.
    buyer = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")  # type: ignore[attr-defined]
    page = buyer.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url + "/checkout/trust-at-a-distance")
    page.fill("#email", "viewer@example.com")
    page.locator("input[name=consent]").check()
    page.locator("form.panel button[type=submit]").click()
    page.wait_for_url("**/checkout/test/**")
    page.locator("button[value=pay]").click()
    page.wait_for_url("**/checkout/success**")
    outbox = Path(env["RAPPORT_DATA_DIR"]) / "outbox"
    follow_mailed_link(
        page, lambda: [p.read_bytes() for p in sorted(outbox.glob("*.eml"))], "viewer@example.com"
    )
    page.goto(url + "/learn/trust-at-a-distance/first-call-limits")
    wait_js(page, "document.getElementById('player').readyState >= 1", 20.0)
    page.evaluate(
        "() => { const v = document.getElementById('player'); v.muted = true; return v.play(); }"
    )
    wait_js(page, "document.getElementById('player').readyState >= 3", 20.0)
    wait_js(page, "document.getElementById('player').currentTime > 1.5", 20.0)
    duration = page.evaluate("() => document.getElementById('player').duration")
    assert abs(duration - 12) < 0.5, duration  # the uploaded take, not the 8 s demo video
    page.screenshot(path=str(ARTIFACTS / "upload-played.png"), full_page=True)
    assert errors == [], errors
    buyer.close()


def test_author_uploads_a_pdf_in_chunks_in_local_mode(
    live_server: str, browser: object, inbox: SmtpInbox, tmp_path: Path
) -> None:
    import pikepdf

    pdf = pikepdf.new()
    for _ in range(4):
        pdf.add_blank_page()
    pdf.save(tmp_path / "playbook-v2.pdf")
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="en-US")  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in_by_mail(page, live_server, inbox, AUTHOR)
    page.goto(live_server + "/lang/de?next=/author")  # the editor in German
    page.locator("a.row-title", has_text="Vertrauen auf Distanz").click()
    page.wait_for_url("**/author/products/*")
    page.locator(".lesson-title a", has_text="Playbook").first.click()
    page.wait_for_url("**/author/lessons/*")
    page.wait_for_selector("#upload-current .file-box")
    chunks: list[str] = []
    page.on("request", lambda r: chunks.append(r.url) if r.url.find("/chunk?offset=") > 0 else None)
    page.set_input_files("#upload-file", str(tmp_path / "playbook-v2.pdf"))
    page.wait_for_selector("#upload[data-state=ready]", timeout=60000)
    assert len(chunks) == 1 and chunks[0].endswith("/chunk?offset=0"), chunks
    assert "Fertig: playbook-v2.pdf" in page.locator("#upload-line").inner_text()
    assert "Seiten: 4" in page.locator("#upload-current").inner_text()
    page.screenshot(path=str(ARTIFACTS / "upload-pdf-de.png"), full_page=True)
    assert errors == [], errors
    context.close()
