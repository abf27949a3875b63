"""Fixtures of the admin tests: the known story, and clients signed in as each kind of user."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.admin.story import Story, build
from tests.conftest import make_user, sign_in


@pytest.fixture
def story(engine: Engine) -> Story:
    return build(engine)


@pytest.fixture
def admin_client(app: FastAPI, engine: Engine) -> TestClient:
    make_user(engine, "admin@example.com", "admin")
    client = TestClient(app, raise_server_exceptions=False)
    sign_in(client, engine, "admin@example.com")
    return client
