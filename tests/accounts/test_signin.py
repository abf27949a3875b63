"""Sign-in by magic link and password; every bad input gets a clear 4xx and changes nothing."""

from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlmodel import Session, select

from app.accounts.models import LoginToken, User
from app.config import Settings
from app.main import create_app
from app.models_base import utcnow
from tests.conftest import csrf_token, make_user, sign_in


def outbox_messages(outbox: Path) -> list[EmailMessage]:
    if not outbox.exists():
        return []
    return [
        message_from_bytes(p.read_bytes(), policy=policy.default)
        for p in sorted(outbox.glob("*.eml"))
    ]


def link_in(message: EmailMessage) -> str:
    text = next(
        part.get_content() for part in message.walk() if part.get_content_type() == "text/plain"
    )
    match = re.search(r"http://testserver(/auth/magic\?token=[\w-]+)\s", text)
    assert match, text
    return match.group(1)


def request_link(client: TestClient, email: str, next_path: str = "/account") -> object:
    answer = client.post(
        "/auth/magic-link",
        data={"email": email, "next": next_path, "csrftoken": csrf_token(client)},
        follow_redirects=False,
    )
    client.app.state.jobs.drain()  # type: ignore[attr-defined]  # the job writes the mail
    return answer


def test_magic_link_signs_in_once(client: TestClient, engine: Engine, outbox: Path) -> None:
    make_user(engine, "ada@example.com", locale="de")
    r = request_link(client, "Ada@Example.com")
    assert r.status_code == 303 and r.headers["location"] == "/auth/check-email"  # type: ignore[attr-defined]
    [message] = outbox_messages(outbox)
    assert message["To"] == "ada@example.com"
    assert "Anmeldelink" in str(message["Subject"]) or "Rapport" in str(message["Subject"])
    assert {p.get_content_type() for p in message.walk()} >= {"text/plain", "text/html"}
    link = link_in(message)
    token = parse_qs(urlparse(link).query)["token"][0]
    confirm = client.get(link)
    assert confirm.status_code == 200 and "ada@example.com" in confirm.text
    signed = client.post(
        "/auth/magic",
        data={"token": token, "next": "/account", "csrftoken": csrf_token(client)},
        follow_redirects=False,
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/account"
    assert "ada@example.com" in client.get("/account").text
    # The link is used up: a second try, even signed out, is refused.
    client.post("/auth/logout", data={"csrftoken": csrf_token(client)})
    again = client.post("/auth/magic", data={"token": token, "csrftoken": csrf_token(client)})
    assert again.status_code == 400 and "does not work" in again.text


def test_same_answer_whether_or_not_the_account_exists(
    client: TestClient, engine: Engine, outbox: Path
) -> None:
    make_user(engine, "known@example.com")
    known = request_link(client, "known@example.com")
    unknown = request_link(client, "stranger@example.com")
    assert known.status_code == unknown.status_code == 303  # type: ignore[attr-defined]
    assert known.headers["location"] == unknown.headers["location"]  # type: ignore[attr-defined]
    assert len(outbox_messages(outbox)) == 1
    with Session(engine) as s:
        assert (
            s.exec(select(LoginToken).where(LoginToken.email == "stranger@example.com")).first()
            is None
        )


def test_invalid_email_is_a_400_form(client: TestClient, outbox: Path) -> None:
    r = client.post(
        "/auth/magic-link", data={"email": "not an email", "csrftoken": csrf_token(client)}
    )
    assert r.status_code == 400 and "valid email" in r.text
    assert outbox_messages(outbox) == []


def test_expired_tampered_and_foreign_links(
    client: TestClient, engine: Engine, outbox: Path
) -> None:
    make_user(engine, "ada@example.com")
    make_user(engine, "bob@example.com")
    request_link(client, "ada@example.com")
    token = parse_qs(urlparse(link_in(outbox_messages(outbox)[0])).query)["token"][0]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert client.get("/auth/magic", params={"token": tampered}).status_code == 400
    assert (
        client.post(
            "/auth/magic", data={"token": tampered, "csrftoken": csrf_token(client)}
        ).status_code
        == 400
    )
    assert client.get("/auth/magic", params={"token": "x" * 5000}).status_code == 400
    # Foreign: signed in as Bob, Ada's link is refused and Bob stays Bob.
    sign_in(client, engine, "bob@example.com")
    foreign = client.post("/auth/magic", data={"token": token, "csrftoken": csrf_token(client)})
    assert foreign.status_code == 409 and "another user" in foreign.text
    assert "bob@example.com" in client.get("/account").text
    with Session(engine) as s:
        s.execute(update(LoginToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    client.post("/auth/logout", data={"csrftoken": csrf_token(client)})
    expired = client.post("/auth/magic", data={"token": token, "csrftoken": csrf_token(client)})
    assert expired.status_code == 400
    assert client.get("/account", follow_redirects=False).status_code == 303


def test_next_only_goes_to_local_paths(client: TestClient, engine: Engine, outbox: Path) -> None:
    make_user(engine, "ada@example.com")
    for evil in (
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
    ):
        page = client.get("/auth/login", params={"next": evil})
        assert 'name="next" value="/account"' in page.text, evil
        request_link(client, "ada@example.com", evil)
    for message in outbox_messages(outbox):
        assert "next" not in link_in(message) and "evil" not in message.as_string()
    sign_in(client, engine, "ada@example.com")
    for evil in ("//evil.example", "https://evil.example", "/\\evil.example"):
        r = client.get("/auth/login", params={"next": evil}, follow_redirects=False)
        assert r.headers["location"] == "/", evil


def test_the_emailed_link_carries_only_our_words(
    client: TestClient, engine: Engine, outbox: Path
) -> None:
    """`next` used to be pasted into the mailed link: `&token=` in it signed the victim into
    the attacker's account, and free text in it was mailed under our name."""
    make_user(engine, "victim@example.com")
    make_user(engine, "mallory@example.com")
    with Session(engine) as s:
        from app.accounts import service

        attacker_token = service.create_login_link(
            session=s, email="mallory@example.com", ttl_seconds=600
        )
        s.commit()
    smuggled = f"/library&token={attacker_token}"
    request_link(client, "victim@example.com", smuggled)
    request_link(client, "victim@example.com", "/library Your account is locked. Call +49 30 1234")
    first, second = outbox_messages(outbox)
    for message in (first, second):
        text = message.as_string()
        assert attacker_token not in text and "locked" not in text and "Call" not in text
    # The victim's link signs in the victim, and leads to a page of ours.
    link = link_in(first)
    token = parse_qs(urlparse(link).query)["token"]
    assert token != [attacker_token] and len(token) == 1
    signed = client.post(
        "/auth/magic", data={"token": token[0], "csrftoken": csrf_token(client)},
        follow_redirects=False,
    )  # fmt: skip
    assert signed.status_code == 303 and signed.headers["location"] == "/account"
    assert "victim@example.com" in client.get("/account").text
    # A plain same-site path is kept, with the token, not in the link.
    request_link(client, "victim@example.com", "/learn/linkedin-playbook")
    assert "learn" not in link_in(outbox_messages(outbox)[-1])
    with Session(engine) as s:
        kept = s.exec(select(LoginToken).where(LoginToken.next_path.is_not(None))).all()  # type: ignore[union-attr]
    # Anything but a plain path became the account page.
    assert [t.next_path for t in kept] == ["/account", "/account", "/learn/linkedin-playbook"]


def test_password_sign_in(client: TestClient, engine: Engine) -> None:
    make_user(engine, "ada@example.com")
    sign_in(client, engine, "ada@example.com")
    weak = client.post(
        "/account/password", data={"password": "short", "csrftoken": csrf_token(client)}
    )
    assert weak.status_code == 400 and "at least 10" in weak.text
    ok = client.post(
        "/account/password",
        data={"password": "correct horse battery", "csrftoken": csrf_token(client)},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    with Session(engine) as s:
        stored = s.exec(select(User)).one().password_hash
    assert stored and stored.startswith("$argon2id$") and "horse" not in stored
    client.post("/auth/logout", data={"csrftoken": csrf_token(client)})

    def attempt(email: str, password: str) -> tuple[int, str]:
        r = client.post(
            "/auth/login",
            data={"email": email, "password": password, "csrftoken": csrf_token(client)},
            follow_redirects=False,
        )
        return r.status_code, r.text

    wrong = attempt("ada@example.com", "incorrect horse battery")
    unknown = attempt("nobody@example.com", "correct horse battery")
    assert wrong[0] == unknown[0] == 400 and "incorrect" in wrong[1] and "incorrect" in unknown[1]
    assert attempt("ADA@example.com", "correct horse battery")[0] == 303
    assert client.get("/account").status_code == 200


def test_session_cookie_flags(client: TestClient, engine: Engine) -> None:
    make_user(engine, "ada@example.com")
    sign_in(client, engine, "ada@example.com")
    r = client.post(
        "/account/profile",
        data={"name": "Ada", "csrftoken": csrf_token(client)},
        follow_redirects=False,
    )
    cookie = next(
        v
        for k, v in r.headers.multi_items()
        if k == "set-cookie" and v.startswith("rapport_session=")
    )
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert "secure" not in cookie.lower()  # http base URL in tests; https turns it on


def test_secure_cookie_on_https(settings: object, engine: Engine) -> None:
    from app.config import Settings
    from app.main import create_app

    assert isinstance(settings, Settings)
    app = create_app(settings.model_copy(update={"base_url": "https://shop.example"}))
    with TestClient(app, base_url="https://testserver") as client:
        make_user(engine, "ada@example.com")
        sign_in(client, engine, "ada@example.com")
        r = client.post(
            "/account/profile",
            data={"name": "A", "csrftoken": csrf_token(client)},
            follow_redirects=False,
        )
        cookie = next(
            v
            for k, v in r.headers.multi_items()
            if k == "set-cookie" and v.startswith("rapport_session=")
        )
        assert "secure" in cookie.lower()


def test_setting_a_password_needs_a_recent_proof_of_the_address(
    settings: Settings, engine: Engine
) -> None:
    make_user(engine, "ada@example.com")
    stale = create_app(settings.model_copy(update={"reauth_seconds": 0}))
    with TestClient(stale) as client:
        sign_in(client, engine, "ada@example.com")
        r = client.post(
            "/account/password",
            data={"password": "correct horse battery", "csrftoken": csrf_token(client)},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/auth/login?next=/account"
        assert client.get("/account", follow_redirects=False).status_code == 303  # signed out
    with Session(engine) as s:
        assert s.exec(select(User)).one().password_hash is None


def test_a_hash_made_with_old_argon2_parameters_is_renewed_at_sign_in(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.accounts import security

    old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    make_user(engine, "ada@example.com", password_hash=old.hash("correct horse battery"))
    assert security.needs_rehash(old.hash("x"))  # today's parameters differ
    r = client.post(
        "/auth/login",
        data={
            "email": "ada@example.com",
            "password": "correct horse battery",
            "csrftoken": csrf_token(client),
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    with Session(engine) as s:
        renewed = s.exec(select(User)).one().password_hash
    assert renewed and not security.needs_rehash(renewed)
    assert security.verify_password(renewed, "correct horse battery")
