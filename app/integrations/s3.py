"""The S3 storage backend: the only module that talks to boto3."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from app.config import Settings
from app.delivery.storage import (
    CHUNK,
    Disposition,
    ObjectNotFound,
    Progress,
    StorageError,
    StorageUnavailable,
    UploadPart,
    check_key,
    content_disposition,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

# Multipart above 8 MiB in 8 MiB parts, 4 at a time: at most ~32 MiB in memory, whatever the size.
TRANSFER = TransferConfig(
    multipart_threshold=8 * CHUNK, multipart_chunksize=8 * CHUNK, max_concurrency=4
)
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def _unavailable(exc: Exception) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return bool(status >= 500)
    return isinstance(exc, BotoCoreError)


class S3Storage:
    """Objects in one bucket of any S3-compatible store; downloads are presigned GET URLs."""

    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "eu-central-1",
        prefix: str = "",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        session = boto3.session.Session()
        common: dict[str, Any] = {"endpoint_url": endpoint_url, "region_name": region}
        self.client: S3Client = session.client(
            "s3",
            config=Config(
                signature_version="s3v4",
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path" if endpoint_url else "auto"},
            ),
            **common,
        )
        # Readiness must answer fast: one attempt, short timeouts.
        self._probe: S3Client = session.client(
            "s3",
            config=Config(connect_timeout=2, read_timeout=2, retries={"max_attempts": 1}),
            **common,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        return cls(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            prefix=settings.s3_prefix,
        )

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _fail(self, exc: Exception, key: str) -> StorageError:
        if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
            return ObjectNotFound(key)
        if _unavailable(exc) or isinstance(exc, EndpointConnectionError):
            return StorageUnavailable(f"S3 bucket {self.bucket}: {exc}")
        return StorageError(f"S3 bucket {self.bucket}: {exc}")

    def put(
        self, key: str, fileobj: BinaryIO, *, content_type: str, progress: Progress | None = None
    ) -> int:
        written = 0

        def _count(n: int) -> None:
            nonlocal written
            written += n
            if progress:
                progress(n)

        try:
            self.client.upload_fileobj(
                fileobj,
                self.bucket,
                self._key(key),
                ExtraArgs={"ContentType": content_type},
                Callback=_count,
                Config=TRANSFER,
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from exc
        return written

    def read_range(self, key: str, start: int, end: int) -> bytes:
        try:
            obj = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{end}"
            )
            return obj["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from exc

    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from exc
        yield from obj["Body"].iter_chunks(chunk_size)

    def size(self, key: str) -> int:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from exc
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from exc

    def download_url(
        self,
        key: str,
        *,
        ttl: int,
        content_type: str,
        filename: str | None = None,
        disposition: Disposition = "inline",
    ) -> str:
        params = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "ResponseContentType": content_type,
            "ResponseContentDisposition": content_disposition(disposition, filename),
        }
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl)

    def ping(self) -> None:
        try:
            self._probe.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"S3 bucket {self.bucket} unreachable: {exc}") from exc

    # Browser uploads (used by authoring): presigned multipart parts, so bytes skip the app.

    def create_multipart_upload(self, key: str, *, content_type: str) -> str:
        """Start a multipart upload and return its id."""
        try:
            res = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self._key(key), ContentType=content_type
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from exc
        return res["UploadId"]

    def presign_upload_part(self, key: str, upload_id: str, part_number: int, *, ttl: int) -> str:
        """A URL to which the browser PUTs one part."""
        if not 1 <= part_number <= 10_000:
            raise StorageError("part number must be between 1 and 10000")
        return self.client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self.bucket,
                "Key": self._key(key),
                "UploadId": upload_id,
                "PartNumber": part_number,
            },
            ExpiresIn=ttl,
        )

    def list_parts(self, key: str, upload_id: str) -> list[UploadPart]:
        """Parts already uploaded, so that a resumed upload can skip them."""
        parts: list[UploadPart] = []
        marker = 0
        try:
            while True:
                res = self.client.list_parts(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    UploadId=upload_id,
                    PartNumberMarker=marker,
                )
                parts += [
                    UploadPart(p["PartNumber"], p["ETag"], p.get("Size", 0))
                    for p in res.get("Parts", [])
                ]
                if not res.get("IsTruncated"):
                    return parts
                marker = res["NextPartNumberMarker"]
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from exc

    def complete_multipart_upload(self, key: str, upload_id: str, parts: list[UploadPart]) -> None:
        """Join the uploaded parts into the object."""
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [
                        {"PartNumber": p.part_number, "ETag": p.etag}
                        for p in sorted(parts, key=lambda p: p.part_number)
                    ]
                },
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from exc

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload and its parts."""
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self._key(key), UploadId=upload_id
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, key) from exc
