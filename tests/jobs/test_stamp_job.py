"""The jobs moved onto the runners: stamping gives up with a reason, email outlasts outages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.catalog.models import Asset, AssetStatus
from app.catalog.service import publish_folder
from app.delivery.models import CopyStatus, StampedCopy
from app.delivery.storage import StorageError
from app.integrations.queue import RedisRunner
from app.jobs.base import JobContext
from app.jobs.runner import InProcessRunner
from app.mail import Mail, MailError, OutboxMailer
from tests.conftest import COURSES, make_user, sign_in
from tests.delivery.test_copies import setup_shop
from tests.test_access import paid_test_order


class BrokenStorage:
    """The app's storage, except that reading the e-book fails (S3 down, say)."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        raise StorageError(f"storage unreachable reading {key}")


def _context(app: FastAPI, runner: object) -> JobContext:
    state = app.state
    return JobContext(
        settings=state.settings,
        engine=state.engine,
        storage=BrokenStorage(state.storage),  # type: ignore[arg-type]
        mailer=state.mailer,
        jobs=runner,  # type: ignore[arg-type]
    )


def _assert_given_up(engine: Engine, outbox: Path) -> None:
    with Session(engine) as s:
        copy = s.exec(select(StampedCopy)).one()
        assert copy.status == CopyStatus.failed
        assert copy.error is not None and "StorageError: storage unreachable" in copy.error
        # Not the file's fault: the asset stays ready for the next buyer.
        pdf = s.exec(select(Asset).where(Asset.content_type == "application/pdf")).one()
        assert pdf.status == AssetStatus.ready
    notices = [p.read_text() for p in outbox.glob("*.eml")]
    assert any("needs attention" in n and "storage is reachable" in n for n in notices)


def test_stamping_retries_then_records_why_it_gave_up(
    app: FastAPI, engine: Engine, outbox: Path
) -> None:
    holder: list[InProcessRunner] = []
    runner = InProcessRunner(lambda: _context(app, holder[0]), backoff=(0.05, 0.05))
    holder.append(runner)
    app.state.jobs = runner
    url = setup_shop(app, engine)
    with TestClient(app) as ada:
        sign_in(ada, engine, "ada@example.com")
        assert ada.get(url).status_code == 202
        assert runner.drain(timeout=20)
        _assert_given_up(engine, outbox)
        assert ada.get(url).status_code == 409  # the buyer is told, not left waiting


def test_stamping_on_redis_retries_then_records_why_it_gave_up(
    app: FastAPI, engine: Engine, outbox: Path, redis_url: str, queue_name: str
) -> None:
    runner = RedisRunner(redis_url, queue=queue_name, backoff=(1,))
    app.state.jobs = runner
    url = setup_shop(app, engine)
    with TestClient(app) as ada:
        sign_in(ada, engine, "ada@example.com")
        assert ada.get(url).status_code == 202
    runner.work(_context(app, runner), burst=True, log_level="WARNING")
    assert runner.pending() == 0
    _assert_given_up(engine, outbox)
    runner.shutdown()


class FlakyMailer:
    """A mail server that is down for the first `down` attempts."""

    def __init__(self, folder: Path, down: int) -> None:
        self.down = down
        self.outbox = OutboxMailer(folder, "Rapport <noreply@example.com>")

    def send(self, mail: Mail) -> None:
        if self.down > 0:
            self.down -= 1
            raise MailError("SMTP 127.0.0.1:25: connection refused")
        self.outbox.send(mail)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_purchase_email_outlasts_a_mail_server_outage(
    app: FastAPI, engine: Engine, tmp_path: Path
) -> None:
    app.state.mailer = FlakyMailer(tmp_path / "flaky-outbox", down=2)
    app.state.jobs.backoff = (0.05, 0.05, 0.05)
    lena = make_user(engine, "lena@example.com")
    with Session(engine) as s:
        publish_folder(session=s, storage=app.state.storage, folder=COURSES / "linkedin-playbook")
        order_id, _number = paid_test_order(s, lena)
        s.commit()
    app.state.jobs.enqueue("purchase_email", order_id=order_id)
    assert app.state.jobs.drain(timeout=10)
    [mail] = list((tmp_path / "flaky-outbox").glob("*.eml"))
    assert "lena@example.com" in mail.read_text() and "/auth/magic?token=" in mail.read_text()
