"""Personalised e-book copies: made once in a job, only for the buyer, counted, failing clearly."""

from __future__ import annotations

import io
from pathlib import Path

import pikepdf
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlmodel import Session, select

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
