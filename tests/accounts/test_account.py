"""CSRF, rate limits, sessions, API tokens, the account page, export and deletion."""

from __future__ import annotations

import json
import os

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, String, Text, cast, inspect, or_, text
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from app.accounts import service
from app.accounts.models import Company, Role, User
from app.config import Settings
from app.db import metadata
from app.main import create_app
from tests.conftest import csrf_token, make_user, sign_in

# A database of its own on the developer's or CI's Redis, emptied by the test.
REDIS_URL = os.environ.get("RAPPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def test_state_changes_need_a_csrf_token(client: TestClient, engine: Engine) -> None:
    make_user(engine, "ada@example.com", name="Ada")
    sign_in(client, engine, "ada@example.com")
    for data in ({"name": "Mallory"}, {"name": "Mallory", "csrftoken": "forged"}):
        r = client.post("/account/profile", data=data, headers={"Accept": "text/html"})
        assert r.status_code == 403 and "expired or was sent from another site" in r.text
    r = client.post("/account/profile", json={"name": "Mallory"})
    assert r.status_code == 403
    with Session(engine) as s:
        assert s.exec(select(User.name)).one() == "Ada"
    # Sign-in forms are protected too (no login CSRF), even without any cookie yet.
    fresh = TestClient(client.app)
    assert fresh.post("/auth/magic-link", data={"email": "ada@example.com"}).status_code == 403
    # The header form used by scripts on our pages works.
    ok = client.post(
        "/account/profile",
        data={"name": "Ada L."},
        headers={"x-csrftoken": csrf_token(client)},
        follow_redirects=False,
    )
    assert ok.status_code == 303


def test_magic_link_requests_are_rate_limited(client: TestClient, engine: Engine) -> None:
    make_user(engine, "ada@example.com")
    token = csrf_token(client)
    statuses = [
        client.post(
            "/auth/magic-link",
            data={"email": "ada@example.com", "csrftoken": token},
            follow_redirects=False,
        ).status_code
        for _ in range(6)
    ]
    assert statuses[:5] == [303] * 5 and statuses[5] == 429
    refused = client.post(
        "/auth/magic-link",
        data={"email": "ada@example.com", "csrftoken": token},
        headers={"Accept": "text/html"},
    )
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "Too many attempts" in refused.text
    # Another address from the same place still passes until the per-IP limit.
    other = client.post(
        "/auth/magic-link",
        data={"email": "bob@example.com", "csrftoken": token},
        follow_redirects=False,
    )
    assert other.status_code == 303


def test_per_ip_limit_counts_every_address(client: TestClient) -> None:
    token = csrf_token(client)
    codes = [
        client.post(
            "/auth/magic-link",
            data={"email": f"u{i}@example.com", "csrftoken": token},
            follow_redirects=False,
        ).status_code
        for i in range(21)
    ]
    assert codes[:20] == [303] * 20 and codes[20] == 429


def test_password_attempts_are_rate_limited(client: TestClient, engine: Engine) -> None:
    make_user(engine, "ada@example.com")
    token = csrf_token(client)
    codes = [
        client.post(
            "/auth/login",
            data={"email": "ada@example.com", "password": f"guess-{i}-xxxx", "csrftoken": token},
        ).status_code
        for i in range(6)
    ]
    assert codes == [400] * 5 + [429]


@pytest.mark.usefixtures("engine")
def test_limits_are_shared_through_redis(settings: Settings) -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        from tests.conftest import missing

        missing("Redis", "start redis-server on 127.0.0.1:6379 or the CI machine's service")
    shared = settings.model_copy(update={"redis_url": REDIS_URL})
    first, second = create_app(shared), create_app(shared)
    first.state.limiter.reset()
    with TestClient(first) as a, TestClient(second) as b:
        for i in range(5):
            c = a if i % 2 else b
            assert (
                c.post(
                    "/auth/magic-link",
                    data={"email": "x@example.com", "csrftoken": csrf_token(c)},
                    follow_redirects=False,
                ).status_code
                == 303
            )
        assert (
            a.post(
                "/auth/magic-link", data={"email": "x@example.com", "csrftoken": csrf_token(a)}
            ).status_code
            == 429
        )
    first.state.limiter.reset()


def test_sign_out_everywhere(app: FastAPI, engine: Engine) -> None:
    make_user(engine, "ada@example.com")
    with TestClient(app) as laptop, TestClient(app) as phone:
        sign_in(laptop, engine, "ada@example.com")
        sign_in(phone, engine, "ada@example.com")
        assert phone.get("/account").status_code == 200
        r = laptop.post(
            "/account/sign-out-everywhere",
            data={"csrftoken": csrf_token(laptop)},
            follow_redirects=False,
        )
        assert r.status_code == 303
        assert phone.get("/account", follow_redirects=False).status_code == 303
        assert laptop.get("/account", follow_redirects=False).status_code == 303
        sign_in(phone, engine, "ada@example.com")  # a fresh sign-in works again
        assert phone.get("/account").status_code == 200


def test_sign_out(client: TestClient, engine: Engine) -> None:
    make_user(engine, "ada@example.com")
    sign_in(client, engine, "ada@example.com")
    assert (
        client.post(
            "/auth/logout", data={"csrftoken": csrf_token(client)}, follow_redirects=False
        ).status_code
        == 303
    )
    assert (
        client.get("/account", follow_redirects=False).headers["location"]
        == "/auth/login?next=%2Faccount"
    )


def test_sign_out_ends_that_session_on_the_server_only(app: FastAPI, engine: Engine) -> None:
    make_user(engine, "ada@example.com")
    with TestClient(app) as laptop, TestClient(app) as copy, TestClient(app) as phone:
        sign_in(laptop, engine, "ada@example.com")
        sign_in(phone, engine, "ada@example.com")
        copy.cookies.set("rapport_session", laptop.cookies["rapport_session"])
        assert copy.get("/account").status_code == 200
        laptop.post("/auth/logout", data={"csrftoken": csrf_token(laptop)})
        # The copied cookie of the signed-out session signs nobody in any more ...
        assert copy.get("/account", follow_redirects=False).status_code == 303
        # ... while the same person's other session goes on.
        assert phone.get("/account").status_code == 200


def test_role_change_applies_at_once(app: FastAPI, engine: Engine) -> None:
    admin_id = make_user(engine, "admin@example.com", "admin")
    author_id = make_user(engine, "author@example.com", "author")
    with TestClient(app) as admin, TestClient(app) as author:
        sign_in(admin, engine, "admin@example.com")
        sign_in(author, engine, "author@example.com")
        r = admin.post(
            f"/admin/users/{author_id}/role",
            data={"role": "buyer", "csrftoken": csrf_token(admin)},
            follow_redirects=False,
        )
        assert r.status_code == 303
        assert author.get("/account", follow_redirects=False).status_code == 303  # signed out
        sign_in(author, engine, "author@example.com")
        assert (
            author.post(
                "/account/tokens", data={"name": "x", "csrftoken": csrf_token(author)}
            ).status_code
            == 403
        )
        # An admin cannot demote themselves by accident.
        admin.post(
            f"/admin/users/{admin_id}/role", data={"role": "buyer", "csrftoken": csrf_token(admin)}
        )
        with Session(engine) as s:
            assert s.get(User, admin_id).role == Role.admin  # type: ignore[union-attr]
        bad = admin.post(
            f"/admin/users/{author_id}/role",
            data={"role": "emperor", "csrftoken": csrf_token(admin)},
        )
        assert bad.status_code == 422


def test_api_tokens(client: TestClient, engine: Engine) -> None:
    make_user(engine, "author@example.com", "author")
    sign_in(client, engine, "author@example.com")
    created = client.post(
        "/account/tokens", data={"name": "laptop", "csrftoken": csrf_token(client)}
    )
    assert created.status_code == 201
    plain = created.text.split('id="new-token">')[1].split("<")[0]
    assert plain.startswith("rap_")
    assert plain not in client.get("/account").text  # shown once
    api = TestClient(client.app)
    me = api.get("/api/v1/me", headers={"Authorization": f"Bearer {plain}"})
    assert me.status_code == 200 and me.json()["email"] == "author@example.com"
    assert "password_hash" not in me.json() and "session_version" not in me.json()
    # Tokens open the API only, not pages.
    assert (
        api.get(
            "/account", headers={"Authorization": f"Bearer {plain}"}, follow_redirects=False
        ).status_code
        == 303
    )
    assert api.get("/api/v1/me", headers={"Authorization": "Bearer rap_wrong"}).status_code == 401
    assert api.get("/api/v1/me").headers["www-authenticate"] == "Bearer"
    with Session(engine) as s:
        token_id = service.list_api_tokens(session=s, user=s.exec(select(User)).one())[0].id
    r = client.post(
        f"/account/tokens/{token_id}/revoke",
        data={"csrftoken": csrf_token(client)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {plain}"}).status_code == 401
    assert (
        client.post(
            "/account/tokens/999999/revoke", data={"csrftoken": csrf_token(client)}
        ).status_code
        == 404
    )
    assert (
        client.post(
            "/account/tokens", data={"name": "", "csrftoken": csrf_token(client)}
        ).status_code
        == 400
    )


def test_profile_and_company(client: TestClient, engine: Engine) -> None:
    make_user(engine, "ada@example.com")
    sign_in(client, engine, "ada@example.com")
    data = {
        "name": "Ada Lovelace",
        "locale": "de",
        "company_name": "Analytical GmbH",
        "company_country": "de",
        "company_vat_id": "de 123456789",
        "csrftoken": csrf_token(client),
    }
    assert client.post("/account/profile", data=data, follow_redirects=False).status_code == 303
    with Session(engine) as s:
        user = s.exec(select(User)).one()
        company = s.get(Company, user.company_id)
    assert user.name == "Ada Lovelace" and user.locale == "de"
    assert company and company.country == "DE" and company.vat_id == "DE123456789"
    page = client.get("/account")
    assert 'lang="de"' in page.text and "Analytical GmbH" in page.text
    for bad in (
        {"company_country": "Germany"},
        {"name": "x" * 201},
        {"company_vat_id": "<script>"},
    ):
        r = client.post("/account/profile", data={**data, **bad})
        assert r.status_code == 422, bad
    with Session(engine) as s:
        assert s.exec(select(User)).one().name == "Ada Lovelace"


def test_oversized_and_malformed_bodies(client: TestClient, engine: Engine) -> None:
    make_user(engine, "ada@example.com")
    sign_in(client, engine, "ada@example.com")
    big = client.post(
        "/account/profile", data={"name": "x" * (2 * 1024 * 1024), "csrftoken": csrf_token(client)}
    )
    assert big.status_code == 413
    broken = client.post(
        "/account/profile",
        content=b"--x\r\n",
        headers={"Content-Type": "multipart/form-data", "x-csrftoken": csrf_token(client)},
    )
    assert broken.status_code == 400
    garbage = client.post(
        "/auth/magic-link",
        content=b"\xff\xfe\x00",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert garbage.status_code == 400
    # Raw bytes in a cookie (the test client would re-encode them, so call the app directly).
    assert raw_get_status(client.app, "/auth/login", [(b"cookie", b"rapport_csrf=\xff\xfe")]) == 400


def test_export_and_delete(client: TestClient, engine: Engine) -> None:
    make_user(engine, "ada@example.com", name="Ada")
    make_user(engine, "colleague@example.com")
    sign_in(client, engine, "ada@example.com")
    client.post(
        "/account/profile",
        data={"name": "Ada", "company_name": "Solo Ltd", "csrftoken": csrf_token(client)},
    )
    exported = client.get("/account/export")
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    data = json.loads(exported.content)
    assert data["profile"]["email"] == "ada@example.com" and data["company"]["name"] == "Solo Ltd"
    assert client.get("/api/v1/me/export").json()["profile"]["email"] == "ada@example.com"

    wrong = client.post(
        "/account/delete",
        data={"confirm_email": "someone@example.com", "csrftoken": csrf_token(client)},
    )
    assert wrong.status_code == 400
    gone = client.post(
        "/account/delete",
        data={"confirm_email": "ADA@example.com", "csrftoken": csrf_token(client)},
        follow_redirects=False,
    )
    assert gone.status_code == 303
    assert client.get("/account", follow_redirects=False).status_code == 303
    assert_nowhere_in_database(engine, "ada@example.com")
    assert_nowhere_in_database(engine, "Solo Ltd")
    with Session(engine) as s:
        assert s.exec(select(User.email)).all() == ["colleague@example.com"]


def assert_nowhere_in_database(engine: Engine, needle: str) -> None:
    """Search every text-like column of every table for the needle (case-insensitive)."""
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            columns = [
                c
                for c in table.columns
                if isinstance(c.type, String | Text) or c.type.__class__.__name__ == "JSON"
            ]
            if not columns:
                continue
            condition = or_(*[cast(c, Text).ilike(f"%{needle}%") for c in columns])
            hits = conn.execute(sa_select(table).where(condition)).all()
            assert hits == [], f"{needle!r} still in {table.name}: {hits}"
        assert conn.execute(text("SELECT 1")).scalar() == 1
    assert inspect(engine).get_table_names()


def raw_get_status(app: object, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """Send one GET straight into the ASGI app, with headers exactly as given."""
    import asyncio

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "scheme": "http",
    }
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[operator]
    status = sent[0]["status"]
    assert isinstance(status, int)
    return status
