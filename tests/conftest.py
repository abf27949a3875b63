"""Shared fixtures: real databases (SQLite and PostgreSQL), real S3 over HTTP (moto server)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from app import migrate
from app.config import Settings, get_settings
from app.db import make_engine, metadata, normalize_url
from app.delivery.storage import LocalStorage, Storage
from app.integrations.s3 import S3Storage
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
COURSES = ROOT / "courses"
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
PG_ADMIN_URL = normalize_url(
    os.environ.get(
        "RAPPORT_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
)

# boto3 needs credentials to sign; moto accepts any.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-central-1")
for _name in list(os.environ):
    if _name.startswith("RAPPORT_") and not _name.startswith("RAPPORT_TEST_"):
        del os.environ[_name]  # a developer's own settings must not leak into the tests


def missing(what: str, how: str) -> None:
    """Skip on a laptop without the service; in CI a missing service is a failure."""
    message = f"{what} is not available: {how}"
    if IN_CI:
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Databases ----------------------------------------------------------------------------------


def _admin_engine() -> Engine:
    engine = create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        missing(
            "PostgreSQL",
            f"could not connect to {make_url(PG_ADMIN_URL).render_as_string()} "
            f"({type(exc).__name__}). "
            "Start a server or set RAPPORT_TEST_DATABASE_URL to an admin connection URL, e.g. "
            "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        )
    return engine


def create_pg_database() -> str:
    """A new, empty PostgreSQL database; returns its URL."""
    name = f"rapport_test_{uuid.uuid4().hex[:12]}"
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def pg_available() -> None:
    _admin_engine().dispose()


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, un-migrated database of the backend named by the test's `backend` param."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database built by `alembic upgrade head`, once per backend and test process."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'rapport.db'}"
        migrate.upgrade(url)
        yield url
        return
    url = create_pg_database()
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="session")
def _engines() -> Iterator[dict[str, Engine]]:
    engines: dict[str, Engine] = {}
    yield engines
    for engine in engines.values():
        engine.dispose()


@pytest.fixture
def engine(database_url: str, _engines: dict[str, Engine]) -> Iterator[Engine]:
    """The migrated database, emptied after each test so that tests never share rows."""
    eng = _engines.get(database_url) or _engines.setdefault(database_url, make_engine(database_url))
    yield eng
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    with eng.begin() as conn:
        if eng.dialect.name == "postgresql":
            conn.execute(
                text(
                    "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
                )
            )
        else:
            for t in tables:
                conn.execute(text(f'DELETE FROM "{t}"'))


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as s:
        yield s


# S3 through moto's real HTTP server --------------------------------------------------------


class MotoServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._server: object | None = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer(free_port())
    try:
        server.start()
    except Exception as exc:  # pragma: no cover - only when moto[server] is broken
        missing("moto's S3 server", f"{exc}; install the dev dependencies (make install)")
    yield server
    server.stop()


def make_bucket(endpoint: str) -> str:
    bucket = f"rapport-test-{uuid.uuid4().hex[:10]}"
    S3Storage(bucket=bucket, endpoint_url=endpoint).client.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}
    )
    return bucket


@pytest.fixture
def s3_bucket(moto: MotoServer) -> str:
    return make_bucket(moto.url)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each storage backend in turn: a local folder, and a bucket on moto's S3 server."""
    if request.param == "local":
        return LocalStorage(tmp_path / "media", secret="test-secret")
    moto: MotoServer = request.getfixturevalue("moto")
    return S3Storage(bucket=make_bucket(moto.url), endpoint_url=moto.url)


# The app ------------------------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str, engine: Engine, tmp_path: Path) -> Settings:
    return Settings(
        base_url="http://testserver",
        stripe_webhook_secret="whsec_rapport_test",
        env="test",
        secret_key="test-secret-key-with-enough-length-0123456789",
        database_url=database_url,
        media_dir=tmp_path / "media",
        data_dir=tmp_path,
        log_json=True,
        access_log=False,
        _env_file=None,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def course_copy(tmp_path: Path) -> Path:
    """A writable copy of the demo course folder."""
    target = tmp_path / "courses" / "trust-at-a-distance"
    shutil.copytree(COURSES / "trust-at-a-distance", target)
    return target


@pytest.fixture(autouse=True)
def _fresh_settings_cache() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def client_for_storage(storage: Storage, tmp_path: Path) -> Iterator[httpx.Client]:
    """An HTTP client that can follow the storage's download URLs (the app's /media for local)."""
    if isinstance(storage, LocalStorage):
        app = create_app(
            Settings(
                env="test",
                database_url=f"sqlite:///{tmp_path / 'media-test.db'}",
                media_dir=storage.root,
                secret_key="test-secret",
                access_log=False,
                _env_file=None,
            )
        )
        with TestClient(app, base_url="http://testserver") as c:
            yield c
    else:
        with httpx.Client() as c:
            yield c


# Accounts -----------------------------------------------------------------------------------


def make_user(engine: Engine, email: str, role: str = "buyer", **fields: object) -> int:
    """A user row; returns its id."""
    from app.accounts.models import Role, User

    with Session(engine) as s:
        user = User(email=email, role=Role(role), **fields)  # type: ignore[arg-type]
        s.add(user)
        s.commit()
        assert user.id is not None
        return user.id


def csrf_token(client: TestClient) -> str:
    """The CSRF cookie's value, fetching a form page first when there is none yet."""
    if "rapport_csrf" not in client.cookies:
        client.get("/auth/login")
    return str(client.cookies["rapport_csrf"])


def sign_in(client: TestClient, engine: Engine, email: str) -> None:
    """Sign the client in as email through a real single-use link."""
    from app.accounts import service

    with Session(engine) as s:
        token = service.create_login_link(session=s, email=email, ttl_seconds=60)
        s.commit()
    assert client.get("/auth/magic", params={"token": token}).status_code == 200
    r = client.post(
        "/auth/magic",
        data={"token": token, "next": "/account", "csrftoken": csrf_token(client)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


@pytest.fixture
def outbox(settings: Settings) -> Path:
    return settings.data_dir / "outbox"


class SmtpInbox:
    """A real SMTP server on loopback (aiosmtpd) that keeps what arrives."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.port = free_port()
        self._controller: object | None = None

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(envelope.content)  # type: ignore[attr-defined]
        return "250 Message accepted for delivery"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        controller = Controller(self, hostname="127.0.0.1", port=self.port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()  # type: ignore[attr-defined]
            self._controller = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[bytes]:
        import time

        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages


@pytest.fixture
def smtp() -> Iterator[SmtpInbox]:
    inbox = SmtpInbox()
    inbox.start()
    yield inbox
    inbox.stop()


# Stripe ---------------------------------------------------------------------------------------

WEBHOOK_SECRET = "whsec_rapport_test"


@pytest.fixture
def fake_stripe() -> Iterator[object]:
    from tests.fakes.stripe_api import FakeStripe

    fake = FakeStripe()
    fake.start()
    yield fake
    fake.stop()
    assert not fake.errors, fake.errors


@pytest.fixture
def stripe_settings(settings: Settings, fake_stripe: object) -> Settings:
    return settings.model_copy(
        update={
            "stripe_secret_key": "sk_test_rapport",
            "stripe_api_base": fake_stripe.url,  # type: ignore[attr-defined]
            "stripe_webhook_secret": WEBHOOK_SECRET,
            "stripe_timeout": 2.0,
        }
    )


@pytest.fixture
def stripe_client(stripe_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(stripe_settings), raise_server_exceptions=False) as c:
        yield c


def post_event(
    client: TestClient,
    event: dict[str, object],
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    """Deliver an event to the webhook endpoint, signed exactly as Stripe signs it."""
    import json

    from tests.fakes.stripe_api import stripe_signature

    payload = json.dumps(event).encode()
    return client.post(
        "/webhooks/stripe",
        content=payload,
        headers={
            "Stripe-Signature": stripe_signature(payload, secret, timestamp),
            "Content-Type": "application/json",
        },
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep `xdist_group` working: xdist 3.8 marks a test's group by rewriting `_nodeid`, but
    pytest 9.2 derives the node id from `_id`, so the group was lost and grouped tests (the
    browser, fault and fuzz suites, each with one live server) spread over both workers."""
    from _pytest.nodeid import coerce_node_id

    for item in items:
        wanted = getattr(item, "_nodeid", None)
        if isinstance(wanted, str) and "@" in wanted and item.nodeid != wanted:
            item._id = coerce_node_id(wanted)


def start_server(
    env: dict[str, str], port: int, *, ready: str = "/healthz"
) -> subprocess.Popen[bytes]:
    """`rapport serve` in its own process with env, returned once `ready` answers 200 (a loaded
    CI machine starts slowly: up to 90 s); its stderr is in the error when it does not start."""
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"rapport serve did not start: {err}") from None
            time.sleep(0.2)
