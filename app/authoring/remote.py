"""`rapport publish PATH --server URL --token TOKEN`: publish a course folder to a running
server through its JSON API and upload path (the same as the lesson page's uploads).

The folder is checked here first, exactly as a local publish checks it. Each file then goes
through `POST /api/v1/author/uploads` (a file the server already has, by sha256, is reused;
an interrupted upload of it is resumed), its bytes as presigned S3 parts or as chunks to the
app, `POST .../complete`, and the processing is awaited. Last, `PUT /api/v1/author/manifests/
{slug}` publishes the manifest with the asset ids and the Markdown texts.
"""

from __future__ import annotations

import base64
import functools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from app.authoring.uploads import SNIFF_BYTES, kind_of
from app.catalog.service import MediaFile, inspect_folder

PARALLEL_PARTS = 3
TRIES = 3  # per part or chunk, with backoff between them
BACKOFF = 1.0  # seconds, doubled at each try
PROCESSING_TIMEOUT = 30 * 60.0
Progress = Callable[[int], None]
Track = Callable[[str, int], Progress]  # (file name, size) -> per-bytes callback
T = TypeVar("T")


class RemoteError(Exception):
    """The server refused or could not be reached; `status` is the HTTP status (0: none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class RemoteReport:
    """What a remote publish did, for the CLI's summary."""

    slug: str
    created: bool = False
    uploaded: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0
    reused: int = 0
    lessons: dict[str, int] = field(default_factory=dict)


class _Slice:
    """A file region as a readable body that reports the bytes read (the bytes sent)."""

    def __init__(self, path: Path, start: int, length: int, progress: Progress | None) -> None:
        self._file: BinaryIO = path.open("rb")
        self._file.seek(start)
        self._left = length
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._file.read(size)
        self._left -= len(data)
        if self._progress is not None and data:
            self._progress(len(data))
        return data

    def close(self) -> None:
        self._file.close()


class Client:
    """The author JSON API of one server, with a bearer token."""

    def __init__(self, server: str, token: str, *, timeout: float = 60.0) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: object = None) -> Any:
        """One JSON request; RemoteError with the server's detail when it is not 2xx."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the author's own server URL
            self.server + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if data is not None else {}),
            },
        )
        return self._send(request)

    def put_chunk(self, path: str, body: _Slice, length: int) -> Any:
        """PUT raw bytes to the app (local mode chunks)."""
        request = urllib.request.Request(  # noqa: S310 - the author's own server URL
            self.server + path,
            data=body,  # a readable object: http.client streams it
            method="PUT",
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
            },
        )
        return self._send(request)

    def _send(self, request: urllib.request.Request) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise RemoteError(_detail(exc), exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise RemoteError(f"{self.server} cannot be reached: {exc}") from exc
        return json.loads(raw) if raw else None


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail
        )
    return f"{exc.code} {detail or exc.reason}"


def put_part(url: str, body: _Slice, length: int, timeout: float) -> None:
    """PUT one part straight to the bucket's presigned URL."""
    request = urllib.request.Request(  # noqa: S310 - a presigned URL the server handed out
        url,
        data=body,  # a readable object: http.client streams it
        method="PUT",
        # Without a type urllib says form-urlencoded, which a store may try to parse.
        headers={"Content-Length": str(length), "Content-Type": "application/octet-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        raise RemoteError(f"the bucket answered {exc.code} {exc.reason}", exc.code) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise RemoteError(f"the bucket cannot be reached: {exc}") from exc


def _retrying(what: str, attempt: Callable[[], T]) -> T:
    for n in range(1, TRIES + 1):
        try:
            return attempt()
        except RemoteError as exc:
            final = 400 <= exc.status < 500 and exc.status not in (403, 408, 409, 429)
            if n == TRIES or final:
                raise RemoteError(f"{what}: {exc}", exc.status) from exc
            time.sleep(BACKOFF * 2 ** (n - 1))
    raise AssertionError("unreachable: the last try raises")


def upload_file(client: Client, mf: MediaFile, progress: Progress | None) -> tuple[int, bool]:
    """Upload one file (or reuse or resume it); its asset id, and whether bytes were sent."""
    kind = kind_of(mf.content_type)
    with mf.path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    upload = client.call(
        "POST",
        "/api/v1/author/uploads",
        {
            "kind": kind,
            "filename": mf.path.name,
            "size": mf.size,
            "head": base64.b64encode(head).decode(),
            "sha256": mf.sha256,
        },
    )
    asset_id: int = upload["id"]
    if upload["status"] == "ready":
        return asset_id, False
    base = f"/api/v1/author/uploads/{asset_id}"
    if upload["status"] == "uploading":
        had = client.call("GET", f"{base}/parts")
        if progress is not None and had["received"]:
            progress(had["received"])
        if upload["mode"] == "s3":
            _send_parts(client, mf, upload, {p["part_number"] for p in had["parts"]}, progress)
        else:
            _send_chunks(client, mf, base, had["received"], upload["part_size"], progress)
        client.call("POST", f"{base}/complete")
    _await_processing(client, base)
    return asset_id, True


def _send_parts(
    client: Client,
    mf: MediaFile,
    upload: dict[str, Any],
    done: set[int],
    progress: Progress | None,
) -> None:
    step: int = upload["part_size"]
    base = f"/api/v1/author/uploads/{upload['id']}"
    todo = [n for n in range(1, upload["parts"] + 1) if n not in done]

    def send(number: int) -> None:
        start = (number - 1) * step
        length = min(step, mf.size - start)

        def attempt() -> None:
            urls = client.call("POST", f"{base}/parts", {"part_numbers": [number]})
            body = _Slice(mf.path, start, length, None)
            try:
                put_part(urls["urls"][0]["url"], body, length, client.timeout)
            finally:
                body.close()

        _retrying(f"part {number} of {mf.path.name}", attempt)
        if progress is not None:
            progress(length)  # counted when the part is stored: a retried part counts once

    with ThreadPoolExecutor(PARALLEL_PARTS, thread_name_prefix="rapport-part") as pool:
        for future in [pool.submit(send, n) for n in todo]:
            future.result()


def _send_chunk(client: Client, mf: MediaFile, base: str, at: int, length: int) -> int:
    body = _Slice(mf.path, at, length, None)
    try:
        return int(client.put_chunk(f"{base}/chunk?offset={at}", body, length)["received"])
    except RemoteError as exc:
        if exc.status in (0, 409):  # cut off, or the server has another offset: ask it
            received = int(client.call("GET", f"{base}/parts")["received"])
            if received != at:
                return received
        raise
    finally:
        body.close()


def _send_chunks(
    client: Client,
    mf: MediaFile,
    base: str,
    received: int,
    step: int,
    progress: Progress | None,
) -> None:
    while received < mf.size:
        at, length = received, min(step, mf.size - received)
        chunk = functools.partial(_send_chunk, client, mf, base, at, length)
        received = _retrying(f"{mf.path.name} at byte {at}", chunk)
        if progress is not None:
            progress(received - at)


def _await_processing(client: Client, base: str) -> None:
    deadline = time.monotonic() + PROCESSING_TIMEOUT
    while True:
        status = client.call("GET", base)
        if status["status"] == "ready":
            return
        if status["status"] == "failed":
            raise RemoteError(f"{status['filename']}: processing failed: {status['reason']}", 422)
        if time.monotonic() > deadline:
            raise RemoteError(f"{status['filename']}: still {status['status']}, gave up waiting")
        time.sleep(0.5)


def publish_remote(
    folder: Path, *, server: str, token: str, track: Track | None = None
) -> RemoteReport:
    """Check the folder, upload what the server lacks, and publish its manifest there."""
    spec, media, texts = inspect_folder(folder)  # ManifestError before anything is sent
    client = Client(server, token)
    report = RemoteReport(slug=spec.slug)
    assets: dict[str, int] = {}
    for key, mf in media.items():
        progress = track(mf.path.name, mf.size) if track else None
        assets[key], sent = upload_file(client, mf, progress)
        if sent:
            report.uploaded.append(mf.path.name)
            report.uploaded_bytes += mf.size
        else:
            report.reused += 1
            if progress is not None:
                progress(mf.size)
    result = client.call(
        "PUT",
        f"/api/v1/author/manifests/{spec.slug}",
        {
            "manifest": spec.model_dump(mode="json", exclude_none=True),
            "assets": assets,
            "texts": texts,
        },
    )
    report.created = bool(result["created"])
    report.lessons = {
        k: int(v) for k, v in result.items() if k.startswith("lessons_") and isinstance(v, int)
    }
    return report
