"""SMTP goes away and comes back: mail queued meanwhile is retried and arrives, and the request
that queued it never fails (the sign-in link, sent during its request, answers a clear 503)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import SmtpInbox, make_user
from tests.faults.conftest import Rapport, Stopwatch, csrf, recipients, send_inquiry, wait_until

pytestmark = [pytest.mark.xdist_group("faults")]


@pytest.fixture
def inbox() -> Iterator[SmtpInbox]:
    box = SmtpInbox()
    box.start()
    yield box
    box.stop()


def test_mail_sent_while_smtp_is_down_arrives_after_it_is_back(
    make_rapport: Callable[[dict[str, str]], Rapport], inbox: SmtpInbox
) -> None:
    # In-process jobs (no Redis): send_mail is retried after 1, 4 and 15 s.
    app = make_rapport({"RAPPORT_SMTP_URL": inbox.url, "RAPPORT_ADMIN_EMAIL": "boss@example.com"})
    make_user(app.engine(), "lena@example.com", name="Lena")
    app.serve()
    clock = Stopwatch("smtp")
    with app.client() as client:
        assert send_inquiry(client, "before@example.com").status_code == 303
        wait_until(lambda: len(inbox.messages) >= 2, timeout=15, what="the first two emails")

        inbox.stop()
        clock.mark("SMTP stopped")
        # Mail that goes through the send_mail job: the visitor is thanked at once.
        sent = send_inquiry(client, "during@example.com")
        assert sent.status_code == 303 and sent.headers["location"] == "/inquiry/thanks"
        # The sign-in link goes through a job too: the same answer as for any address.
        link = client.post(
            "/auth/magic-link",
            data={"email": "lena@example.com", "next": "/account", "csrftoken": csrf(client)},
            follow_redirects=False,
        )
        assert link.status_code == 303 and link.headers["location"] == "/auth/check-email"
        assert client.get("/healthz").status_code == 200
        assert client.get("/").status_code == 200
        # The first attempt has failed and a retry waits before SMTP comes back.
        wait_until(
            lambda: "job.retry" in app.log_events(), timeout=15, what="a failed send_mail attempt"
        )

        clock.mark("a send_mail attempt failed, a retry waits")
        inbox.start()  # the same port; the app is not restarted
        clock.mark("SMTP started again")
        wait_until(lambda: len(inbox.messages) >= 5, timeout=30, what="the retried emails")
        clock.mark("both inquiry emails and the sign-in link arrived")
        assert sorted(recipients(inbox)[2:]) == [
            "boss@example.com",
            "during@example.com",
            "lena@example.com",
        ]
    # Nothing was given up: every send_mail that failed was retried until it went through.
    assert "job.failed" not in app.log_events(), app.log_tail()
