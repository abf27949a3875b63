"""`rapport worker`: a real worker process stamps a buyer's e-book copy queued in Redis."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pikepdf
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from app.__main__ import cli
from app.config import Settings
from app.delivery.models import CopyStatus, StampedCopy
from app.integrations.queue import RedisRunner
from tests.conftest import ROOT, sign_in
from tests.delivery.test_copies import setup_shop


def test_worker_refuses_without_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # away from a developer's .env
    result = CliRunner().invoke(cli, ["worker", "--burst"])
    assert result.exit_code == 2 and "RAPPORT_REDIS_URL" in result.output


def test_a_worker_process_stamps_a_copy_queued_by_the_app(
    app: FastAPI,
    engine: Engine,
    settings: Settings,
    redis_url: str,
    queue_name: str,
    tmp_path: Path,
) -> None:
    runner = RedisRunner(redis_url, queue=queue_name)
    app.state.jobs = runner
    url = setup_shop(app, engine)
    with TestClient(app) as ada:
        sign_in(ada, engine, "ada@example.com")
        assert ada.get(url).status_code == 202
        assert ada.get(url).status_code == 202  # asked again while waiting: still one job
        assert runner.pending() == 1
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")},
            "PYTHONPATH": str(ROOT),
            "RAPPORT_ENV": "test",
            "RAPPORT_DATABASE_URL": settings.database_url,
            "RAPPORT_DATA_DIR": str(tmp_path / "worker"),
            "RAPPORT_MEDIA_DIR": str(settings.media_dir),
            "RAPPORT_REDIS_URL": redis_url,
            "RAPPORT_JOBS_QUEUE": queue_name,
            "RAPPORT_LOG_LEVEL": "WARNING",
        }
        (tmp_path / "worker").mkdir()
        done = subprocess.run(
            [sys.executable, "-m", "app", "worker", "--burst"],
            env=env,
            cwd=tmp_path / "worker",  # away from a developer's .env
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert runner.pending() == 0
        with Session(engine) as s:
            copy = s.exec(select(StampedCopy)).one()
            assert copy.status == CopyStatus.ready, copy.error
        ready = ada.get(url, follow_redirects=False)
        assert ready.status_code == 303
        pdf = ada.get(ready.headers["location"])
        with pikepdf.open(io.BytesIO(pdf.content)) as doc:
            assert "ada@example.com" in str(doc.open_metadata()) + str(doc.docinfo)
    runner.shutdown()
