"""The app server killed (SIGKILL) while batches arrive: nothing acknowledged is lost, nothing
is stored twice, and the rollups still agree with the stored events.

`rapport serve` runs in its own process on a fresh PostgreSQL database. A few threads send
batches of 50 events with fresh ids as the player would, each retrying a batch with the same
ids until it is acknowledged (202). The server is killed mid-run and started again; the
threads carry on. At the end every acknowledged event is in the database exactly once, the
per-lesson progress and the buyer's totals equal what the stored events add up to, and
acknowledged batches sent again count as duplicates.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx2 as httpx
import pytest
from sqlalchemy import text
from sqlmodel import Session

from app.accounts import service as accounts
from app.db import make_engine
from app.engagement import coverage
from app.engagement.service import PAGE_READ_SECONDS
from tests.conftest import COURSES, ROOT, create_pg_database, drop_pg_database, free_port

pytestmark = pytest.mark.postgres

BUYER = "killed@example.com"
THREADS = 4
BATCH = 50
BEFORE_KILL = 30  # batches acknowledged before the kill
AFTER_RESTART = 30  # and after the restart
PATIENCE = 90.0  # seconds a batch may take to be acknowledged, server restart included


@dataclass(frozen=True)
class Lessons:
    videos: dict[int, float]  # lesson id -> duration
    pdf: tuple[int, int]  # lesson id, pages
    texts: list[int]


class LiveServer:
    """`python -m app serve` on a fixed port, killed and started again by the test."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.url = env, port, f"http://127.0.0.1:{port}"
        self.log: IO[bytes] = log.open("ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(self.port), "--no-migrate"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rapport serve did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log_tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def cli(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "app", *args], env=env, cwd=ROOT, check=True, capture_output=True
    )


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    url = create_pg_database()  # fails instead of skipping under CI=true when PG is missing
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="module")
def server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, Lessons]]:
    tmp = tmp_path_factory.mktemp("kill")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")},
        "RAPPORT_DATABASE_URL": database_url,
        "RAPPORT_DATA_DIR": str(tmp),
        "RAPPORT_BASE_URL": f"http://127.0.0.1:{port}",
        # The same key after the restart: the buyer's session cookie stays valid.
        "RAPPORT_SECRET_KEY": "kill-test-secret-key-of-enough-length-0123456789",
        "RAPPORT_ACCESS_LOG": "false",
    }
    cli(env, "migrate")
    cli(env, "publish", str(COURSES / "trust-at-a-distance"))
    cli(env, "create-user", BUYER)
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO entitlement (user_id, product_id, granted_at)"
                ' SELECT u.id, p.id, now() FROM "user" u, product p'
                " WHERE u.email = :email AND p.slug = 'trust-at-a-distance'"
            ),
            {"email": BUYER},
        )
        rows = conn.execute(
            text(
                "SELECT l.id, l.kind, a.duration_seconds, a.page_count FROM lesson l"
                " LEFT JOIN asset a ON a.id = l.asset_id"
            )
        ).all()
    engine.dispose()
    videos = {r.id: float(r.duration_seconds) for r in rows if r.kind == "video"}
    pdf = next((r.id, int(r.page_count)) for r in rows if r.kind == "pdf")
    texts = [r.id for r in rows if r.kind == "text"]
    assert videos and texts and pdf[1] > 1
    live = LiveServer(env, port, tmp / "server.log")
    live.start()
    try:
        yield live, Lessons(videos, pdf, texts)
    finally:
        live.stop()


def sign_in(url: str, database_url: str) -> dict[str, str]:
    """A real sign-in through a single-use link: the cookies a browser would keep."""
    engine = make_engine(database_url)
    with Session(engine) as s:
        token = accounts.create_login_link(session=s, email=BUYER, ttl_seconds=60)
        s.commit()
    engine.dispose()
    with httpx.Client(base_url=url) as client:
        assert client.get("/auth/magic", params={"token": token}).status_code == 200
        csrf = client.cookies["rapport_csrf"]
        r = client.post(
            "/auth/magic",
            data={"token": token, "next": "/account", "csrftoken": csrf},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        return {"rapport_csrf": csrf, "rapport_session": client.cookies["rapport_session"]}


def make_batch(lessons: Lessons, rng: random.Random) -> list[dict[str, Any]]:
    """50 events as the player and the reader send them, with fresh ids."""
    at = int(time.time() * 1000)
    batch: list[dict[str, Any]] = []
    for i in range(BATCH):
        event: dict[str, Any] = {"id": str(uuid.uuid4()), "at": at}
        if i % 10 == 0:
            page = rng.randint(1, lessons.pdf[1])
            event |= {"kind": "page_viewed", "lesson_id": lessons.pdf[0], "page": page}
            event["seconds"] = rng.choice([1, 3, 12])  # 1 s: flipped past, not read
        elif i % 25 == 1:
            event |= {"kind": "lesson_completed", "lesson_id": rng.choice(lessons.texts)}
        else:
            lesson, duration = rng.choice(sorted(lessons.videos.items()))
            start = rng.randint(0, int(duration) - 3)
            event |= {"kind": "video_progress", "lesson_id": lesson, "start": start}
            event |= {"end": start + rng.randint(1, 2), "rate": rng.choice([1, 1.5, 2])}
        batch.append(event)
    return batch


@dataclass
class Load:
    """What the sending threads did, shared with the test."""

    url: str
    cookies: dict[str, str]
    lessons: Lessons
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: list[tuple[list[dict[str, Any]], dict[str, Any]]] = field(default_factory=list)
    failed_tries: int = 0  # connection errors and 503s, each followed by a retry
    errors: list[str] = field(default_factory=list)

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def send(self, seed: int) -> None:
        rng = random.Random(seed)
        headers = {"x-csrftoken": self.cookies["rapport_csrf"]}
        with httpx.Client(base_url=self.url, cookies=self.cookies, timeout=30) as client:
            while not self.stop.is_set():
                batch = make_batch(self.lessons, rng)
                deadline = time.monotonic() + PATIENCE
                while True:  # the same batch, the same ids, until acknowledged
                    try:
                        r = client.post("/api/v1/events", json={"events": batch}, headers=headers)
                    except httpx.TransportError:
                        r = None
                    if r is not None and r.status_code == 202:
                        with self.lock:
                            self.acknowledged.append((batch, r.json()))
                        break
                    if r is not None and r.status_code != 503:
                        with self.lock:
                            self.errors.append(f"{r.status_code} {r.text[:300]}")
                        return
                    with self.lock:
                        self.failed_tries += 1
                    if time.monotonic() > deadline:
                        with self.lock:
                            self.errors.append("a batch was never acknowledged")
                        return
                    time.sleep(0.05)


def wait_for(load: Load, count: int, live: LiveServer) -> None:
    deadline = time.monotonic() + PATIENCE
    while load.count() < count and not load.errors:
        if time.monotonic() > deadline:
            load.errors.append(f"only {load.count()} batches acknowledged, {count} expected")
        time.sleep(0.02)
    assert not load.errors, f"{load.errors}\n--- the server's log ---\n{live.log_tail()}"


def test_sigkill_mid_run_loses_nothing_and_stores_nothing_twice(
    server: tuple[LiveServer, Lessons], database_url: str
) -> None:
    live, lessons = server
    load = Load(live.url, sign_in(live.url, database_url), lessons)
    threads = [threading.Thread(target=load.send, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    try:
        wait_for(load, BEFORE_KILL, live)
        live.kill()  # while the threads keep sending: some batches are cut off mid-request
        killed_at = load.count()
        live.start()
        wait_for(load, killed_at + AFTER_RESTART, live)
    finally:
        load.stop.set()
        for t in threads:
            t.join(timeout=PATIENCE)
    assert not load.errors, f"{load.errors}\n--- the server's log ---\n{live.log_tail()}"
    resent = sum(1 for _b, a in load.acknowledged if a["duplicate"])
    print(
        f"{len(load.acknowledged)} batches acknowledged, {load.failed_tries} tries failed, "
        f"{resent} acknowledged on a retry after their first try had been stored"
    )

    sent = [e for batch, _answer in load.acknowledged for e in batch]
    engine = make_engine(database_url)
    with engine.connect() as conn:
        user_id = conn.execute(
            text('SELECT id FROM "user" WHERE email = :e'), {"e": BUYER}
        ).scalar_one()
        events = conn.execute(
            text(
                'SELECT client_id, kind, lesson_id, start, "end", page, seconds'
                " FROM engagement_event WHERE user_id = :u"
            ),
            {"u": user_id},
        ).all()
        progress = {
            row.lesson_id: row
            for row in conn.execute(
                text("SELECT * FROM lesson_progress WHERE user_id = :u"), {"u": user_id}
            )
        }
        buyer = conn.execute(
            text("SELECT * FROM buyer_engagement WHERE user_id = :u"), {"u": user_id}
        ).one()

    # Every acknowledged event exactly once, and nothing else.
    stored_ids = [str(row.client_id) for row in events]
    assert len(stored_ids) == len(set(stored_ids))
    assert set(stored_ids) == {e["id"] for e in sent}
    # A batch acknowledged after its first try had been cut off reports its events as
    # duplicates: counted once in all, either way.
    assert sum(a["accepted"] + a["duplicate"] for _b, a in load.acknowledged) == len(sent)
    assert all(a["rejected"] == 0 for _b, a in load.acknowledged)

    # The rollups equal what the stored events add up to.
    stretches: dict[int, list[tuple[float, float]]] = defaultdict(list)
    pages: dict[int, set[int]] = defaultdict(set)
    reading: dict[int, float] = defaultdict(float)
    for row in events:
        if row.kind == "video_progress":
            stretches[row.lesson_id].append((row.start, row.end))
        if row.kind == "page_viewed":
            reading[row.lesson_id] += row.seconds
            if row.seconds >= PAGE_READ_SECONDS:
                pages[row.lesson_id].add(row.page)
    assert set(progress) == {row.lesson_id for row in events}
    for lesson_id, row in progress.items():
        merged = coverage.merge(stretches[lesson_id])
        assert row.intervals == merged
        assert row.covered_seconds == coverage.covered(merged)
        assert row.pages == sorted(pages[lesson_id])
        assert row.reading_seconds == pytest.approx(reading[lesson_id])
        if lesson_id in lessons.videos:
            done = coverage.is_complete(row.covered_seconds, lessons.videos[lesson_id])
            assert (row.completed_at is not None) == done
    assert buyer.media_seconds == pytest.approx(
        sum(r.covered_seconds for r in progress.values()), abs=0.01
    )
    assert buyer.pages_read == sum(len(p) for p in pages.values())
    assert buyer.reading_seconds == pytest.approx(sum(reading.values()), abs=0.01)
    assert buyer.lessons_completed == sum(r.completed_at is not None for r in progress.values())

    # Acknowledged batches sent again, after the restart: duplicates, nothing stored.
    headers = {"x-csrftoken": load.cookies["rapport_csrf"]}
    with httpx.Client(base_url=live.url, cookies=load.cookies) as client:
        for batch, _answer in load.acknowledged[:5]:
            r = client.post("/api/v1/events", json={"events": batch}, headers=headers)
            assert r.status_code == 202
            assert (r.json()["accepted"], r.json()["duplicate"]) == (0, BATCH)
    with engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM engagement_event WHERE user_id = :u"), {"u": user_id}
        ).scalar_one()
    engine.dispose()
    assert count == len(sent)
