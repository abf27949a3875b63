"""Publishing a course folder: idempotent, in place, and all-or-nothing on a broken manifest."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select
from typer.testing import CliRunner

from app.__main__ import cli
from app.catalog.manifest import ManifestError
from app.catalog.models import Asset, Lesson, Module, Price, Product
from app.catalog.service import publish_folder
from app.delivery.storage import LocalStorage, Storage
from tests.conftest import COURSES


def counts(session: Session) -> dict[str, int]:
    return {
        m.__name__: session.exec(select(func.count()).select_from(m)).one()
        for m in (Product, Price, Module, Lesson, Asset)
    }


def publish(session: Session, storage: Storage, folder: Path):  # type: ignore[no-untyped-def]
    report = publish_folder(session=session, storage=storage, folder=folder)
    session.commit()
    return report


def test_publish_twice_uploads_nothing_the_second_time(session: Session, storage: Storage) -> None:
    folder = COURSES / "trust-at-a-distance"
    first = publish(session, storage, folder)
    assert first.created and len(first.uploaded) >= 3 and first.lessons_added >= 6
    before = counts(session)
    second = publish(session, storage, folder)
    assert not second.created
    assert second.uploaded == [] and second.uploaded_bytes == 0
    assert second.reused == len(first.uploaded)
    assert second.lessons_added == second.lessons_updated == second.lessons_removed == 0
    assert counts(session) == before
    for asset in session.exec(select(Asset)):
        assert storage.exists(asset.storage_key)
        assert storage.size(asset.storage_key) == asset.size


def test_same_file_in_two_products_is_stored_once(session: Session, storage: Storage) -> None:
    publish(session, storage, COURSES / "trust-at-a-distance")
    report = publish(session, storage, COURSES / "linkedin-playbook")
    assert report.uploaded == []  # the e-book PDF is already stored by the course
    assert session.exec(select(func.count()).select_from(Product)).one() == 2


def test_changed_lessons_are_updated_in_place(
    session: Session, storage: Storage, course_copy: Path
) -> None:
    publish(session, storage, course_copy)
    lesson_ids = {ls.key: ls.id for ls in session.exec(select(Lesson))}
    manifest = course_copy / "course.toml"
    text = manifest.read_text()
    # Rename a lesson, swap a video's bytes and change a price.
    text = text.replace("Welcome: three inquiries, no clients", "Welcome, renamed", 1)
    text = re.sub(r"amount = 14900", "amount = 12900", text, count=1)
    manifest.write_text(text)
    video = course_copy / "media" / "welcome.mp4"
    video.write_bytes(video.read_bytes() + b"\0" * 16)
    report = publish(session, storage, course_copy)
    assert report.uploaded == ["welcome.mp4"]
    assert report.lessons_updated == 1 and report.lessons_added == 0
    session.expire_all()
    assert {ls.key: ls.id for ls in session.exec(select(Lesson))} == lesson_ids
    welcome = session.exec(select(Lesson).where(Lesson.key == "welcome")).one()
    assert welcome.title["en"] == "Welcome, renamed"
    eur = session.exec(select(Price).where(Price.currency == "EUR")).one()
    assert eur.amount == 12900


def test_removed_lesson_is_removed(session: Session, storage: Storage, course_copy: Path) -> None:
    publish(session, storage, course_copy)
    manifest = course_copy / "course.toml"
    text = manifest.read_text()
    block = re.search(
        r"\[\[modules\.lessons\]\]\nkey = \"existing-clients\".*?(?=\n\[\[|\Z)", text, re.S
    )
    assert block
    manifest.write_text(text.replace(block.group(0), ""))
    report = publish(session, storage, course_copy)
    assert report.lessons_removed == 1
    assert session.exec(select(Lesson).where(Lesson.key == "existing-clients")).first() is None


BROKEN: dict[str, tuple[Callable[[str], str], str]] = {
    "missing price": (
        lambda t: re.sub(r"\[\[prices\]\]\ncurrency = \"\w+\"\namount = \d+\n", "", t),
        "prices",
    ),
    "unknown lesson kind": (
        lambda t: t.replace('kind = "video"', 'kind = "podcast"', 1),
        "modules[0].lessons[0].kind",
    ),
    "negative price": (lambda t: t.replace("amount = 14900", "amount = -5", 1), "prices[0].amount"),
    # Stripe refuses charges under 0.50 EUR: refused here, not as a 502 at checkout.
    "below the minimum charge": (
        lambda t: t.replace("amount = 14900", "amount = 10", 1),
        "prices[0]: Value error, 0.10 EUR is below the minimum charge of 0.50 EUR",
    ),
    "missing file": (
        lambda t: t.replace("media/welcome.mp4", "media/nope.mp4", 1),
        "modules[0].lessons[0].file",
    ),
    "path escape": (
        lambda t: t.replace("media/welcome.mp4", "../../../etc/passwd", 1),
        "modules[0].lessons[0].file",
    ),
    "unknown field": (
        lambda t: t.replace('status = "published"', 'status = "published"\ncolour = "red"', 1),
        "colour",
    ),
    "bad syntax": (lambda t: t + "\n[[[", "(syntax)"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_manifest_exits_2_and_changes_nothing(
    case: str,
    engine: Engine,
    database_url: str,
    course_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    media = tmp_path / "media"
    monkeypatch.setenv("RAPPORT_DATABASE_URL", database_url)
    monkeypatch.setenv("RAPPORT_MEDIA_DIR", str(media))
    runner = CliRunner()
    ok = runner.invoke(cli, ["publish", str(course_copy)])
    assert ok.exit_code == 0, ok.output
    with Session(engine) as s:
        before = counts(s)
    stored = sorted(p.name for p in media.rglob("*") if p.is_file())

    change, field = BROKEN[case]
    manifest = course_copy / "course.toml"
    manifest.write_text(change(manifest.read_text()))
    (course_copy / "media" / "first-call-limits.mp4").write_bytes(b"\0\0\0\x20ftypisom changed")
    result = runner.invoke(cli, ["publish", str(course_copy)])
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert "course.toml" in flat and field in flat, flat
    with Session(engine) as s:
        assert counts(s) == before
    assert sorted(p.name for p in media.rglob("*") if p.is_file()) == stored


def test_a_pdf_lesson_must_be_a_pdf(session: Session, course_copy: Path, tmp_path: Path) -> None:
    (course_copy / "media" / "b2b-linkedin-playbook.pdf").write_bytes(b"<html>not a pdf</html>")
    with pytest.raises(ManifestError) as err:
        publish_folder(
            session=session, storage=LocalStorage(tmp_path, secret="x"), folder=course_copy
        )
    assert "not a pdf file" in err.value.message


def test_cli_reports_nothing_uploaded_on_second_run(
    engine: Engine, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAPPORT_DATABASE_URL", database_url)
    monkeypatch.setenv("RAPPORT_MEDIA_DIR", str(tmp_path / "media"))
    runner = CliRunner()
    folder = str(COURSES / "trust-at-a-distance")
    first = runner.invoke(cli, ["publish", folder])
    assert (
        first.exit_code == 0
        and "created" in first.output
        and "uploaded 8 file(s)" in " ".join(first.output.split())
    )
    second = runner.invoke(cli, ["publish", folder])
    assert second.exit_code == 0, second.output
    assert "nothing uploaded" in " ".join(second.output.split())


def test_video_durations_are_read_from_the_files(session: Session, storage: Storage) -> None:
    publish(session, storage, COURSES / "trust-at-a-distance")
    videos = session.exec(select(Asset).where(Asset.content_type == "video/mp4")).all()
    assert videos and all(v.duration_seconds and 7 < v.duration_seconds < 9 for v in videos)
    pdf = session.exec(select(Asset).where(Asset.content_type == "application/pdf")).one()
    assert pdf.duration_seconds is None
