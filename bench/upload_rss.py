"""upload_rss: memory of the app while it takes a 2 GiB upload in local mode (chunks to disk).

Ours: the RSS growth of one uvicorn worker of Rapport while an author uploads 2 GiB through
the upload API (8 MiB chunks, PUT /api/v1/author/uploads/{id}/chunk), completes it, and its
processing job hashes the 2 GiB. Baseline: the RSS growth of a bare Starlette endpoint
(`baseline` below) streaming the same chunks to a file, under the same uvicorn command line.
Growth = peak VmRSS sampled every 20 ms minus VmRSS just before, after a warm-up upload.
Goal: ours < 100 MB (checked: a larger growth fails the benchmark).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench._common import (
    BenchError,
    Result,
    Server,
    env_number,
    log,
    median,
    rapport_env,
    run_cli,
)

MiB = 1024 * 1024
SIZE = int(os.environ.get("BENCH_UPLOAD_BYTES", str(2 * 1024 * MiB)))
CHUNK = 8 * MiB
GOAL_MB = 100.0
BLOCK = os.urandom(MiB)
# An MP4 start (ftyp) and one `free` box over the rest: a 64-byte head that passes the type
# check. It has no movie header, so processing ends "failed" after hashing all 2 GiB.
HEAD = struct.pack(">I4s4sI8s", 24, b"ftyp", b"isom", 512, b"isomiso2")


# The baseline: a bare Starlette endpoint that streams each chunk to a file -----------------


async def _baseline_put(request: Request) -> JSONResponse:
    target = Path(os.environ["BENCH_UPLOAD_DIR"]) / "baseline.bin"
    with target.open("ab") as f:
        async for data in request.stream():
            f.write(data)
        size = f.tell()
    return JSONResponse({"received": size})


async def _baseline_ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


baseline = Starlette(
    routes=[Route("/upload", _baseline_put, methods=["PUT"]), Route("/", _baseline_ok)]
)


# Measuring ------------------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    """The process's resident set size in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


class Peak:
    """Samples a process's RSS every 20 ms in a thread; the peak while it runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_kb(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_kb(self.pid))

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kb(self.pid))

    @property
    def growth_mb(self) -> float:
        """Peak minus the RSS before, in MB (10^6 bytes)."""
        return (self.peak - self.before) * 1024 / 1e6


def file_bytes(start: int, end: int) -> bytes:
    """Bytes start..end of the virtual upload: HEAD, a free box header, then BLOCK repeated."""
    out = bytearray()
    pos = start
    while pos < end:
        offset = pos % MiB
        take = min(MiB - offset, end - pos)
        out += BLOCK[offset : offset + take]
        pos += take
    prefix = HEAD + struct.pack(">I4s", SIZE - len(HEAD), b"free")
    if start < len(prefix):
        out[: len(prefix) - start] = prefix[start : min(end, len(prefix))]
    return bytes(out)


class Http:
    """One keep-alive connection to a server."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=300)
        self.headers = headers or {}

    def call(self, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
        """One request; its JSON answer, or BenchError for a non-2xx status."""
        self.conn.request(method, path, body=body, headers={**self.headers, **headers})
        response = self.conn.getresponse()
        raw = response.read()
        if response.status >= 300:
            raise BenchError(f"{method} {path} answered {response.status}: {raw[:500]!r}")
        return json.loads(raw) if raw else None

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def send_chunks(size: int, put: Callable[[int, bytes], int]) -> None:
    """Send size bytes of the virtual upload in CHUNK pieces, each at the offset put returned."""
    offset = 0
    while offset < size:
        offset = put(offset, file_bytes(offset, min(offset + CHUNK, size)))


def ours_upload(server: Server, token: str, size: int) -> None:
    """An upload through Rapport's API, until its processing has finished."""
    client = Http(server.url, {"Authorization": f"Bearer {token}"})
    try:
        head = base64.b64encode(file_bytes(0, 64)).decode()
        upload = client.call(
            "POST",
            "/api/v1/author/uploads",
            json.dumps(
                {"kind": "video", "filename": "bench.mp4", "size": size, "head": head}
            ).encode(),
            **{"Content-Type": "application/json"},
        )
        base = f"/api/v1/author/uploads/{upload['id']}"
        if upload["mode"] != "local" or upload["part_size"] != CHUNK:
            raise BenchError(f"unexpected upload plan: {upload}")

        def put(offset: int, data: bytes) -> int:
            done = client.call(
                "PUT",
                f"{base}/chunk?offset={offset}",
                data,
                **{"Content-Type": "application/octet-stream"},
            )
            return int(done["received"])

        send_chunks(size, put)
        client.call("POST", f"{base}/complete")
        deadline = time.monotonic() + 600
        while client.call("GET", base)["status"] == "processing":  # the sha256 job runs
            if time.monotonic() > deadline:
                raise BenchError("processing did not finish within 10 minutes")
            time.sleep(0.2)
    finally:
        client.close()


def baseline_upload(server: Server, size: int) -> None:
    """The same chunks to the bare endpoint."""
    client = Http(server.url)
    try:
        send_chunks(
            size, lambda _offset, data: int(client.call("PUT", "/upload", data)["received"])
        )
    finally:
        client.close()


def _author_token(database_url: str) -> str:
    from sqlmodel import Session

    from app.accounts import service
    from app.db import make_engine

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            user = service.get_user_by_email(session=session, email="author@example.com")
            assert user is not None
            _token, plain = service.create_api_token(session=session, user=user, name="bench")
            session.commit()
            return plain
    finally:
        engine.dispose()


def _empty(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def run() -> list[Result]:
    """One figure: RSS growth (MB) of ours and of the bare endpoint; lower is better."""
    # RSS is steadier than req/s, and each round moves 4 GiB: one round unless asked.
    rounds = int(env_number("BENCH_UPLOAD_ROUNDS", 1, 1))
    with tempfile.TemporaryDirectory(prefix="rapport-bench-upload-") as tmp_name:
        tmp = Path(tmp_name)
        env = rapport_env(tmp) | {"RAPPORT_ACCESS_LOG": "false"}
        run_cli(["migrate"], env, "migrate")
        run_cli(["create-user", "author@example.com", "--role", "author"], env, "create-user")
        token = _author_token(env["RAPPORT_DATABASE_URL"])
        media = Path(env["RAPPORT_MEDIA_DIR"])
        base_dir = tmp / "baseline"
        base_env = env | {"BENCH_UPLOAD_DIR": str(base_dir)}
        ours_growth: list[float] = []
        base_growth: list[float] = []
        with (
            Server(
                "rapport", "app.main:create_app", env, factory=True, ready_path="/healthz"
            ) as ours,
            Server("bare starlette", "bench.upload_rss:baseline", base_env) as bare,
        ):
            assert ours.proc is not None and bare.proc is not None
            # Warm-up: imports, thread pools and first allocations are not the upload's cost.
            _empty(base_dir)
            ours_upload(ours, token, 3 * CHUNK)
            baseline_upload(bare, 3 * CHUNK)
            for i in range(rounds):
                _empty(media)
                began = time.monotonic()
                with Peak(ours.proc.pid) as peak:
                    ours_upload(ours, token, SIZE)
                ours_s = time.monotonic() - began
                ours_growth.append(peak.growth_mb)
                _empty(base_dir)
                began = time.monotonic()
                with Peak(bare.proc.pid) as peak_base:
                    baseline_upload(bare, SIZE)
                base_s = time.monotonic() - began
                base_growth.append(peak_base.growth_mb)
                log(
                    f"round {i + 1}/{rounds}: {SIZE / 1e9:.2f} GB upload; RSS growth ours "
                    f"{ours_growth[-1]:.1f} MB (idle {peak.before / 1024:.0f} MiB, {ours_s:.0f} s "
                    f"with the sha256 job), bare {base_growth[-1]:.1f} MB (idle "
                    f"{peak_base.before / 1024:.0f} MiB, {base_s:.0f} s)"
                )
            _empty(media)
            _empty(base_dir)
    ours_mb, base_mb = median(ours_growth), median(base_growth)
    if ours_mb >= GOAL_MB:
        raise BenchError(f"RSS grew by {ours_mb:.1f} MB during a {SIZE / 1e9:.1f} GB upload")
    # A growth under 1 MB is noise: counted as 1 MB so that the ratio stays meaningful.
    return [Result("upload_rss", max(ours_mb, 1.0), max(base_mb, 1.0), "MB", False)]
