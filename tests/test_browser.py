"""The catalog in a real browser: Debian's chromium driven by Playwright."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import COURSES, ROOT, SmtpInbox, free_port, missing

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
    subprocess.run(
        [sys.executable, "-m", "app", "create-user", "lena@example.com", "--name", "Lena"],
        env=env,
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"rapport serve did not start: {err}") from None
            time.sleep(0.2)
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
    page.locator("a[href='/library']").first.click()
    page.wait_for_url("**/library")
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


def test_lesson_plays_and_resumes_and_reader_turns_pages(live_server: str, browser: object) -> None:
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
    page.goto(live_server + "/library")
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
