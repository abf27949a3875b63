"""Media storage: one interface, a local-folder backend here and an S3 backend in integrations."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol
from urllib.parse import quote, urlencode

from app.config import Settings

CHUNK = 1024 * 1024
Disposition = Literal["inline", "attachment"]
Progress = Callable[[int], None]  # called with the number of bytes just transferred

# Keys are always made by new_key(); this pattern refuses anything else (and any "..").
KEY_RE = re.compile(r"^[a-z0-9-]+/[0-9a-f]{32}(\.[a-z0-9]{1,8})?$")


class StorageError(Exception):
    """The storage backend could not do what was asked."""


class StorageUnavailable(StorageError):
    """The storage backend cannot be reached."""


class ObjectNotFound(StorageError):
    """No object under that key."""


class InvalidKey(StorageError):
    """A key that the app did not make."""


@dataclass(frozen=True)
class UploadPart:
    part_number: int
    etag: str
    size: int = 0  # bytes, as listed by the store (0 when not known)


def new_key(kind: str, filename: str = "") -> str:
    """A fresh storage key: kind folder, random id, and the lower-cased extension if sane."""
    if not re.fullmatch(r"[a-z0-9-]+", kind):
        raise InvalidKey(f"bad key kind {kind!r}")
    ext = Path(filename).suffix.lower().lstrip(".")
    suffix = f".{ext}" if re.fullmatch(r"[a-z0-9]{1,8}", ext) else ""
    return f"{kind}/{uuid.uuid4().hex}{suffix}"


def check_key(key: str) -> str:
    """Return the key if the app could have made it, else raise InvalidKey."""
    if not KEY_RE.fullmatch(key):
        raise InvalidKey(f"invalid storage key {key!r}")
    return key


class Storage(Protocol):
    """What the app needs from a media store."""

    name: str

    def put(
        self, key: str, fileobj: BinaryIO, *, content_type: str, progress: Progress | None = None
    ) -> int:
        """Stream fileobj into key without reading it whole; return the bytes written."""
        ...

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes start..end inclusive (like an HTTP Range)."""
        ...

    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The whole object, chunk by chunk."""
        ...

    def size(self, key: str) -> int:
        """The object's size in bytes; ObjectNotFound if absent."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under key."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; absent objects are fine."""
        ...

    def download_url(
        self,
        key: str,
        *,
        ttl: int,
        content_type: str,
        filename: str | None = None,
        disposition: Disposition = "inline",
    ) -> str:
        """A short-lived URL from which a browser can GET the object (with Range)."""
        ...

    def ping(self) -> None:
        """Raise StorageUnavailable unless the store answers now."""
        ...


# A saved file's name: at most this many bytes of UTF-8 in `filename*` (file systems take
# 255, and browsers add " (1)" and the like), and this many characters in the ASCII
# `filename` for browsers without RFC 6266. Together at most 591 characters of header, under
# the 600 that the app's /media route accepts for a signed disposition.
FILENAME_BYTES = 150
FILENAME_ASCII = 100
_UNSAFE_IN_NAME = re.compile(r'[\x00-\x1f\x7f/\\"]')


def content_disposition(disposition: Disposition, filename: str | None) -> str:
    """RFC 6266: `filename*=UTF-8''...` (RFC 5987) with the name cut at a whole character,
    and an ASCII `filename="..."` fallback; both keep the extension."""
    if not filename:
        return disposition
    name = _UNSAFE_IN_NAME.sub("_", unicodedata.normalize("NFC", filename))
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not 0 < len(ext) <= 8 or not ext.isascii() or not ext.isalnum():
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    budget = FILENAME_BYTES - len(suffix)
    full = stem.encode()[:budget].decode("utf-8", "ignore").rstrip() + suffix
    # The fallback: accents dropped ("ü" → "u"), other letters as "_", runs collapsed.
    plain = "".join(c for c in unicodedata.normalize("NFKD", stem) if not unicodedata.combining(c))
    plain = re.sub(r"[^A-Za-z0-9._ -]+", "_", plain)
    plain = re.sub(r"_( ?_)+", "_", plain)[: FILENAME_ASCII - len(suffix)].strip(" _")
    fallback = (plain or "download") + suffix
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(full, safe='')}"


class LocalStorage:
    """Files under a folder; download URLs are HMAC-signed links to the app's /media route."""

    name = "local"

    def __init__(self, root: Path, *, secret: str, base_url: str = "") -> None:
        self.root = root.resolve()
        self._secret = secret.encode()
        self._base_url = base_url.rstrip("/")

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(
        self, key: str, fileobj: BinaryIO, *, content_type: str, progress: Progress | None = None
    ) -> int:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        # Write to a temporary file beside the target and rename, so a reader never sees half.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := fileobj.read(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                    if progress:
                        progress(len(chunk))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return written

    def read_range(self, key: str, start: int, end: int) -> bytes:
        try:
            with self.path(key).open("rb") as f:
                f.seek(start)
                return f.read(end - start + 1)
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        try:
            f = self.path(key).open("rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        with f:
            while chunk := f.read(chunk_size):
                yield chunk

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def sign(self, key: str, expires: int, disposition: str, content_type: str) -> str:
        msg = f"{key}\n{expires}\n{disposition}\n{content_type}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def verify(
        self, key: str, expires: int, disposition: str, content_type: str, signature: str
    ) -> bool:
        """Whether the signature is ours and the link has not expired."""
        if expires < int(time.time()):
            return False
        expected = self.sign(key, expires, disposition, content_type)
        return hmac.compare_digest(expected, signature)

    def download_url(
        self,
        key: str,
        *,
        ttl: int,
        content_type: str,
        filename: str | None = None,
        disposition: Disposition = "inline",
    ) -> str:
        check_key(key)
        expires = int(time.time()) + ttl
        disp = content_disposition(disposition, filename)
        query = urlencode(
            {
                "exp": expires,
                "disp": disp,
                "type": content_type,
                "sig": self.sign(key, expires, disp, content_type),
            }
        )
        return f"{self._base_url}/media/{key}?{query}"

    def ping(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise StorageUnavailable(f"media folder {self.root} is not writable")
            shutil.disk_usage(self.root)
        except OSError as exc:
            raise StorageUnavailable(f"media folder {self.root}: {exc}") from exc


def make_storage(settings: Settings) -> Storage:
    """The backend chosen by RAPPORT_STORAGE."""
    if settings.storage == "s3":
        from app.integrations.s3 import S3Storage

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.media_dir, secret=settings.secret_key, base_url="")
