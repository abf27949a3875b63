"""Email through a real SMTP server on loopback; a mail server that is down changes no answer."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.config import Settings
from app.main import create_app
from tests.conftest import SmtpInbox, csrf_token, free_port, make_user


def test_magic_link_arrives_by_smtp_in_the_users_language(
    settings: Settings, engine: Engine, smtp: SmtpInbox
) -> None:
    make_user(engine, "anna@example.com", locale="de")
    app = create_app(settings.model_copy(update={"smtp_url": smtp.url}))
    with TestClient(app) as client:
        r = client.post(
            "/auth/magic-link",
            data={"email": "anna@example.com", "csrftoken": csrf_token(client)},
            follow_redirects=False,
        )
        assert r.status_code == 303
        [raw] = smtp.wait_for(1)
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        assert message["To"] == "anna@example.com" and message["From"]
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert "anzumelden" in text and "<a href=" in html  # German, both parts
        link = re.search(r"http://testserver(/auth/magic\?\S+)", text)
        assert link
        assert client.get(link.group(1)).status_code == 200


def test_known_and_unknown_addresses_get_the_same_answer_while_smtp_is_down(
    settings: Settings, engine: Engine
) -> None:
    """Today's answer used to tell them apart: 503 for a known address (its mail failed), 303
    for an unknown one, and the known took twice as long (a token written, SMTP tried). Now
    the request does the same for both (one job queued, nothing written), so neither the
    answer nor its time says whether an account exists; the job rides out the outage."""
    make_user(engine, "anna@example.com")
    app = create_app(settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{free_port()}"}))
    with TestClient(app, raise_server_exceptions=False) as client:
        queued: list[tuple[str, dict[str, object]]] = []
        enqueue = app.state.jobs.enqueue

        def spy(name: str, **kwargs: object) -> None:
            queued.append((name, kwargs))
            enqueue(name, **kwargs)

        app.state.jobs.enqueue = spy
        answers = []
        for email in ("anna@example.com", "nobody@example.com"):
            answers.append(
                client.post(
                    "/auth/magic-link",
                    data={"email": email, "csrftoken": csrf_token(client)},
                    follow_redirects=False,
                )
            )
        known, unknown = answers
        assert known.status_code == unknown.status_code == 303
        assert known.headers["location"] == unknown.headers["location"] == "/auth/check-email"
        asked = [kw for name, kw in queued if name == "magic_link_email"]
        assert len(asked) == 2 and {tuple(sorted(kw)) for kw in asked} == {("email", "next_path")}
