"""Author uploads: resumable, checked by content, and straight to the bucket in S3 mode.

In S3 mode the client PUTs parts to presigned multipart URLs, so the app never handles the
bytes; a resumed upload lists the parts S3 already has and skips them. In local mode the
client sends chunks to the app, appended to a partial file at the offset the server reports.
Either way the file's type is decided by its first bytes (declared when the upload starts,
read back from storage when it completes), never by its name.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from sqlmodel import Session, col, select

from app.catalog.changes import catalog_changed
from app.catalog.models import Asset, AssetStatus, Lesson, LessonKind
from app.config import Settings
from app.delivery.storage import LocalStorage, Storage, StorageError, UploadPart, new_key

MiB = 1024 * 1024
SNIFF_BYTES = 64  # enough for every signature below (EPUB's mimetype entry ends at byte 58)
MAX_PARTS = 10_000  # S3's limit on parts per multipart upload
Kind = Literal["video", "pdf", "epub", "captions", "image"]
CONTENT_TYPES: dict[str, tuple[str, ...]] = {
    "video": ("video/mp4", "video/webm"),
    "pdf": ("application/pdf",),
    "epub": ("application/epub+zip",),
    "captions": ("text/vtt",),
    "image": ("image/png", "image/jpeg"),
}
LESSON_UPLOAD_KIND: dict[str, Kind] = {LessonKind.video: "video", LessonKind.pdf: "pdf"}


def _(message: str) -> str:
    """Mark a message for translation: stored in English, shown in the author's language."""
    return message


NOT_DECLARED = _("the stored file is not what the upload declared")


class UploadError(Exception):
    """An upload request that cannot be done; `status` is the HTTP status the API answers."""

    status = 422

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class TooLarge(UploadError):
    """Over the kind's size limit."""

    status = 413


class WrongType(UploadError):
    """Not a file of the declared kind, by its first bytes."""

    status = 415


class UploadConflict(UploadError):
    """Not possible in the upload's state (or against what the store has)."""

    status = 409


class UploadNotFound(UploadError):
    """No such upload or lesson."""

    status = 404


def sniff(head: bytes) -> str | None:
    """The content type that a file's first bytes announce, or None for anything else."""
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    # EPUB: a zip whose first entry is the uncompressed file "mimetype" (OCF container rule).
    if head.startswith(b"PK\x03\x04") and head[30:58] == b"mimetypeapplication/epub+zip":
        return "application/epub+zip"
    text = head.removeprefix(b"\xef\xbb\xbf")
    if text.startswith(b"WEBVTT") and text[6:7] in (b"", b" ", b"\t", b"\n", b"\r"):
        return "text/vtt"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


def kind_of(content_type: str) -> Kind | None:
    """The upload kind of a content type (video/mp4 -> video), None for unknown ones."""
    for kind, types in CONTENT_TYPES.items():
        if content_type in types:
            return kind  # type: ignore[return-value]
    return None


def max_bytes(settings: Settings, kind: str) -> int:
    """The size limit for files of this kind, from the upload_max_<kind>_mib setting."""
    mib: int = getattr(settings, f"upload_max_{kind}_mib")
    return mib * MiB


def is_local(storage: Storage) -> bool:
    """Whether uploads go through the app in chunks (local folder) rather than to S3."""
    return isinstance(storage, LocalStorage)


def part_size(settings: Settings, size: int) -> int:
    """The S3 part size for a file: the setting, raised so that no file needs > 10,000 parts."""
    wanted = settings.upload_part_mib * MiB
    return max(wanted, math.ceil(size / MAX_PARTS / MiB) * MiB)


def chunking(storage: Storage, settings: Settings, size: int) -> tuple[int, int]:
    """(bytes per part or chunk, number of them) for an upload of size bytes."""
    step = settings.upload_chunk_mib * MiB if is_local(storage) else part_size(settings, size)
    return step, max(1, math.ceil(size / step))


@runtime_checkable
class MultipartStore(Protocol):
    """The presigned multipart calls of a bucket (app/integrations/s3.py)."""

    def create_multipart_upload(self, key: str, *, content_type: str) -> str: ...

    def presign_upload_part(
        self, key: str, upload_id: str, part_number: int, *, ttl: int
    ) -> str: ...

    def list_parts(self, key: str, upload_id: str) -> list[UploadPart]: ...

    def complete_multipart_upload(
        self, key: str, upload_id: str, parts: list[UploadPart]
    ) -> None: ...

    def abort_multipart_upload(self, key: str, upload_id: str) -> None: ...


def _multipart(storage: Storage) -> MultipartStore:
    if is_local(storage) or not isinstance(storage, MultipartStore):
        raise UploadConflict("this server takes uploads in chunks: PUT them to the chunk route")
    return storage


def _clean_name(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1].strip()[:255] or "upload"


# Starting, listing, completing ------------------------------------------------------------


def get_asset(*, session: Session, asset_id: int) -> Asset:
    """The asset, or UploadNotFound."""
    asset = session.get(Asset, asset_id)
    if asset is None:
        raise UploadNotFound("no such upload")
    return asset


def _lesson_for(session: Session, lesson_id: int, kind: str) -> Lesson:
    lesson = session.get(Lesson, lesson_id)
    if lesson is None:
        raise UploadNotFound("no such lesson")
    wanted = LESSON_UPLOAD_KIND.get(lesson.kind)
    if wanted != kind:
        takes = f"a {wanted} file" if wanted else "no file"
        raise UploadError(f"a {lesson.kind} lesson takes {takes}")
    return lesson


def attach(*, session: Session, lesson: Lesson, asset: Asset) -> None:
    """Make a ready asset the lesson's media (buyers see the new file from now on)."""
    if lesson.asset_id != asset.id:
        lesson.asset_id = asset.id
        session.add(lesson)
        catalog_changed(session)


def start_upload(
    *,
    session: Session,
    storage: Storage,
    settings: Settings,
    kind: Kind,
    filename: str,
    size: int,
    head: bytes,
    sha256: str | None = None,
    lesson_id: int | None = None,
) -> tuple[Asset, bool]:
    """Check a declared upload and make its asset (status uploading); the flag says "reused".

    Refuses before any byte is taken: over the kind's limit (413), or first bytes that are
    not a file of that kind (415). With sha256, a ready asset with those bytes is reused and
    an unfinished upload of them is resumed.
    """
    limit = max_bytes(settings, kind)
    if size > limit:
        raise TooLarge(f"{kind} files may be at most {limit // MiB} MiB", limit=limit)
    if len(head) < min(size, SNIFF_BYTES):
        raise UploadError(f"head must hold the file's first {SNIFF_BYTES} bytes")
    content_type = sniff(head[:SNIFF_BYTES])
    if content_type not in CONTENT_TYPES[kind]:
        allowed = ", ".join(CONTENT_TYPES[kind])
        raise WrongType(f"by its content this is not a {kind} file ({allowed})", allowed=allowed)
    lesson = _lesson_for(session, lesson_id, kind) if lesson_id is not None else None
    if sha256:
        same = select(Asset).where(
            Asset.sha256 == sha256, Asset.content_type == content_type, Asset.size == size
        )
        ready = session.exec(
            same.where(Asset.status == AssetStatus.ready).order_by(col(Asset.id))
        ).first()
        if ready is not None and storage.exists(ready.storage_key):
            if lesson is not None:
                attach(session=session, lesson=lesson, asset=ready)
            return ready, True
        unfinished = session.exec(
            same.where(Asset.status == AssetStatus.uploading, Asset.lesson_id == lesson_id)
        ).first()
        if unfinished is not None:
            return unfinished, False
    name = _clean_name(filename)
    asset = Asset(
        storage_key=new_key("assets", name),
        content_type=content_type,
        size=size,
        sha256=sha256 or "",  # a claim until processing computes it from the stored bytes
        status=AssetStatus.uploading,
        original_filename=name,
        lesson_id=lesson_id,
    )
    if not is_local(storage):
        store = _multipart(storage)
        asset.upload_id = store.create_multipart_upload(
            asset.storage_key, content_type=content_type
        )
    session.add(asset)
    session.flush()
    return asset, False


def _require_uploading(asset: Asset) -> None:
    if asset.status != AssetStatus.uploading:
        raise UploadConflict(f"this upload is {asset.status}, not uploading", status=asset.status)


def uploaded_parts(*, storage: Storage, asset: Asset) -> list[UploadPart]:
    """Parts the bucket already has (S3 ListParts): a resumed upload skips them."""
    _require_uploading(asset)
    return _multipart(storage).list_parts(asset.storage_key, asset.upload_id or "")


def presign_parts(
    *, storage: Storage, settings: Settings, asset: Asset, numbers: list[int]
) -> dict[int, str]:
    """Presigned PUT URLs for these part numbers of the upload."""
    _require_uploading(asset)
    store = _multipart(storage)
    _step, count = chunking(storage, settings, asset.size)
    wrong = [n for n in numbers if not 1 <= n <= count]
    if wrong:
        raise UploadError(f"this upload has parts 1 to {count}", parts=count)
    ttl = settings.upload_url_ttl
    return {
        n: store.presign_upload_part(asset.storage_key, asset.upload_id or "", n, ttl=ttl)
        for n in sorted(set(numbers))
    }


# Paths on this server and links (a signed one in S3 mode) have no place in what the author
# reads; whatever puts them in a reason, they are cut out here, where every reason is stored.
_LINK = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://\S+")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:)?[/\\][^\s'\",;:()\[\]]+")


def for_author(reason: str) -> str:
    """The reason without server paths or links ("a file", "a link" in their place)."""
    return _ABSOLUTE_PATH.sub("a file", _LINK.sub("a link", reason))


def fail(*, session: Session, asset: Asset, reason: str) -> None:
    """Mark the asset failed with a reason the author can act on."""
    asset.status = AssetStatus.failed
    asset.failure_reason = for_author(reason)[:500]
    asset.upload_id = None
    session.add(asset)


def complete_upload(
    *, session: Session, storage: Storage, settings: Settings, asset: Asset
) -> bool:
    """Join the stored bytes into the asset's object and check them; True when it is new work.

    The file's first bytes are read back from storage and checked again (415 and failed when
    they are not what the upload declared). A repeated call on a finished upload is harmless.
    """
    if asset.status in (AssetStatus.processing, AssetStatus.ready):
        return False  # completed before: the client lost our answer and asks again
    _require_uploading(asset)
    if isinstance(storage, LocalStorage):
        partial = partial_path(storage, asset)
        received = partial.stat().st_size if partial.exists() else 0
        if received != asset.size:
            raise UploadConflict(
                f"the upload has {received} of {asset.size} bytes", received=received
            )
        target = storage.path(asset.storage_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, target)
    else:
        store = _multipart(storage)
        parts = store.list_parts(asset.storage_key, asset.upload_id or "")
        _step, count = chunking(storage, settings, asset.size)
        have = {p.part_number for p in parts}
        missing = [n for n in range(1, count + 1) if n not in have]
        stored = sum(p.size for p in parts)
        if missing or stored != asset.size:
            raise UploadConflict(
                f"the upload has {stored} of {asset.size} bytes", missing=missing, received=stored
            )
        store.complete_multipart_upload(asset.storage_key, asset.upload_id or "", parts)
        asset.upload_id = None
    head = storage.read_range(asset.storage_key, 0, SNIFF_BYTES - 1)
    size = storage.size(asset.storage_key)
    if sniff(head) != asset.content_type:
        storage.delete(asset.storage_key)
        fail(session=session, asset=asset, reason=NOT_DECLARED)
        raise WrongType(NOT_DECLARED)
    if size != asset.size:
        storage.delete(asset.storage_key)
        fail(session=session, asset=asset, reason=f"stored {size} bytes, expected {asset.size}")
        raise UploadConflict(f"stored {size} bytes, expected {asset.size}")
    asset.status = AssetStatus.processing
    session.add(asset)
    return True


def abort_upload(*, session: Session, storage: Storage, asset: Asset) -> None:
    """Cancel an unfinished upload: drop its parts (or partial file) and the asset."""
    _require_uploading(asset)
    if isinstance(storage, LocalStorage):
        partial_path(storage, asset).unlink(missing_ok=True)
    else:
        # Already gone is fine: aborted before, or expired by a bucket lifecycle rule.
        with contextlib.suppress(StorageError):
            _multipart(storage).abort_multipart_upload(asset.storage_key, asset.upload_id or "")
    session.delete(asset)


@dataclass(frozen=True)
class LessonMedia:
    """A lesson with the file buyers get and its newer upload, if any."""

    lesson: Lesson
    current: Asset | None  # what buyers get now
    upload: Asset | None  # a newer upload for the lesson that is not (yet) its media


def lesson_media(*, session: Session, lesson_id: int) -> LessonMedia:
    """The lesson's media and its latest unfinished or failed upload."""
    lesson = session.get(Lesson, lesson_id)
    if lesson is None:
        raise UploadNotFound("no such lesson")
    current = session.get(Asset, lesson.asset_id) if lesson.asset_id else None
    latest = session.exec(
        select(Asset).where(Asset.lesson_id == lesson_id).order_by(col(Asset.id).desc())
    ).first()
    if latest is not None and (latest.id == lesson.asset_id or latest.status == AssetStatus.ready):
        latest = None
    return LessonMedia(lesson, current, latest)


# Local mode: chunks appended to a partial file ---------------------------------------------


def partial_path(storage: LocalStorage, asset: Asset) -> Path:
    """Where a local upload collects its bytes: beside the media, so completing is a rename."""
    return storage.root / ".uploads" / f"{asset.id}-{Path(asset.storage_key).stem}.part"


def received_bytes(*, storage: Storage, asset: Asset) -> int:
    """How many bytes of a local upload the server has (where the next chunk starts)."""
    _require_uploading(asset)
    if not isinstance(storage, LocalStorage):
        raise UploadConflict("this server takes uploads as presigned S3 parts")
    partial = partial_path(storage, asset)
    return partial.stat().st_size if partial.exists() else 0


class ChunkWriter:
    """Appends one chunk at the offset the server has, under an exclusive lock.

    The first bytes of the file are checked against the declared type before they are
    written. A chunk cut off by a dropped connection keeps what arrived: the client asks
    for the offset and goes on from there.
    """

    def __init__(self, storage: Storage, asset: Asset, offset: int) -> None:
        _require_uploading(asset)
        if not isinstance(storage, LocalStorage):
            raise UploadConflict("this server takes uploads as presigned S3 parts")
        path = partial_path(storage, asset)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.size = asset.size
        self.content_type = asset.content_type
        self.start = offset
        self._head = bytearray()
        self._file = path.open("ab")  # closed in close()
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise UploadConflict("another chunk of this upload is being written") from None
        received = os.fstat(self._file.fileno()).st_size
        if received != offset:
            self._file.close()
            raise UploadConflict(
                f"the server has {received} bytes: send the chunk at that offset",
                received=received,
            )
        self.position = offset

    def write(self, data: bytes) -> None:
        """Append data (blocking: call it off the event loop)."""
        if self.position + len(self._head) + len(data) > self.size:
            self._undo()
            raise UploadError(f"more bytes than the declared {self.size}", received=self.start)
        if self.position < SNIFF_BYTES:
            self._head += data
            if len(self._head) < min(SNIFF_BYTES, self.size):
                return  # not enough to judge the type yet
            data, self._head = bytes(self._head), bytearray()
            self._check(data)
        self._file.write(data)
        self.position += len(data)

    def _check(self, head: bytes) -> None:
        if sniff(head[:SNIFF_BYTES]) != self.content_type:
            self._undo()
            raise WrongType(f"by its content this is not {self.content_type}", received=self.start)

    def _undo(self) -> None:
        self._file.flush()
        self._file.truncate(self.start)
        self.position = self.start
        self._head.clear()

    def close(self) -> int:
        """Flush and unlock; the number of bytes the server has now."""
        try:
            # A file shorter than SNIFF_BYTES ends inside the head: judge what there is. A chunk
            # cut off before the head was whole writes nothing; the client sends it again.
            if self._head and self.position + len(self._head) == self.size:
                head, self._head = bytes(self._head), bytearray()
                self._check(head)
                self._file.write(head)
                self.position += len(head)
        finally:
            self._file.close()
        return self.position
