"""Both storage backends behave the same: streaming put, ranges, existence, delete, URLs."""

from __future__ import annotations

import io
import time
from urllib.parse import parse_qs, urlparse

import httpx2 as httpx
import pytest

from app.delivery.storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    Storage,
    StorageUnavailable,
    check_key,
    new_key,
)
from app.integrations.s3 import S3Storage
from tests.conftest import MotoServer, free_port


class CountingReader(io.RawIOBase):
    """A file-like source that never hands out more than `chunk` bytes per read."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = min(len(b), self.remaining)
        self.largest_read = max(self.largest_read, n)
        b[:n] = bytes(i % 251 for i in range(n))
        self.remaining -= n
        return n


def test_keys_are_generated_and_checked() -> None:
    key = new_key("assets", "My Video.MP4")
    assert check_key(key) == key and key.endswith(".mp4")
    assert new_key("assets", "../../etc/passwd").startswith("assets/")
    for bad in (
        "../x",
        "assets/../../etc/passwd",
        "/etc/passwd",
        "assets/abc",
        "ASSETS/" + "0" * 32,
    ):
        with pytest.raises(InvalidKey):
            check_key(bad)


def test_put_read_range_exists_delete(storage: Storage) -> None:
    key = new_key("assets", "data.bin")
    payload = bytes(range(256)) * 40
    progress: list[int] = []
    written = storage.put(
        key, io.BytesIO(payload), content_type="application/octet-stream", progress=progress.append
    )
    assert written == len(payload) == sum(progress)
    assert storage.exists(key)
    assert storage.size(key) == len(payload)
    assert storage.read_range(key, 0, 9) == payload[:10]
    assert storage.read_range(key, 1000, 1099) == payload[1000:1100]
    assert b"".join(storage.iter_bytes(key, chunk_size=1000)) == payload
    storage.delete(key)
    assert not storage.exists(key)
    storage.delete(key)  # deleting twice is fine
    with pytest.raises(ObjectNotFound):
        storage.size(key)


def test_put_streams_without_reading_the_whole_file(storage: Storage) -> None:
    size = 20 * 1024 * 1024 + 123  # above the S3 multipart threshold
    source = CountingReader(size)
    key = new_key("assets", "big.bin")
    assert storage.put(key, source, content_type="application/octet-stream") == size  # type: ignore[arg-type]
    assert storage.size(key) == size
    assert source.largest_read <= 8 * 1024 * 1024  # bounded chunks, never the whole file


def test_download_url_serves_ranges(storage: Storage, client_for_storage: httpx.Client) -> None:
    key = new_key("assets", "clip.mp4")
    payload = b"0123456789" * 100
    storage.put(key, io.BytesIO(payload), content_type="video/mp4")
    url = storage.download_url(key, ttl=60, content_type="video/mp4", filename="Clip.mp4")
    full = client_for_storage.get(url)
    assert full.status_code == 200 and full.content == payload
    part = client_for_storage.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == payload[10:20]


def test_s3_presigned_url_expiry_and_disposition(moto: MotoServer, s3_bucket: str) -> None:
    s3 = S3Storage(bucket=s3_bucket, endpoint_url=moto.url)
    key = new_key("assets", "book.pdf")
    url = s3.download_url(
        key,
        ttl=600,
        content_type="application/pdf",
        filename="Playbook.pdf",
        disposition="attachment",
    )
    query = parse_qs(urlparse(url).query)
    assert query["X-Amz-Expires"] == ["600"]
    assert query["response-content-disposition"][0].startswith("attachment;")
    assert urlparse(url).path.endswith(key)


def test_s3_presigned_multipart_upload(moto: MotoServer, s3_bucket: str) -> None:
    s3 = S3Storage(bucket=s3_bucket, endpoint_url=moto.url)
    key = new_key("uploads", "lesson.mp4")
    upload_id = s3.create_multipart_upload(key, content_type="video/mp4")
    part1 = b"a" * (5 * 1024 * 1024)
    part2 = b"b" * 1024
    url1 = s3.presign_upload_part(key, upload_id, 1, ttl=300)
    assert parse_qs(urlparse(url1).query)["X-Amz-Expires"] == ["300"]
    with httpx.Client() as http:
        r1 = http.put(url1, content=part1)
        assert r1.status_code == 200
        assert [p.part_number for p in s3.list_parts(key, upload_id)] == [1]  # resume sees part 1
        r2 = http.put(s3.presign_upload_part(key, upload_id, 2, ttl=300), content=part2)
        assert r2.status_code == 200
    s3.complete_multipart_upload(key, upload_id, s3.list_parts(key, upload_id))
    assert s3.size(key) == len(part1) + len(part2)
    assert s3.read_range(key, len(part1) - 1, len(part1)) == b"ab"


def test_local_signed_url_rejects_tampering(tmp_path: object) -> None:
    local = LocalStorage(tmp_path / "m", secret="s")  # type: ignore[operator]
    key = new_key("assets", "a.pdf")
    url = local.download_url(key, ttl=60, content_type="application/pdf")
    q = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
    assert local.verify(key, int(q["exp"]), q["disp"], q["type"], q["sig"])
    assert not local.verify(key, int(q["exp"]) + 1, q["disp"], q["type"], q["sig"])
    assert not local.verify(
        new_key("assets", "b.pdf"), int(q["exp"]), q["disp"], q["type"], q["sig"]
    )
    assert not local.verify(key, int(q["exp"]), "attachment", q["type"], q["sig"])
    expired = int(time.time()) - 1
    assert not local.verify(
        key, expired, q["disp"], q["type"], local.sign(key, expired, q["disp"], q["type"])
    )


def test_unreachable_s3_is_unavailable() -> None:
    s3 = S3Storage(bucket="nobody-home", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageUnavailable):
        s3.ping()
