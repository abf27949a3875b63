"""After an upload, as a background job: sha256 (streamed), and per kind the duration and a
poster frame of a video (ffprobe/ffmpeg when installed), the page count of a PDF, and checks
of EPUB and WebVTT files. The asset ends ready (and becomes its lesson's media) or failed
with a reason the author can act on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import structlog
from sqlalchemy import Engine
from sqlmodel import Session

from app.authoring.uploads import LESSON_UPLOAD_KIND, attach, fail, kind_of
from app.catalog.models import Asset, AssetStatus, Lesson
from app.delivery.media_info import mp4_duration, pdf_pages
from app.delivery.storage import LocalStorage, Storage, new_key
from app.jobs.base import JobContext, job

log = structlog.get_logger()

TOOL_TIMEOUT = 300  # seconds for ffprobe or ffmpeg on one file (they read over HTTP in S3 mode)


def _(message: str) -> str:
    """Mark a message for translation: stored in English, shown in the author's language."""
    return message


NO_FFMPEG = _("ffmpeg is not installed: no poster frame, duration only from MP4 headers")
NO_POSTER = _("no poster frame: ffmpeg could not read a frame")


class Unusable(Exception):
    """The file itself is broken: the asset fails at once, a retry cannot help."""


@dataclass
class Facts:
    """What processing learned about a file."""

    sha256: str
    duration: float | None = None
    page_count: int | None = None
    poster_key: str | None = None
    notes: list[str] = field(default_factory=list)


def _tool(name: str) -> str | None:
    return shutil.which(name)


def _run(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    # The program is ffprobe/ffmpeg found on PATH; the file is passed as one argument.
    return subprocess.run(args, capture_output=True, timeout=TOOL_TIMEOUT, check=False)  # noqa: S603


def _last_line(raw: bytes, source: str) -> str:
    """The tool's last message, without the file it names: a path on this server, or in S3
    mode a signed link (ffprobe starts its message with "SOURCE: ")."""
    text = raw.decode("utf-8", "replace").replace(source + ": ", "").replace(source, "")
    text = text.strip()
    return text.splitlines()[-1][:200] if text else "no output"


def probe_video(ffprobe: str, source: str, protocols: str) -> float | None:
    """The duration of a video in seconds (None when unknown); Unusable if it is not one."""
    done = _run(
        [
            ffprobe,
            *("-v", "error", "-protocol_whitelist", protocols),
            *("-print_format", "json", "-show_format", "-show_streams"),
            source,
        ]
    )
    if done.returncode != 0:
        raise Unusable(_("not a playable video") + ": " + _last_line(done.stderr, source))
    info = json.loads(done.stdout or b"{}")
    if not any(s.get("codec_type") == "video" for s in info.get("streams", [])):
        raise Unusable(_("the file has no video stream"))
    try:
        return round(float(info["format"]["duration"]), 3)
    except (KeyError, TypeError, ValueError):
        return None


def poster_frame(ffmpeg: str, source: str, protocols: str, at: float, target: Path) -> bool:
    """Write one frame at `at` seconds as a JPEG (at most 1280 px wide); False if it fails."""
    done = _run(
        [
            ffmpeg,
            *("-v", "error", "-nostdin", "-protocol_whitelist", protocols),
            *("-ss", f"{at:.3f}", "-i", source, "-frames:v", "1"),
            *("-vf", "scale='min(1280,iw)':-2", "-q:v", "3", "-y", str(target)),
        ]
    )
    return done.returncode == 0 and target.is_file() and target.stat().st_size > 0


def _read_all(storage: Storage, key: str, copy_to: BinaryIO | None) -> str:
    """sha256 of the stored object, streamed (and copied to a local file when asked)."""
    digest = hashlib.sha256()
    for chunk in storage.iter_bytes(key):
        digest.update(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
    return digest.hexdigest()


def inspect_asset(storage: Storage, key: str, content_type: str, tmp: Path) -> Facts:
    """Everything processing learns from the stored file; Unusable when it is broken."""
    kind = kind_of(content_type)
    ffprobe, ffmpeg = _tool("ffprobe"), _tool("ffmpeg")
    local: Path | None = storage.path(key) if isinstance(storage, LocalStorage) else None
    # A local copy only where a tool needs a file and the bytes live in S3.
    wants_file = kind in ("pdf", "epub", "captions") or (kind == "video" and not ffprobe)
    with ExitStack() as stack:
        copy: BinaryIO | None = None
        if local is None and wants_file:
            local = tmp / "source"
            copy = stack.enter_context(local.open("wb"))
        facts = Facts(sha256=_read_all(storage, key, copy))
    if kind == "video":
        _video_facts(storage, key, content_type, local, tmp, facts, ffprobe, ffmpeg)
    elif kind == "pdf" and local is not None:
        facts.page_count = pdf_pages(local)
        if facts.page_count is None:
            raise Unusable(_("not a readable PDF (damaged, or protected by a password)"))
    elif kind == "epub" and local is not None:
        try:
            with zipfile.ZipFile(local) as epub:
                if "META-INF/container.xml" not in epub.namelist():
                    raise Unusable(_("not an EPUB: META-INF/container.xml is missing"))
        except zipfile.BadZipFile as exc:
            raise Unusable(_("not an EPUB: the zip archive is damaged")) from exc
    elif kind == "captions" and local is not None:
        try:
            local.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Unusable(_("captions must be UTF-8 text")) from exc
    return facts


def _video_facts(
    storage: Storage,
    key: str,
    content_type: str,
    local: Path | None,
    tmp: Path,
    facts: Facts,
    ffprobe: str | None,
    ffmpeg: str | None,
) -> None:
    if ffprobe is None or ffmpeg is None:
        facts.notes.append(NO_FFMPEG)
        if local is not None and content_type == "video/mp4":
            facts.duration = mp4_duration(local)
        return
    if local is not None:
        source, protocols = str(local), "file"
    else:
        # ffprobe and ffmpeg read the few ranges they need straight from the bucket.
        source = storage.download_url(key, ttl=TOOL_TIMEOUT * 2, content_type=content_type)
        protocols = "http,https,tcp,tls,crypto"
    facts.duration = probe_video(ffprobe, source, protocols)
    at = min(1.0, (facts.duration or 0) / 2)
    poster = tmp / "poster.jpg"
    if not poster_frame(ffmpeg, source, protocols, at, poster):
        facts.notes.append(NO_POSTER)
        return
    facts.poster_key = new_key("posters", "poster.jpg")
    with poster.open("rb") as f:
        storage.put(facts.poster_key, f, content_type="image/jpeg")


def process_asset(
    engine: Engine, storage: Storage, asset_id: int, *, renditions: bool = True
) -> None:
    """Process an asset in status processing; a repeated run of a finished one does nothing."""
    with Session(engine) as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.status != AssetStatus.processing:
            return
        key, content_type, claimed = asset.storage_key, asset.content_type, asset.sha256
    try:
        with tempfile.TemporaryDirectory(prefix="rapport-process-") as tmp:
            facts = inspect_asset(storage, key, content_type, Path(tmp))
        if claimed and facts.sha256 != claimed:
            raise Unusable(_("the stored file's sha256 differs from the one declared at upload"))
    except Unusable as exc:
        mark_failed(engine, asset_id, str(exc))
        return
    hls_key = _rendition(storage, key, content_type) if renditions else None
    with Session(engine) as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.status != AssetStatus.processing:
            return
        asset.sha256 = facts.sha256
        asset.duration_seconds = facts.duration or asset.duration_seconds
        asset.page_count = facts.page_count or asset.page_count
        asset.poster_key = facts.poster_key or asset.poster_key
        asset.hls_key = hls_key or asset.hls_key
        asset.processing_note = "; ".join(facts.notes)[:500]
        asset.status = AssetStatus.ready
        session.add(asset)
        lesson = session.get(Lesson, asset.lesson_id) if asset.lesson_id else None
        if lesson is not None and LESSON_UPLOAD_KIND.get(lesson.kind) == kind_of(content_type):
            attach(session=session, lesson=lesson, asset=asset)
        session.commit()
    log.info("upload.ready", asset_id=asset_id, notes=facts.notes)


def _rendition(storage: Storage, key: str, content_type: str) -> str | None:
    """An HLS rendition of an uploaded MP4 when ffmpeg is there; the MP4 plays without one."""
    from app.delivery import hls

    if content_type != "video/mp4" or hls.ffmpeg_path() is None:
        return None
    try:
        return hls.make_rendition(storage, source_key=key)
    except hls.RenditionError as exc:
        log.warning("hls.rendition_failed", storage_key=key, error=str(exc))
        return None


def mark_failed(engine: Engine, asset_id: int, reason: str) -> None:
    """Record why processing failed, where the author sees it."""
    with Session(engine) as session:
        asset = session.get(Asset, asset_id)
        if asset is None or asset.status == AssetStatus.ready:
            return
        fail(session=session, asset=asset, reason=reason)
        session.commit()
    log.warning("upload.failed", asset_id=asset_id, reason=reason)


# What the author is told when the job itself broke (after its retries): the exception names
# files on this server, so it goes to the log (job.failed) and not to the author.
JOB_FAILED = _("the server could not finish it; please upload the file again")


def _failed(ctx: JobContext, reason: str, *, asset_id: int) -> None:
    mark_failed(ctx.engine, asset_id, _("processing failed") + ": " + JOB_FAILED)


@job("process_upload", unique_by=("asset_id",), on_failure=_failed)
def process_upload(ctx: JobContext, *, asset_id: int) -> None:
    """Job: process a completed upload; storage errors are retried, broken files fail at once."""
    process_asset(ctx.engine, ctx.storage, asset_id, renditions=ctx.settings.hls_renditions)
