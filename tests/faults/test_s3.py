"""S3 goes away and comes back while the app runs: 503 where S3 is needed, then recovery."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator

import httpx2 as httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.accounts import service as accounts
from app.accounts.models import User
from app.catalog.models import Lesson
from tests.conftest import MotoServer, free_port, make_bucket, make_user, missing
from tests.faults.conftest import DEMO, Rapport, Stopwatch, add_buyer, sign_in, wait_until

pytestmark = [pytest.mark.s3, pytest.mark.xdist_group("faults")]

SLUG = "trust-at-a-distance"
PDF = DEMO / "media" / "b2b-linkedin-playbook.pdf"


@pytest.fixture
def s3() -> Iterator[MotoServer]:
    """moto's S3 on a port of this test alone, so that stopping it disturbs no other test."""
    server = MotoServer(free_port())
    try:
        server.start()
    except Exception as exc:  # pragma: no cover - only when moto[server] is broken
        missing("moto's S3 server", f"{exc}; install the dev dependencies (make install)")
    yield server
    server.stop()


def lesson_id(engine: Engine, key: str) -> int:
    with Session(engine) as s:
        lesson = s.exec(select(Lesson).where(Lesson.key == key)).one()
        assert lesson.id is not None
        return lesson.id


def author_token(engine: Engine) -> str:
    make_user(engine, "ada@example.com", role="author", name="Ada")
    with Session(engine) as s:
        ada = s.exec(select(User).where(User.email == "ada@example.com")).one()
        _row, plain = accounts.create_api_token(session=s, user=ada, name="faults")
        s.commit()
    return plain


def reuse_upload(client: httpx.Client, token: str) -> httpx.Response:
    """An author re-declares a file the shop already has: the app asks S3 whether it is there."""
    data = PDF.read_bytes()
    return client.post(
        "/api/v1/author/uploads",
        json={
            "kind": "pdf",
            "filename": PDF.name,
            "size": len(data),
            "head": base64.b64encode(data[:64]).decode(),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        headers={"Authorization": f"Bearer {token}"},
    )


def fetch(url: str) -> httpx.Response:
    """What the browser does with a presigned URL: it goes to S3, not to the app."""
    return httpx.get(url, headers={"Range": "bytes=0-99"}, timeout=10)


def test_s3_outage_answers_503_where_needed_and_recovers(
    make_rapport: Callable[[dict[str, str]], Rapport], s3: MotoServer
) -> None:
    app = make_rapport(
        {
            "RAPPORT_STORAGE": "s3",
            "RAPPORT_S3_BUCKET": make_bucket(s3.url),
            "RAPPORT_S3_ENDPOINT_URL": s3.url,
        }
    )
    engine = app.engine()
    add_buyer(engine, "buyer@example.com")
    token = author_token(engine)
    video = lesson_id(engine, "first-call-limits")
    app.serve()
    clock = Stopwatch("s3")
    with app.client() as buyer, app.client() as author:
        sign_in(buyer, engine, "buyer@example.com")
        assert buyer.get("/readyz").status_code == 200
        link = buyer.get(f"/api/v1/lessons/{video}/stream")
        assert link.status_code == 200 and fetch(link.json()["url"]).status_code == 206
        assert reuse_upload(author, token).status_code == 200

        s3.stop()
        clock.mark("S3 stopped")
        ready = buyer.get("/readyz")
        assert ready.status_code == 503 and ready.json()["failing"] == ["storage"]
        assert ready.headers["retry-after"]
        assert buyer.get("/healthz").status_code == 200
        # Pages and links that need no call to S3 are still served: a presigned URL is made
        # without the network. Fetching it fails now; the player retries it later.
        assert buyer.get("/").status_code == 200
        assert buyer.get(f"/products/{SLUG}").status_code == 200
        assert buyer.get(f"/learn/{SLUG}/first-call-limits").status_code == 200
        issued = buyer.get(f"/api/v1/lessons/{video}/stream")
        assert issued.status_code == 200
        with pytest.raises(httpx.TransportError):
            fetch(issued.json()["url"])
        # A request that needs S3 now: a clear 503 with Retry-After, not a 500.
        refused = reuse_upload(author, token)
        assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
        assert refused.json()["status"] == 503
        # The buyer's stamped e-book: accepted (202, being prepared); its job needs S3.
        preparing = buyer.get(f"/learn/{SLUG}/linkedin-playbook/download")
        assert preparing.status_code == 202
        wait_until(
            lambda: "job.retry" in app.log_events(), timeout=15, what="a failed stamp_copy attempt"
        )
        clock.mark("answers checked; the e-book job failed once and waits for its retry")

        s3.start()  # the same port; the app is not restarted
        clock.mark("S3 started again")
        wait_until(
            lambda: buyer.get("/readyz").status_code == 200, timeout=30, what="/readyz to be 200"
        )
        clock.mark("/readyz is 200")
        assert fetch(issued.json()["url"]).status_code == 206  # the link made while S3 was away
        assert reuse_upload(author, token).status_code == 200

        def copy_ready() -> str | None:
            r = buyer.get(f"/learn/{SLUG}/linkedin-playbook/download")
            assert r.status_code in (202, 303), r.status_code  # never failed for good
            return r.headers["location"] if r.status_code == 303 else None

        url = wait_until(copy_ready, timeout=30, what="the e-book copy, stamped after the outage")
        clock.mark("the e-book copy was stamped by its retried job")
        pdf = httpx.get(url, timeout=10)
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert "job.failed" not in app.log_events(), app.log_tail()
