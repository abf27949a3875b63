"""Private dependencies that a test may stop and start, and the real app as a subprocess.

The shared PostgreSQL (5432) and Redis (6379) serve every other test of the suite, so these
tests never touch them: they start their own server on a free port, in a temporary folder,
and stop and start that one. The app runs as `python -m app serve` (and `python -m app
worker`) in a process of its own, exactly as an operator runs it, and is never restarted
while its dependency comes and goes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import TypeVar

import httpx2 as httpx
import pytest
import redis
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from app import migrate
from app.catalog.service import publish_folder
from app.config import Settings
from app.db import normalize_url
from app.delivery.storage import make_storage
from tests.conftest import COURSES, ROOT, SmtpInbox, free_port, missing

T = TypeVar("T")

DEMO = COURSES / "trust-at-a-distance"
SECRET = "fault-tests-secret-key-0123456789-abcdefghij"
# Every request of these tests is bounded: an app that hangs on a dead dependency fails the
# test with a timeout instead of holding the suite.
REQUEST_TIMEOUT = 20.0


def wait_until(check: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll check until it returns something truthy; fail with `what` (and the last error).

    A connection error counts as "not yet" (a server starting); a failed assertion inside
    check fails at once: an answer that must never come must not be waited out.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (httpx.TransportError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {type(last).__name__}: {last})" if last else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(0.1)


class Stopwatch:
    """Notes how long the steps of a fault took, printed for the report (`pytest -s`/`-rP`);
    the tests wait with deadlines but never assert on a duration."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.start = self.last = time.monotonic()

    def mark(self, what: str) -> None:
        now = time.monotonic()
        print(f"[{self.name}] +{now - self.last:5.1f} s (at {now - self.start:5.1f} s): {what}")
        self.last = now


def _private_dir(prefix: str, owner: str | None = None) -> Path:
    """A folder under the system temp dir (pytest's own is 0700 root, closed to `postgres`)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if owner is not None:
        shutil.chown(path, user=owner, group=None)
    return path


# PostgreSQL -------------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    """The folder of initdb and pg_ctl: Debian's newest versioned one, else the PATH's."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for folder in reversed(versions):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


class PrivatePostgres:
    """A PostgreSQL cluster of this test process: trust auth, loopback, a free port."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        # PostgreSQL refuses to run as root: then it runs as the `postgres` OS user.
        self.run_as = "postgres" if os.geteuid() == 0 else None
        self.root = _private_dir("rapport-faults-pg-", self.run_as)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()

    def _pg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        done = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr or done.stdout}")
        return done

    def init(self) -> None:
        # --no-sync: the cluster is thrown away; a crash of the server (not of the machine)
        # still needs the WAL, which is kept and replayed as always.
        self._pg(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.root} -c max_connections=100 "
            # A crashed server (not machine) keeps what it wrote in the OS cache; without
            # fsync the recovery checkpoint of a restart takes a moment, not seconds.
            "-c fsync=off"
        )
        self._pg(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `immediate` is a crash: no checkpoint, recovery from WAL at start."""
        self._pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        done = self._pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "status", check=False)
        return done.returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine.dispose()
        return self.url(name)

    def remove(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A cluster of its own (never the shared 5432 one, which other tests are using)."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        missing(
            "PostgreSQL server binaries (initdb, pg_ctl)",
            "install postgresql (Debian: apt-get install postgresql-15)",
        )
        raise AssertionError("unreachable")  # missing() skips or fails
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing("runuser", "as root, PostgreSQL must be started as the postgres user")
    try:
        server = PrivatePostgres(bin_dir)  # LookupError: no `postgres` OS user to run it as
    except LookupError as exc:
        missing("the postgres OS user", f"{exc}; as root, PostgreSQL runs as that user")
        raise AssertionError("unreachable") from exc
    try:
        server.init()
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.remove()
        missing("a private PostgreSQL cluster", str(exc)[:500])
    yield server
    server.remove()


# Redis -------------------------------------------------------------------------------------------

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class PrivateRedis:
    """A redis-server of this test process on a free port.

    With `persistent`, it keeps an append-only file (fsync'd every second, and fully at a
    shutdown), as a Redis that holds a job queue must: without it, the jobs queued but not yet
    taken by a worker are gone when Redis restarts, whatever the app does.
    """

    def __init__(self, *, persistent: bool = True) -> None:
        self.root = _private_dir("rapport-faults-redis-")
        self.port = free_port()
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        with (self.root / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes" if self.persistent else "no",
                    "--appendfsync",
                    "everysec",
                    "--dir",
                    str(self.root),
                ],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis.from_url(self.url(), socket_connect_timeout=1)
        try:
            wait_until(lambda: self._ping(client), timeout=15, what="redis-server to answer")
        finally:
            client.close()

    def _ping(self, client: redis.Redis) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.log_tail()}")
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
            self.proc = None

    def log_tail(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis of its own (never the shared 6379 one, which other tests are using)."""
    if not Path(REDIS_SERVER).exists():
        missing("redis-server", "install redis (Debian: apt-get install redis-server)")
    server = PrivateRedis()
    try:
        server.start()
    except (RuntimeError, AssertionError, OSError) as exc:
        server.remove()
        missing("a private redis-server", str(exc)[:500])
    yield server
    server.remove()


# The app as an operator runs it ------------------------------------------------------------------


class Rapport:
    """`python -m app serve` (and optionally `worker`) in processes of their own."""

    def __init__(self, folder: Path, settings: dict[str, str]) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")},
            "PYTHONPATH": str(ROOT),
            "RAPPORT_ENV": "test",
            "RAPPORT_SECRET_KEY": SECRET,
            "RAPPORT_BASE_URL": self.url,
            "RAPPORT_DATA_DIR": str(folder / "data"),
            "RAPPORT_ACCESS_LOG": "false",
            "RAPPORT_LOG_JSON": "true",
            "RAPPORT_LOG_LEVEL": "INFO",
            **settings,
        }
        self.server: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.server_log = folder / "serve.log"
        self.worker_log = folder / "worker.log"

    @property
    def database_url(self) -> str:
        return (
            self.env.get("RAPPORT_DATABASE_URL") or f"sqlite:///{self.folder / 'data/rapport.db'}"
        )

    def cli(self, *args: str) -> str:
        """Run `python -m app ARGS` (from the app's folder, away from any developer's .env)."""
        done = subprocess.run(
            [sys.executable, "-m", "app", *args],
            env=self.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"rapport {' '.join(args)}: {done.stderr[-3000:]}"
        return done.stdout

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            # A session of its own: whatever it starts (rq's scheduler) is ended with it.
            return subprocess.Popen(
                [sys.executable, "-m", "app", *args],
                env=self.env,
                cwd=self.folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def serve(self) -> None:
        self.server = self._spawn(["serve", "--port", str(self.port)], self.server_log)
        proc = self.server

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"rapport serve exited: {self.log_tail()}")
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

        wait_until(up, timeout=60, what="rapport serve to answer /healthz")

    def start_worker(self) -> None:
        self.worker = self._spawn(["worker"], self.worker_log)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT, follow_redirects=False)

    def engine(self) -> Engine:
        """An engine of the test's own, without a pool (the server under it may restart)."""
        return create_engine(normalize_url(self.database_url), poolclass=NullPool)

    def log_tail(self, which: str = "serve", size: int = 4000) -> str:
        path = self.server_log if which == "serve" else self.worker_log
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def log_events(self, which: str = "serve") -> list[str]:
        """The `event` names the process logged (structlog JSON lines), in order."""
        path = self.server_log if which == "serve" else self.worker_log
        text = path.read_text(errors="replace") if path.exists() else ""
        return re.findall(r'"event": ?"([^"]+)"', text)

    @staticmethod
    def _end(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        # Its session's stragglers (it was the session leader, so the group id is its pid).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        self._end(self.worker)
        self._end(self.server)


def settings_of(env: dict[str, str]) -> Settings:
    """The Settings that a process started with env reads (for work done in the test itself)."""
    values = {
        k.removeprefix("RAPPORT_").lower(): v for k, v in env.items() if k.startswith("RAPPORT_")
    }
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def make_rapport(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Rapport]]:
    """Make a Rapport with these RAPPORT_* settings: migrated, the demo course published.

    Both are done here, in the test's process, with the code behind `rapport migrate` and
    `rapport publish`: a CLI process costs seconds of imports, and these tests are about what
    the running server does, not about the CLI (which `serve` still runs: it migrates first).
    """
    made: list[Rapport] = []

    def make(settings: dict[str, str]) -> Rapport:
        app = Rapport(tmp_path / f"rapport-{len(made)}", settings)
        app.folder.mkdir(parents=True)
        made.append(app)
        own = settings_of(app.env)
        migrate.upgrade(own.database_url)
        engine = app.engine()
        with Session(engine) as session:
            publish_folder(session=session, storage=make_storage(own), folder=DEMO)
            session.commit()
        engine.dispose()
        return app

    yield make
    for app in made:
        app.stop()


# Accounts and requests ---------------------------------------------------------------------------


def add_buyer(engine: Engine, email: str, *, slug: str = "trust-at-a-distance") -> int:
    """A buyer who owns the product (as a paid order would leave them); returns the user id."""
    from sqlmodel import select

    from app.accounts.models import Role, User
    from app.catalog.models import Product
    from app.checkout.models import Entitlement

    with Session(engine) as s:
        user = User(email=email, role=Role.buyer, name="Fault Tester")
        s.add(user)
        s.flush()
        product = s.exec(select(Product).where(Product.slug == slug)).one()
        s.add(Entitlement(user_id=user.id, product_id=product.id))  # type: ignore[arg-type]
        s.commit()
        assert user.id is not None
        return user.id


def csrf(client: httpx.Client) -> str:
    """The double-submit CSRF cookie, fetched with a form page when there is none yet."""
    if "rapport_csrf" not in client.cookies:
        client.get("/auth/login")
    return str(client.cookies["rapport_csrf"])


def sign_in(client: httpx.Client, engine: Engine, email: str) -> None:
    """Sign the client in through a real single-use link, made in the database."""
    from app.accounts import service

    with Session(engine) as s:
        token = service.create_login_link(session=s, email=email, ttl_seconds=300)
        s.commit()
    assert client.get("/auth/magic", params={"token": token}).status_code == 200
    r = client.post(
        "/auth/magic", data={"token": token, "next": "/account", "csrftoken": csrf(client)}
    )
    assert r.status_code == 303, r.text


INQUIRY = {
    "name": "Grace Hopper",
    "company_name": "Navy Labs",
    "phone": "",
    "message": "We would like to talk about trust at a distance for our sales team.",
}


def recipients(inbox: SmtpInbox) -> list[str]:
    """The To address of each message the SMTP server received, in order."""
    return [str(message_from_bytes(m, policy=policy.default)["To"]) for m in inbox.messages]


def send_inquiry(client: httpx.Client, email: str) -> httpx.Response:
    """The consulting inquiry form, as a visitor sends it (queues two emails)."""
    client.get("/inquiry")
    return client.post("/inquiry", data={**INQUIRY, "email": email, "csrftoken": csrf(client)})
