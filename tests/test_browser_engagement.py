"""From watching to a warm lead, in a real browser: a buyer works through the course until
engaged, is invited, sends the pre-filled inquiry; the admin sees the evidence and moves it."""

from __future__ import annotations

import pytest

from tests.conftest import SmtpInbox
from tests.test_browser import (  # noqa: F401 - fixtures shared with the other browser tests
    ADMIN,
    ARTIFACTS,
    browser,
    inbox,
    live_server,
    sign_in_by_mail,
    wait_js,
)

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

VIDEOS = (
    "welcome",
    "first-call-limits",
    "linkedin-profile",
    "content-that-builds-trust",
    "existing-clients",
)
TEXTS = ("first-call-checklist", "silent-inquiry")


def test_a_buyer_becomes_a_warm_lead(live_server: str, browser: object, inbox: SmtpInbox) -> None:  # noqa: F811
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    # Buy the course in test mode as a business buyer.
    page.goto(live_server + "/checkout/trust-at-a-distance")
    page.fill("#email", "jana@example.com")
    page.locator("input[name=consent]").check()
    page.locator("form.panel button[type=submit]").click()
    page.wait_for_url("**/checkout/test/**")
    page.locator("button[value=pay]").click()
    page.wait_for_url("**/checkout/success**")
    # The checkout signs nobody in: the purchase email's link does.
    from tests.test_browser import follow_mailed_link

    follow_mailed_link(page, lambda: list(inbox.messages), "jana@example.com")

    # Watch every video to its end (at 4x, the fastest rate that counts) ...
    for key in VIDEOS:
        page.goto(f"{live_server}/learn/trust-at-a-distance/{key}")
        assert page.locator("#invitation").is_hidden()
        wait_js(page, "document.getElementById('player').readyState >= 1")
        page.evaluate(
            "() => { const v = document.getElementById('player'); v.muted = true;"
            " v.playbackRate = 4; return v.play(); }"
        )
        wait_js(page, "document.getElementById('player').ended", 30.0)
        # the end of the video sends the batch; wait for the server's 202
        wait_js(page, "Number(document.querySelector('[data-events-url]').dataset.eventsSent) > 0")
    # ... and read the two checklists to their end: the last one crosses the threshold.
    for key in TEXTS:
        page.goto(f"{live_server}/learn/trust-at-a-distance/{key}")
        page.locator("#lesson-end").scroll_into_view_if_needed()
        wait_js(page, "Number(document.querySelector('[data-events-url]').dataset.eventsSent) > 0")
    wait_js(page, "!document.getElementById('invitation').hidden")
    page.locator("#invitation").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "invitation.png"), full_page=True)

    page.goto(live_server + "/library")
    assert page.locator("#invitation").is_visible()
    assert "7 of 8 done" in page.locator(".card").inner_text()
    page.screenshot(path=str(ARTIFACTS / "library-progress.png"), full_page=True)

    page.locator("#invitation-link").click()
    page.wait_for_url("**/inquiry")
    assert page.locator("#email").input_value() == "jana@example.com"
    assert "What you have studied" in page.content()
    assert "7</strong> / 8" in page.content()
    page.fill("#name", "Jana Schulz")
    page.fill("#company_name", "Schulz Logistik GmbH")
    page.fill("#message", "Our sales team watched the course. Could we talk about LinkedIn for us?")
    page.screenshot(path=str(ARTIFACTS / "inquiry-form.png"), full_page=True)
    page.get_by_role("button", name="Send inquiry").click()
    page.wait_for_url("**/inquiry/thanks")
    context.close()

    # The admin finds it on the board with its evidence and works it to "won".
    context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-US")  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in_by_mail(page, live_server, inbox, ADMIN)
    page.goto(live_server + "/admin/inquiries")
    card = page.locator(".board-card", has_text="Jana Schulz")
    assert card.count() == 1
    page.screenshot(path=str(ARTIFACTS / "inquiry-board.png"), full_page=True)
    card.click()
    page.wait_for_url("**/admin/inquiries/*")
    evidence = page.locator(".evidence").inner_text()
    assert "7 / 8" in evidence and "lessons completed" in evidence and "engaged" in evidence
    for status, note in (
        ("contacted", "Replied with three times"),
        ("call_scheduled", ""),
        ("proposal_sent", ""),
        ("won", "Signed"),
    ):
        page.select_option("#status", status)
        if note:
            page.fill("#note", note)
        page.get_by_role("button", name="Save").click()
        page.wait_for_selector(".flashes")
    history = page.locator(".timeline").inner_text()
    assert "Replied with three times" in history and "Won" in history
    assert page.locator(".timeline li").count() == 5
    page.screenshot(path=str(ARTIFACTS / "inquiry-detail.png"), full_page=True)
    assert errors == [], errors
    context.close()
