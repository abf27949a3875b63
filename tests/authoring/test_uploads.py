"""Author uploads: checked by content and size before any byte, resumable, processed in a job.

Both storage modes: S3 (a bucket on moto's server, parts PUT straight to it) and local
(chunks to the app). The helpers here drive the API exactly as upload.js and the CLI do.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pikepdf
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from app.accounts import service as accounts
from app.accounts.models import User
from app.authoring import processing
from app.authoring.uploads import SNIFF_BYTES, MiB
from app.catalog.models import Asset, AssetStatus, Lesson
from app.config import Settings
from app.delivery.storage import LocalStorage, Storage
from app.integrations.s3 import S3Storage
from app.main import create_app
from tests.conftest import (
    COURSES,
    MotoServer,
    csrf_token,
    make_bucket,
    make_user,
    missing,
    sign_in,
)

API = "/api/v1/author"
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(56)  # the start of a Linux executable


# Media made for the tests -------------------------------------------------------------------


def make_mp4(target: Path, *, seconds: int = 2, bitrate: str = "400k") -> Path:
    """A real H.264/AAC MP4 (noise makes the bitrate, hence the size, predictable)."""
    if shutil.which("ffmpeg") is None:
        missing("ffmpeg", "run `sudo apt-get install -y ffmpeg` (make test does this as root)")
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y", "-f", "lavfi"),
            *("-i", f"testsrc=duration={seconds}:size=640x360:rate=30,noise=alls=60:allf=t"),
            *("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
            *("-b:v", bitrate, "-maxrate", bitrate, "-bufsize", "2M", "-g", "60"),
            *("-c:a", "aac", "-movflags", "+faststart", str(target)),
        ],
        check=True,
    )
    return target


@pytest.fixture(scope="session")
def small_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mp4(tmp_path_factory.mktemp("media") / "small.mp4")


@pytest.fixture(scope="session")
def big_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 17 MB: four parts of 5 MiB in S3 mode, many chunks in local mode."""
    return make_mp4(tmp_path_factory.mktemp("media") / "big.mp4", seconds=8, bitrate="16M")


def make_pdf(target: Path, pages: int) -> Path:
    pdf = pikepdf.new()
    for _ in range(pages):
        pdf.add_blank_page()
    pdf.save(target)
    return target


# Apps in both storage modes, signed-in clients ----------------------------------------------


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def mode_settings(settings: Settings, mode: str, moto: MotoServer | None) -> Settings:
    """Small parts (5 MiB, S3's least) and chunks (1 MiB) so that test files have several."""
    update: dict[str, Any] = {"upload_part_mib": 5, "upload_chunk_mib": 1}
    if mode == "s3":
        assert moto is not None
        update |= {"storage": "s3", "s3_endpoint_url": moto.url, "s3_bucket": make_bucket(moto.url)}
    return settings.model_copy(update=update)


@pytest.fixture
def up_app(settings: Settings, mode: str, request: pytest.FixtureRequest) -> FastAPI:
    moto = request.getfixturevalue("moto") if mode == "s3" else None
    return create_app(mode_settings(settings, mode, moto))


def token_for(engine: Engine, email: str, role: str) -> str:
    """A user of the role with an API token; the plain token."""
    uid = make_user(engine, email, role)
    with Session(engine) as s:
        user = s.get(User, uid)
        assert user is not None
        _token, plain = accounts.create_api_token(session=s, user=user, name="test")
        s.commit()
    return plain


def bearer(app: FastAPI, token: str | None) -> TestClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(app, raise_server_exceptions=False, headers=headers)


@pytest.fixture
def author(up_app: FastAPI, engine: Engine) -> Iterator[TestClient]:
    with bearer(up_app, token_for(engine, "author@example.com", "author")) as client:
        yield client


@pytest.fixture
def local_author(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """For what only local mode has: chunks sent to the app."""
    app = create_app(mode_settings(settings, "local", None))
    with bearer(app, token_for(engine, "author@example.com", "author")) as client:
        yield client


def storage_of(client: TestClient) -> Storage:
    storage: Storage = client.app.state.storage  # type: ignore[attr-defined]
    return storage


def drain(client: TestClient) -> None:
    assert client.app.state.jobs.drain(timeout=120)  # type: ignore[attr-defined]


def head_of(data: bytes) -> str:
    return base64.b64encode(data[:SNIFF_BYTES]).decode()


def start(client: TestClient, data: bytes, kind: str, name: str, **extra: Any) -> httpx.Response:
    body = {"kind": kind, "filename": name, "size": len(data), "head": head_of(data), **extra}
    return client.post(f"{API}/uploads", json=body)


def put_parts(upload: dict[str, Any], client: TestClient, data: bytes, numbers: list[int]) -> None:
    """S3 mode: presigned URLs from the app, the bytes straight to the bucket."""
    step = upload["part_size"]
    r = client.post(f"{API}/uploads/{upload['id']}/parts", json={"part_numbers": numbers})
    assert r.status_code == 200, r.text
    with httpx.Client() as s3:
        for item in r.json()["urls"]:
            n = item["part_number"]
            assert "X-Amz-Expires=" in item["url"] and f"partNumber={n}" in item["url"]
            put = s3.put(item["url"], content=data[(n - 1) * step : n * step])
            assert put.status_code == 200, put.text


def put_chunks(upload: dict[str, Any], client: TestClient, data: bytes, start_at: int) -> int:
    """Local mode: chunks from an offset to the end; how many were sent."""
    step, offset, sent = upload["part_size"], start_at, 0
    while offset < len(data):
        r = client.put(
            f"{API}/uploads/{upload['id']}/chunk",
            params={"offset": offset},
            content=data[offset : offset + step],
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 200, r.text
        offset, sent = r.json()["received"], sent + 1
    return sent


def send_all(client: TestClient, upload: dict[str, Any], data: bytes) -> None:
    if upload["mode"] == "s3":
        put_parts(upload, client, data, list(range(1, upload["parts"] + 1)))
    else:
        put_chunks(upload, client, data, 0)


def upload_whole(client: TestClient, data: bytes, kind: str, name: str, **extra: Any) -> int:
    """Start, send, complete and process an upload; the asset id."""
    r = start(client, data, kind, name, **extra)
    assert r.status_code == 201, r.text
    send_all(client, r.json(), data)
    done = client.post(f"{API}/uploads/{r.json()['id']}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "processing"
    drain(client)
    return int(r.json()["id"])


def assets(engine: Engine) -> list[Asset]:
    with Session(engine) as s:
        return list(s.exec(select(Asset)))


def multipart_uploads(storage: Storage) -> list[Any]:
    assert isinstance(storage, S3Storage)
    return storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])


def stored_bytes(storage: Storage, key: str) -> bytes:
    return b"".join(storage.iter_bytes(key))


# Refusals before any byte --------------------------------------------------------------------


def test_a_renamed_executable_is_refused_with_415(author: TestClient, engine: Engine) -> None:
    r = start(author, ELF + bytes(4000), "video", "lesson-1.mp4")
    assert r.status_code == 415, r.text
    assert "not a video file" in r.json()["detail"]
    assert assets(engine) == []
    storage = storage_of(author)
    if isinstance(storage, S3Storage):
        assert multipart_uploads(storage) == []
    # The extension proves nothing either way: a real PDF named .mp4 is no video.
    assert start(author, b"%PDF-1.7\n" + bytes(100), "video", "x.mp4").status_code == 415
    # And a PDF is not an e-book (EPUB), nor a WebVTT file captions.
    assert start(author, b"%PDF-1.7\n" + bytes(100), "epub", "book.epub").status_code == 415
    assert start(author, b"WEBVTTX" + bytes(100), "captions", "de.vtt").status_code == 415


def test_declared_size_over_the_limit_is_413_before_any_byte(
    author: TestClient, engine: Engine, settings: Settings
) -> None:
    limit = settings.upload_max_pdf_mib * MiB
    pdf_head = b"%PDF-1.7\n" + bytes(100)
    r = author.post(
        f"{API}/uploads",
        json={"kind": "pdf", "filename": "big.pdf", "size": limit + 1, "head": head_of(pdf_head)},
    )
    assert r.status_code == 413, r.text
    assert r.json()["limit"] == limit
    assert assets(engine) == []  # nothing started: no asset, no multipart upload, no file
    storage = storage_of(author)
    if isinstance(storage, S3Storage):
        assert multipart_uploads(storage) == []
    else:
        assert isinstance(storage, LocalStorage)
        assert not (storage.root / ".uploads").exists()
    ok = start(author, pdf_head, "pdf", "ok.pdf")
    assert ok.status_code == 201


def test_a_chunk_over_the_chunk_size_is_413_before_it_is_read(local_author: TestClient) -> None:
    author = local_author
    data = b"WEBVTT\n\n" + b"x" * 100
    upload = start(author, data, "captions", "en.vtt").json()
    r = author.put(
        f"{API}/uploads/{upload['id']}/chunk",
        params={"offset": 0},
        content=b"\0" * (MiB + 1),  # the test app's chunk size is 1 MiB
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 413
    assert author.get(f"{API}/uploads/{upload['id']}/parts").json()["received"] == 0


def test_first_bytes_of_the_chunk_must_be_what_was_declared(
    author: TestClient, engine: Engine, small_mp4: Path, mode: str
) -> None:
    data = small_mp4.read_bytes()
    upload = start(author, data, "video", "lesson.mp4").json()
    fake = ELF + data[len(ELF) :]
    if mode == "local":
        r = author.put(
            f"{API}/uploads/{upload['id']}/chunk",
            params={"offset": 0},
            content=fake[: upload["part_size"]],
        )
        assert r.status_code == 415, r.text
        assert author.get(f"{API}/uploads/{upload['id']}/parts").json()["received"] == 0
        return
    # S3: the bytes skip the app, so they are read back from the bucket on completion.
    send_all(author, upload, fake)
    r = author.post(f"{API}/uploads/{upload['id']}/complete")
    assert r.status_code == 415, r.text
    status = author.get(f"{API}/uploads/{upload['id']}").json()
    assert status["status"] == "failed"
    assert status["reason"] == "the stored file is not what the upload declared"
    (asset,) = assets(engine)
    assert not storage_of(author).exists(asset.storage_key)


# Resuming ----------------------------------------------------------------------------------


def test_resume_lists_and_skips_parts(author: TestClient, engine: Engine, big_mp4: Path) -> None:
    data = big_mp4.read_bytes()
    r = start(author, data, "video", "module-1.mp4")
    assert r.status_code == 201, r.text
    upload = r.json()
    base = f"{API}/uploads/{upload['id']}"
    if upload["mode"] == "s3":
        assert upload["part_size"] == 5 * MiB and upload["parts"] >= 3
        put_parts(upload, author, data, [1, 3])  # then the connection dropped
        had = author.get(f"{base}/parts").json()
        assert [p["part_number"] for p in had["parts"]] == [1, 3]
        step = 5 * MiB
        assert had["received"] == len(data[:step]) + len(data[2 * step : 3 * step])
        missing = [n for n in range(1, upload["parts"] + 1) if n not in {1, 3}]
        early = author.post(f"{base}/complete")
        assert early.status_code == 409 and early.json()["missing"] == missing
        put_parts(upload, author, data, missing)  # only what the bucket lacks
    else:
        assert upload["part_size"] == MiB
        put_chunks(upload, author, data[: 5 * MiB + 1000], 0)  # the last chunk was cut off
        had = author.get(f"{base}/parts").json()
        assert had == {"mode": "local", "received": 5 * MiB + 1000, "parts": []}
        again = author.put(f"{base}/chunk", params={"offset": 0}, content=data[:MiB])
        assert again.status_code == 409 and again.json()["received"] == 5 * MiB + 1000
        early = author.post(f"{base}/complete")
        assert early.status_code == 409 and early.json()["received"] == 5 * MiB + 1000
        sent = put_chunks(upload, author, data, had["received"])  # from where the server is
        assert sent == -(-(len(data) - had["received"]) // MiB)
    done = author.post(f"{base}/complete")
    assert done.status_code == 200, done.text
    drain(author)
    status = author.get(base).json()
    assert status["status"] == "ready", status
    assert status["sha256"] == hashlib.sha256(data).hexdigest()
    assert status["duration_seconds"] == pytest.approx(8, abs=0.2)
    assert status["poster_url"]
    (asset,) = assets(engine)
    assert stored_bytes(storage_of(author), asset.storage_key) == data
    assert asset.poster_key is not None
    assert stored_bytes(storage_of(author), asset.poster_key)[:3] == b"\xff\xd8\xff"  # a JPEG
    # Completing again (a lost answer, retried) changes nothing.
    assert author.post(f"{base}/complete").json()["status"] == "ready"


def test_local_chunked_upload_assembles_the_right_bytes(
    local_author: TestClient, engine: Engine
) -> None:
    author = local_author
    cues = "".join(
        f"{i // 60:02d}:{i % 60:02d}.000 --> {i // 60:02d}:{i % 60:02d}.900\nZeile {i} äöü\n\n"
        for i in range(60_000)
    )
    data = ("WEBVTT\n\n" + cues).encode()
    assert 2 * MiB < len(data) < 5 * MiB
    asset_id = upload_whole(author, data, "captions", "de.vtt")
    status = author.get(f"{API}/uploads/{asset_id}").json()
    assert status["status"] == "ready" and status["content_type"] == "text/vtt"
    (asset,) = assets(engine)
    storage = storage_of(author)
    assert isinstance(storage, LocalStorage)
    assert storage.path(asset.storage_key).read_bytes() == data
    assert asset.sha256 == hashlib.sha256(data).hexdigest()
    assert list((storage.root / ".uploads").iterdir()) == []  # the partial file became the asset


def test_a_file_shorter_than_the_signature_window(author: TestClient, engine: Engine) -> None:
    data = b"WEBVTT\n\n"  # 8 bytes: the whole file is its head
    asset_id = upload_whole(author, data, "captions", "empty.vtt")
    assert author.get(f"{API}/uploads/{asset_id}").json()["status"] == "ready"
    (asset,) = assets(engine)
    assert stored_bytes(storage_of(author), asset.storage_key) == data


def test_a_known_file_is_reused_and_an_unfinished_one_resumed(
    author: TestClient, engine: Engine, small_mp4: Path
) -> None:
    data = small_mp4.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    first = start(author, data, "video", "a.mp4", sha256=digest).json()
    again = start(author, data, "video", "a.mp4", sha256=digest)
    assert again.status_code == 201 and again.json()["id"] == first["id"]  # resumed, not new
    send_all(author, first, data)
    author.post(f"{API}/uploads/{first['id']}/complete")
    drain(author)
    reused = start(author, data, "video", "copy.mp4", sha256=digest)
    assert reused.status_code == 200, reused.text
    assert reused.json() | {"reused": True} == reused.json()
    assert reused.json()["id"] == first["id"] and reused.json()["status"] == "ready"
    assert len(assets(engine)) == 1


def test_a_wrong_declared_sha256_fails_processing(
    author: TestClient, engine: Engine, small_mp4: Path
) -> None:
    asset_id = upload_whole(author, small_mp4.read_bytes(), "video", "a.mp4", sha256="0" * 64)
    status = author.get(f"{API}/uploads/{asset_id}").json()
    assert status["status"] == "failed"
    assert "sha256 differs" in status["reason"]


def test_cancel_drops_the_upload(author: TestClient, engine: Engine, small_mp4: Path) -> None:
    data = small_mp4.read_bytes()
    upload = start(author, data, "video", "a.mp4").json()
    assert author.delete(f"{API}/uploads/{upload['id']}").status_code == 204
    assert assets(engine) == []
    storage = storage_of(author)
    if isinstance(storage, S3Storage):
        assert multipart_uploads(storage) == []
    assert author.get(f"{API}/uploads/{upload['id']}").status_code == 404


# Processing ---------------------------------------------------------------------------------


def test_pdf_page_count(author: TestClient, engine: Engine, tmp_path: Path) -> None:
    data = make_pdf(tmp_path / "book.pdf", 3).read_bytes()
    asset_id = upload_whole(author, data, "pdf", "book.pdf")
    status = author.get(f"{API}/uploads/{asset_id}").json()
    assert status["status"] == "ready" and status["page_count"] == 3


def test_a_broken_pdf_and_a_broken_video_fail_with_a_reason(
    author: TestClient, engine: Engine
) -> None:
    pdf = upload_whole(author, b"%PDF-1.7\n" + b"garbage " * 2000, "pdf", "broken.pdf")
    video = upload_whole(author, b"\0\0\0\x20ftypisom" + b"\x13" * 40_000, "video", "cut.mp4")
    pdf_status = author.get(f"{API}/uploads/{pdf}").json()
    assert pdf_status["status"] == "failed" and "not a readable PDF" in pdf_status["reason"]
    video_status = author.get(f"{API}/uploads/{video}").json()
    assert video_status["status"] == "failed"
    assert video_status["reason"].startswith("not a playable video")


def test_without_ffmpeg_a_video_is_usable_and_says_what_is_missing(
    author: TestClient, engine: Engine, small_mp4: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processing, "_tool", lambda name: None)
    asset_id = upload_whole(author, small_mp4.read_bytes(), "video", "a.mp4")
    status = author.get(f"{API}/uploads/{asset_id}").json()
    assert status["status"] == "ready"
    assert status["note"] == processing.NO_FFMPEG
    assert status["duration_seconds"] == pytest.approx(2, abs=0.1)  # from the MP4 header
    assert status["poster_url"] is None


def test_an_upload_for_a_lesson_becomes_its_media_once_ready(
    author: TestClient, engine: Engine, small_mp4: Path
) -> None:
    from app.catalog.service import publish_folder

    with Session(engine) as s:
        publish_folder(
            session=s,
            storage=storage_of(author),
            folder=COURSES / "trust-at-a-distance",
        )
        s.commit()
        lesson = s.exec(select(Lesson).where(Lesson.kind == "video")).first()
        assert lesson is not None and lesson.asset_id is not None
        lesson_id, old_asset = lesson.id, lesson.asset_id
    data = small_mp4.read_bytes()
    wrong = start(author, b"%PDF-1.7\n" + bytes(100), "pdf", "a.pdf", lesson_id=lesson_id)
    assert wrong.status_code == 422 and "takes a video file" in wrong.json()["detail"]
    upload = start(author, data, "video", "new-take.mp4", lesson_id=lesson_id).json()
    media = author.get(f"{API}/lessons/{lesson_id}/media").json()
    assert media["current"]["id"] == old_asset  # buyers keep the old video meanwhile
    assert media["upload"]["id"] == upload["id"] and media["upload"]["status"] == "uploading"
    assert media["upload_kind"] == "video" and "video/mp4" in media["accept"]
    send_all(author, upload, data)
    author.post(f"{API}/uploads/{upload['id']}/complete")
    drain(author)
    with Session(engine) as s:
        refreshed = s.get(Lesson, lesson_id)
        assert refreshed is not None and refreshed.asset_id == upload["id"]
    media = author.get(f"{API}/lessons/{lesson_id}/media").json()
    assert media["current"]["id"] == upload["id"] and media["upload"] is None


def test_every_status_is_allowed_by_the_database(engine: Engine) -> None:
    with Session(engine) as s:
        for status in AssetStatus:
            s.add(
                Asset(
                    storage_key=f"assets/{status}",
                    content_type="video/mp4",
                    size=1,
                    sha256="",
                    status=status,
                )
            )
        s.commit()


# Who may ---------------------------------------------------------------------------------------

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/uploads", {"kind": "captions", "filename": "a.vtt", "size": 8, "head": ""}),
    ("GET", "/uploads/{id}", None),
    ("GET", "/uploads/{id}/parts", None),
    ("POST", "/uploads/{id}/parts", {"part_numbers": [1]}),
    ("PUT", "/uploads/{id}/chunk?offset=0", None),
    ("POST", "/uploads/{id}/complete", None),
    ("DELETE", "/uploads/{id}", None),
    ("GET", "/lessons/{lesson}/media", None),
    ("PUT", "/manifests/some-course", {"manifest": {}}),
]


def test_the_route_list_here_is_complete(up_app: FastAPI) -> None:
    from tests.test_access import app_routes

    ours = {
        (m, p)
        for m, p in app_routes(up_app)
        if p.startswith(f"{API}/uploads") or p.endswith("/media") or "/manifests/" in p
    }
    names = {"{id}": "{asset_id}", "{lesson}": "{lesson_id}", "some-course": "{slug}"}
    listed = set()
    for method, path, _body in ROUTES:
        for ours_name, route_name in names.items():
            path = path.replace(ours_name, route_name)
        listed.add((method, API + path.split("?")[0]))
    assert ours == listed


def test_buyers_and_visitors_are_refused_on_every_upload_route(
    up_app: FastAPI, engine: Engine, author: TestClient, small_mp4: Path
) -> None:
    data = small_mp4.read_bytes()
    upload = start(author, data, "video", "a.mp4").json()
    with Session(engine) as s:
        lesson_id = s.exec(select(Lesson.id)).first() or 1
    make_user(engine, "buyer@example.com", "buyer")
    buyer_token = token_for(engine, "buyer-with-token@example.com", "buyer")
    outcomes: dict[str, dict[str, int]] = {}
    for who in ("visitor", "buyer", "buyer token"):
        with bearer(up_app, buyer_token if who == "buyer token" else None) as client:
            if who == "buyer":  # signed in with the session cookie, as in the browser
                sign_in(client, engine, "buyer@example.com")
            # All pass the CSRF check as a page's script would, to reach the access check.
            headers = {"X-CSRFToken": csrf_token(client)}
            for method, path, body in ROUTES:
                url = API + path.replace("{id}", str(upload["id"]))
                url = url.replace("{lesson}", str(lesson_id))
                if body is None and method == "PUT":
                    r = client.request(method, url, content=data[:MiB], headers=headers)
                else:
                    r = client.request(method, url, json=body, headers=headers)
                outcomes.setdefault(f"{method} {path}", {})[who] = r.status_code
    # Tokens are for authors and admins: a buyer's token signs nobody in.
    expected = {"visitor": 401, "buyer": 403, "buyer token": 401}
    assert outcomes == dict.fromkeys(outcomes, expected)
    (asset,) = assets(engine)
    assert asset.status == AssetStatus.uploading  # untouched
    assert author.get(f"{API}/uploads/{upload['id']}/parts").json()["received"] == 0


# What the author is told names no server path ------------------------------------------------

# An absolute path (POSIX or Windows), a temporary folder, a signed link, a traceback.
LEAKS = re.compile(r"(^|[\s'\"(=])(/|[A-Za-z]:\\)\w|/tmp|rapport-process-|X-Amz-|Traceback|File \"")


def assert_no_leak(status: dict[str, Any]) -> None:
    for field in ("reason", "note"):
        assert not LEAKS.search(status[field]), status[field]


def test_failure_reasons_name_no_server_paths(
    author: TestClient, engine: Engine, tmp_path: Path
) -> None:
    video = upload_whole(author, b"\0\0\0\x20ftypisom" + b"\x13" * 40_000, "video", "cut.mp4")
    pdf = upload_whole(author, b"%PDF-1.7\n" + b"garbage " * 2000, "pdf", "broken.pdf")
    for asset_id, start_of_reason in ((video, "not a playable video"), (pdf, "not a readable")):
        status = author.get(f"{API}/uploads/{asset_id}").json()
        assert status["status"] == "failed" and status["reason"].startswith(start_of_reason)
        assert_no_leak(status)
        de = author.get(f"{API}/uploads/{asset_id}", headers={"Accept-Language": "de"}).json()
        assert_no_leak(de)


def test_a_job_that_fails_tells_the_author_no_paths(
    author: TestClient, engine: Engine, small_mp4: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(*args: object, **kwargs: object) -> object:
        raise OSError(28, "No space left on device", "/tmp/rapport-process-x1y2/source")

    monkeypatch.setattr(processing, "inspect_asset", full_disk)
    author.app.state.jobs.backoff = ()  # type: ignore[attr-defined]  # fail for good at once
    asset_id = upload_whole(author, small_mp4.read_bytes(), "video", "a.mp4")
    status = author.get(f"{API}/uploads/{asset_id}").json()
    assert status["status"] == "failed" and status["reason"].startswith("processing failed")
    assert_no_leak(status)
