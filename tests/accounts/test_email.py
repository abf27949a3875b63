"""Email through a real SMTP server on loopback; a mail server that is down gives a clear 503."""

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


def test_smtp_down_is_a_clear_503(settings: Settings, engine: Engine) -> None:
    make_user(engine, "anna@example.com")
    app = create_app(settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{free_port()}"}))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(
            "/auth/magic-link",
            data={"email": "anna@example.com", "csrftoken": csrf_token(client)},
            headers={"Accept": "text/html"},
        )
        assert r.status_code == 503 and "Temporarily unavailable" in r.text
        assert r.headers["retry-after"]
