"""`rapport create-user` and `rapport migrate` from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from app.__main__ import cli
from app.accounts.models import Role, User
from tests.conftest import COURSES, free_port


@pytest.fixture
def runner(database_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("RAPPORT_DATABASE_URL", database_url)
    return CliRunner()


def test_create_user_with_role(runner: CliRunner, engine: Engine) -> None:
    result = runner.invoke(
        cli, ["create-user", "Author@Example.com", "--role", "author", "--name", "Ada"]
    )
    assert result.exit_code == 0, result.output
    with Session(engine) as s:
        user = s.exec(select(User)).one()
    assert user.email == "author@example.com" and user.role == Role.author and user.name == "Ada"


def test_create_user_refuses_duplicates_and_bad_input(runner: CliRunner, engine: Engine) -> None:
    assert runner.invoke(cli, ["create-user", "a@example.com", "--role", "admin"]).exit_code == 0
    dup = runner.invoke(cli, ["create-user", "A@example.com", "--role", "admin"])
    assert dup.exit_code == 2 and "already exists" in dup.output
    assert (
        runner.invoke(
            cli, ["create-user", "a@example.com", "--role", "admin", "--if-missing"]
        ).exit_code
        == 0
    )
    bad = runner.invoke(cli, ["create-user", "not-an-email"])
    assert bad.exit_code == 2 and "not a valid email" in bad.output
    role = runner.invoke(cli, ["create-user", "b@example.com", "--role", "king"])
    assert role.exit_code == 2
    with Session(engine) as s:
        assert len(s.exec(select(User)).all()) == 1


def test_migrate_is_idempotent(runner: CliRunner, engine: Engine) -> None:
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    assert runner.invoke(cli, ["migrate"]).exit_code == 0


def test_bad_settings_are_a_clear_cli_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAPPORT_STORAGE", "floppy")
    result = CliRunner().invoke(cli, ["migrate"])
    assert result.exit_code == 2 and "storage" in result.output


def test_unreachable_or_unmigrated_database_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAPPORT_DATABASE_URL", f"sqlite:///{tmp_path / 'blank.db'}")
    monkeypatch.setenv("RAPPORT_MEDIA_DIR", str(tmp_path / "media"))
    result = CliRunner().invoke(cli, ["publish", str(COURSES / "linkedin-playbook")])
    assert result.exit_code == 1 and "rapport migrate" in result.output
    monkeypatch.setenv("RAPPORT_DATABASE_URL", f"postgresql://nobody@127.0.0.1:{free_port()}/x")
    result = CliRunner().invoke(cli, ["create-user", "x@example.com"])
    assert result.exit_code == 1 and "database error" in result.output
