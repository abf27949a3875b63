"""Hostile or unusual requests get a 4xx, never a 500: multipart forms through the CSRF check,
JSON nested deeper than Python's recursion limit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.accounts.models import User
from tests.conftest import csrf_token, make_user, sign_in


@pytest.fixture
def buyer(app: FastAPI, engine: Engine) -> Iterator[TestClient]:
    make_user(engine, "b@example.com")
    # With the lifespan, so that PostgreSQL's event fast path is open.
    with TestClient(app, raise_server_exceptions=False) as client:
        sign_in(client, engine, "b@example.com")
        yield client


def name_of(engine: Engine) -> str:
    with Session(engine) as s:
        return s.exec(select(User).where(User.email == "b@example.com")).one().name


# Multipart forms ---------------------------------------------------------------------------


def test_a_multipart_form_with_the_token_is_processed(buyer: TestClient, engine: Engine) -> None:
    token = csrf_token(buyer)
    r = buyer.post(
        "/account/profile",
        files={"csrftoken": (None, token), "name": (None, "Multi Part")},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert r.request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert name_of(engine) == "Multi Part"
    # The token may follow other plain fields; only a file before it is refused.
    r = buyer.post(
        "/account/profile",
        files={"name": (None, "Second"), "locale": (None, "de"), "csrftoken": (None, token)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert name_of(engine) == "Second"


def test_a_multipart_sign_in_form_is_processed(client: TestClient) -> None:
    r = client.post(
        "/auth/magic-link",
        files={"csrftoken": (None, csrf_token(client)), "email": (None, "new@example.com")},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


@pytest.mark.parametrize(
    "fields",
    [
        {"name": (None, "Forged")},
        {"csrftoken": (None, "not-the-token"), "name": (None, "Forged")},
        {"csrftoken": (None, ""), "name": (None, "Forged")},
    ],
    ids=["no token", "wrong token", "empty token"],
)
def test_a_multipart_form_without_the_token_is_refused(
    buyer: TestClient, engine: Engine, fields: dict[str, tuple[None, str]]
) -> None:
    r = buyer.post("/account/profile", files=fields, follow_redirects=False)
    assert r.status_code == 403, r.text
    assert name_of(engine) != "Forged"


def test_a_file_before_the_token_is_refused(buyer: TestClient, engine: Engine) -> None:
    token = csrf_token(buyer)
    r = buyer.post(
        "/account/profile",
        files={"upload": ("a.txt", b"x" * 10_000, "text/plain"), "csrftoken": (None, token)},
        follow_redirects=False,
    )
    assert r.status_code == 403, r.text


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ('multipart/form-data; boundary="q"', b'--q\r\nContent-Disposition: form-data; name="a"'),
        ("multipart/form-data; boundary=b", b"not multipart at all"),
        ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data\r\n\r\nx"),
        ("multipart/form-data; charset=utf-8; boundary=b", b"--b--\r\n"),
        ("multipart/form-data;boundary=b", b"--b\r\n\xff\xfe: \xff\r\n\r\n\xff\r\n--b--\r\n"),
        ("application/x-www-form-urlencoded", b"csrftoken=\xff\xfe&name=x"),
        ("text/plain", b"csrftoken=x"),
    ],
)
def test_malformed_form_bodies_are_refused_not_crashed(
    buyer: TestClient, content_type: str, body: bytes
) -> None:
    r = buyer.post(
        "/account/profile",
        content=body,
        headers={"content-type": content_type},
        follow_redirects=False,
    )
    assert r.status_code in (400, 403), (r.status_code, r.text)


def test_the_token_in_a_quoted_boundary_is_found(buyer: TestClient, engine: Engine) -> None:
    token = csrf_token(buyer)
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="csrftoken"\r\n\r\n'
        + token.encode()
        + b'\r\n--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nQuoted\r\n--xyz--\r\n'
    )
    r = buyer.post(
        "/account/profile",
        content=body,
        headers={"content-type": 'multipart/form-data; boundary="xyz"'},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert name_of(engine) == "Quoted"


# Deeply nested JSON ------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
@pytest.mark.parametrize("where", ["body", "event"])
def test_deeply_nested_events_are_refused(buyer: TestClient, depth: int, where: str) -> None:
    nested = "[" * depth + "]" * depth
    if where == "body":
        body = nested
    else:
        event = (
            f'{{"id": "{uuid.uuid4()}", "kind": "lesson_opened", "lesson_id": 1, "x": {nested}}}'
        )
        body = f'{{"events": [{event}]}}'
    r = buyer.post(
        "/api/v1/events",
        content=body.encode(),
        headers={"content-type": "application/json", "x-csrftoken": csrf_token(buyer)},
    )
    assert r.status_code in (400, 422), (r.status_code, r.text[:300])


def test_deeply_nested_json_elsewhere_is_refused(app: FastAPI, engine: Engine) -> None:
    make_user(engine, "author@example.com", "author")
    with TestClient(app, raise_server_exceptions=False) as client:
        sign_in(client, engine, "author@example.com")
        r = client.post(
            "/api/v1/author/products",
            content=("[" * 50_000 + "]" * 50_000).encode(),
            headers={"content-type": "application/json", "x-csrftoken": csrf_token(client)},
        )
    assert r.status_code in (400, 422), (r.status_code, r.text[:300])
