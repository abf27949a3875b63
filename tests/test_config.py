"""Settings refuse unsafe values outside development."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import DEV_SECRET, Settings


def test_production_refuses_the_default_secret() -> None:
    with pytest.raises(ValidationError, match="RAPPORT_SECRET_KEY"):
        Settings(
            env="production", secret_key=DEV_SECRET, database_url="postgresql://x/y", _env_file=None
        )


def test_production_refuses_sqlite() -> None:
    with pytest.raises(ValidationError, match="PostgreSQL"):
        Settings(env="production", secret_key="x" * 40, _env_file=None)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAPPORT_STORAGE", "s3")
    monkeypatch.setenv("RAPPORT_DOWNLOAD_URL_TTL", "300")
    s = Settings(_env_file=None)
    assert s.storage == "s3" and s.download_url_ttl == 300
    monkeypatch.setenv("RAPPORT_STORAGE", "ftp")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_production_refuses_test_mode_payments_and_http() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(
            env="production",
            secret_key="x" * 40,
            database_url="postgresql://x/y",
            base_url="http://shop.example",
            _env_file=None,
        )
    message = str(refused.value)
    assert "https://" in message and "test-mode payments" in message


def test_production_starts_with_safe_settings() -> None:
    s = Settings(
        env="production",
        secret_key="x" * 40,
        database_url="postgresql://x/y",
        base_url="https://shop.example",
        stripe_secret_key="sk_live_x",
        stripe_webhook_secret="whsec_x",
        _env_file=None,
    )
    assert s.secure_cookies
