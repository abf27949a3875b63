"""Personalised e-book copies: made once in a job, only for the buyer, counted, failing clearly."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pikepdf
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlmodel import Session, select

from app.accounts.models import User
from app.catalog.models import Asset, AssetStatus, Lesson
from app.catalog.service import publish_folder
from app.checkout.models import Entitlement
from app.delivery.models import CopyStatus, StampedCopy
from tests.conftest import COURSES, make_user, sign_in
from tests.test_access import paid_test_order


def setup_shop(app: FastAPI, engine: Engine) -> str:
    with Session(engine) as s:
        publish_folder(session=s, storage=app.state.storage, folder=COURSES / "linkedin-playbook")
        s.commit()
        buyer = make_user(engine, "ada@example.com", name="Ada Lovelace")
        make_user(engine, "bob@example.com")
        paid_test_order(s, buyer)
        s.commit()
        pdf = s.exec(select(Lesson).where(Lesson.kind == "pdf")).one()
    return f"/learn/linkedin-playbook/{pdf.key}/download"


def test_buyer_gets_a_stamped_copy_once(app: FastAPI, engine: Engine) -> None:
    url = setup_shop(app, engine)
    with TestClient(app) as ada:
        sign_in(ada, engine, "ada@example.com")
        first = ada.get(url)
        assert first.status_code == 202 and "Preparing your copy" in first.text
        app.state.jobs.drain()
        ready = ada.get(url, follow_redirects=False)
        assert ready.status_code == 303
        pdf = ada.get(ready.headers["location"])
        assert pdf.status_code == 200 and "attachment" in pdf.headers["content-disposition"]
        with pikepdf.open(io.BytesIO(pdf.content)) as doc:
            meta = str(doc.open_metadata()) + str(doc.docinfo)
            assert "ada@example.com" in meta and "R-" in meta
        ada.get(url, follow_redirects=False)
    with Session(engine) as s:
        copy = s.exec(select(StampedCopy)).one()  # one copy, reused
        assert copy.status == CopyStatus.ready and copy.downloads == 2


def test_others_and_the_revoked_get_nothing(app: FastAPI, engine: Engine) -> None:
    url = setup_shop(app, engine)
    with TestClient(app) as bob, TestClient(app) as anonymous, TestClient(app) as ada:
        sign_in(bob, engine, "bob@example.com")
        assert bob.get(url).status_code == 404
        assert anonymous.get(url, follow_redirects=False).status_code == 303  # to sign in
        sign_in(ada, engine, "ada@example.com")
        with Session(engine) as s:
            s.execute(update(Entitlement).values(revoked_at=Entitlement.granted_at))
            s.commit()
        assert ada.get(url).status_code == 403
    with Session(engine) as s:
        assert s.exec(select(StampedCopy)).first() is None


def test_download_limit(app: FastAPI, engine: Engine) -> None:
    url = setup_shop(app, engine)
    app.state.settings = app.state.settings.model_copy(update={"download_limit": 2})
    with TestClient(app) as ada:
        sign_in(ada, engine, "ada@example.com")
        ada.get(url)
        app.state.jobs.drain()
        assert [ada.get(url, follow_redirects=False).status_code for _ in range(3)] == [
            303,
            303,
            429,
        ]


def test_a_corrupt_pdf_fails_clearly(app: FastAPI, engine: Engine, outbox: Path) -> None:
    url = setup_shop(app, engine)
    with Session(engine) as s:
        asset = s.exec(select(Asset).where(Asset.content_type == "application/pdf")).one()
        app.state.storage.put(
            asset.storage_key, io.BytesIO(b"%PDF-1.7 broken"), content_type="application/pdf"
        )
    with TestClient(app) as ada:
        sign_in(ada, engine, "ada@example.com")
        ada.get(url)
        app.state.jobs.drain()
        failed = ada.get(url)
        assert failed.status_code == 409 and "could not be prepared" in failed.text
    with Session(engine) as s:
        assert s.exec(select(StampedCopy)).one().status == CopyStatus.failed
        assert (
            s.exec(select(Asset).where(Asset.content_type == "application/pdf")).one().status
            == AssetStatus.failed
        )
    assert any("needs attention" in p.read_text() for p in outbox.glob("*.eml"))


def _ready_copy(app: FastAPI, engine: Engine, client: TestClient, url: str) -> StampedCopy:
    client.get(url)
    app.state.jobs.drain()
    with Session(engine) as s:
        copy = s.exec(select(StampedCopy)).one()
        assert copy.status == CopyStatus.ready
        return copy


def _downloads(engine: Engine) -> int:
    with Session(engine) as s:
        return s.exec(select(StampedCopy)).one().downloads


def test_a_lost_copy_is_made_again_without_counting(app: FastAPI, engine: Engine) -> None:
    url = setup_shop(app, engine)
    with TestClient(app) as ada:
        sign_in(ada, engine, "ada@example.com")
        copy = _ready_copy(app, engine, ada, url)
        app.state.storage.delete(copy.storage_key)  # storage lost the stamped file
        again = ada.get(url, follow_redirects=False)
        assert again.status_code == 202 and "Preparing your copy" in again.text
        assert _downloads(engine) == 0
        app.state.jobs.drain()
        ready = ada.get(url, follow_redirects=False)
        assert ready.status_code == 303
        assert ada.get(ready.headers["location"]).status_code == 200
    assert _downloads(engine) == 1


def test_storage_trouble_does_not_count(
    app: FastAPI, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.delivery.storage import StorageUnavailable

    url = setup_shop(app, engine)
    with TestClient(app, raise_server_exceptions=False) as ada:
        sign_in(ada, engine, "ada@example.com")
        _ready_copy(app, engine, ada, url)

        def unreachable(*args: object, **kwargs: object) -> object:
            raise StorageUnavailable("the bucket is not reachable")

        with monkeypatch.context() as m:
            m.setattr(app.state.storage, "exists", unreachable)
            m.setattr(app.state.storage, "size", unreachable)
            m.setattr(app.state.storage, "download_url", unreachable)
            assert ada.get(url, follow_redirects=False).status_code == 503
        assert _downloads(engine) == 0
        assert ada.get(url, follow_redirects=False).status_code == 303
    assert _downloads(engine) == 1


def test_a_failed_stamp_does_not_count(app: FastAPI, engine: Engine) -> None:
    url = setup_shop(app, engine)
    with Session(engine) as s:
        asset = s.exec(select(Asset).where(Asset.content_type == "application/pdf")).one()
        app.state.storage.put(
            asset.storage_key, io.BytesIO(b"%PDF-1.7 broken"), content_type="application/pdf"
        )
    with TestClient(app) as ada:
        sign_in(ada, engine, "ada@example.com")
        ada.get(url)
        app.state.jobs.drain()
        assert [ada.get(url).status_code for _ in range(3)] == [409, 409, 409]
    assert _downloads(engine) == 0


LONG_NAME = ("Jürgen Ωμέγα 山田 Łódź " * 20)[:200]


def _disposition_names(header: str) -> tuple[str, str]:
    """The ASCII `filename="..."` and the decoded `filename*=UTF-8''...` of the header."""
    from urllib.parse import unquote

    ascii_part = re.search(r'filename="([^"]*)"', header)
    utf8_part = re.search(r"filename\*=UTF-8''([^;\s]+)", header)
    assert ascii_part and utf8_part, header
    return ascii_part.group(1), unquote(utf8_part.group(1), errors="strict")


def test_a_long_non_ascii_name_downloads(app: FastAPI, engine: Engine) -> None:
    url = setup_shop(app, engine)
    with Session(engine) as s:
        ada = s.exec(select(User).where(User.email == "ada@example.com")).one()
        ada.name = LONG_NAME
        s.commit()
    with TestClient(app) as client:
        sign_in(client, engine, "ada@example.com")
        client.get(url)
        app.state.jobs.drain()
        ready = client.get(url, follow_redirects=False)
        assert ready.status_code == 303, ready.text
        pdf = client.get(ready.headers["location"])
        assert pdf.status_code == 200, pdf.text[:300]
        assert pdf.content.startswith(b"%PDF-")
    header = pdf.headers["content-disposition"]
    assert header.startswith("attachment; ")
    fallback, full = _disposition_names(header)
    assert fallback.isascii() and fallback.endswith(".pdf") and len(fallback) <= 100
    assert full.endswith(".pdf") and len(full.encode()) <= 150  # whole characters: decoded
    assert full.startswith("The B2B LinkedIn Playbook - Jürgen Ωμέγα 山田")
    assert fallback.startswith("The B2B LinkedIn Playbook - Jurgen")
