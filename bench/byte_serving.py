"""byte_serving: GB/s of our local media route serving a 1 GiB file against nginx with sendfile.

ours: `GET /media/assets/<hex>.bin?exp=...&sig=...` on our app (one uvicorn worker, the same
command line as every other figure), a signed link made by `LocalStorage.download_url` with
the server's secret; the route checks the signature and answers with Starlette's
`FileResponse`. baseline: nginx (one worker process, `sendfile on`, no access log) serving
the very same file from the same folder on another loopback port. The file is 1 GiB of
non-zero bytes (a random MiB repeated), written once, so both read it from the page cache.
Load: `wrk -t2 -c4` (four downloads at a time, whole-file GETs without Range); the figure is
wrk's Transfer/sec, in GB/s (10^9 bytes), median of the alternating rounds. Our server's RSS
(VmRSS) is sampled while it serves and logged: it should stay flat, not grow with the file.

nginx is installed with apt-get when missing and we are root; otherwise the figure is
skipped with a message (no line printed).
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from app.delivery.storage import LocalStorage
from bench._common import (
    BenchError,
    Result,
    Server,
    bench_rounds,
    bench_seconds,
    free_port,
    log,
    median,
    rapport_env,
    run_cli,
    warmup_seconds,
    wrk_path,
)

GOAL = 0.6
SIZE = 1024**3
KEY = "assets/" + "b" * 32 + ".bin"
CONNECTIONS = 4
NGINX_PACKAGES = ("nginx", "nginx-light")
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TRANSFER = re.compile(r"^Transfer/sec:\s+([0-9.]+)([KMGT]?B)", re.M)


def nginx_path() -> str | None:
    """The nginx binary, installed with apt-get if missing and we may; None to skip."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log(
            "byte_serving: nginx is not installed and we cannot install it (not root, or no "
            "apt-get); install it with `apt-get install -y nginx` to get this figure. Skipped."
        )
        return None
    policy = subprocess.run(
        ["apt-cache", "policy", *NGINX_PACKAGES], capture_output=True, text=True, check=False
    ).stdout
    candidates = re.findall(r"^(\S+):\n\s+Installed: .*\n\s+Candidate: (\S+)", policy, re.M)
    package = next((name for name, cand in candidates if cand != "(none)"), NGINX_PACKAGES[0])
    log(f"byte_serving: installing {package} with apt-get (nginx is the baseline)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return shutil.which("nginx") or "/usr/sbin/nginx"


def write_file(path: Path, size: int = SIZE) -> None:
    """`size` bytes of a random MiB repeated: real, non-zero data (no sparse holes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1024 * 1024)
    with path.open("wb") as f:
        for _ in range(size // len(block)):
            f.write(block)


class Nginx:
    """nginx in the foreground (daemon off), one worker, serving `root`; always stopped."""

    def __init__(self, binary: str, root: Path, workdir: Path) -> None:
        self.label = "nginx"
        self.binary = binary
        self.root = root
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        w = self.workdir
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the 0700 tmp dir
        temps = "".join(
            f"    {name}_temp_path {w / name};\n"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"{user}daemon off;\nworker_processes 1;\npid {w / 'nginx.pid'};\n"
            f"error_log {w / 'error.log'} warn;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            "    access_log off;\n    sendfile on;\n    tcp_nopush on;\n"
            "    default_type application/octet-stream;\n"
            f"{temps}"
            f"    server {{\n        listen 127.0.0.1:{self.port};\n"
            f"        root {self.root};\n    }}\n"
            "}\n"
        )

    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def __enter__(self) -> Nginx:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(self.config())
        cmd = [self.binary, "-e", str(self.workdir / "error.log"), "-p", str(self.workdir)]
        cmd += ["-c", str(conf)]
        log(f"starting nginx on {self.url}")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"nginx did not start: {' '.join(cmd)}\n{self.error_log()}")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("HEAD", "/")
            conn.getresponse().read()
            conn.close()
            return True
        except OSError:
            return False

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def first_bytes(base_url: str, path: str, count: int = 64) -> tuple[int, bytes]:
    """The status and first `count` bytes of a whole-file GET (read no further)."""
    conn = http.client.HTTPConnection(base_url.removeprefix("http://"), timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        length = int(resp.getheader("Content-Length") or -1)
        head = resp.read(count)
        if resp.status == 200 and length != SIZE:
            raise BenchError(f"GET {base_url}{path} announced {length} bytes, not {SIZE}")
        return resp.status, head
    finally:
        conn.close()


@dataclass
class RssSampler:
    """VmRSS of a process, sampled every `interval` seconds in a thread while in use."""

    pid: int
    interval: float = 0.1
    samples: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def rss(self) -> int:
        """Resident set size in bytes (0 once the process is gone)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(match.group(1)) * 1024 if match else 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.rss())

    def __enter__(self) -> RssSampler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def transfer(url: str, seconds: int, label: str) -> float:
    """Bytes per second read by `wrk -t2 -c4` over `seconds` of whole-file downloads."""
    cmd = [wrk_path(), "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "120s", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if proc.returncode != 0:
        raise BenchError(f"wrk failed (exit {proc.returncode}) against {label}\n{proc.stderr}")
    match = _TRANSFER.search(proc.stdout)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", proc.stdout)
    if match is None or non2xx:
        raise BenchError(f"wrk against {label}: no Transfer/sec or non-2xx answers\n{proc.stdout}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def run() -> list[Result]:
    wrk_path()  # fail fast, before any setup, when wrk is missing
    nginx = nginx_path()
    if nginx is None:
        return []
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as tmpdir:
        tmp = Path(tmpdir)
        env = rapport_env(tmp)
        env["RAPPORT_SECRET_KEY"] = secret = secrets.token_urlsafe(32)
        storage = LocalStorage(tmp / "media", secret=secret)
        started = time.monotonic()
        write_file(storage.path(KEY))
        log(f"byte_serving: wrote {SIZE} bytes in {time.monotonic() - started:.1f} s")
        run_cli(["migrate"], env, "migrate")
        ours_path = storage.download_url(KEY, ttl=3600, content_type="application/octet-stream")
        nginx_url_path = "/" + KEY
        with (
            Server("ours", "app.main:create_app", env, factory=True, ready_path="/healthz") as ours,
            Nginx(nginx, storage.root, tmp / "nginx") as base,
        ):
            ours_status, ours_head = first_bytes(ours.url, ours_path)
            base_status, base_head = first_bytes(base.url, nginx_url_path)
            if ours_status != 200 or base_status != 200 or ours_head != base_head:
                raise BenchError(
                    f"ours answered {ours_status}, nginx {base_status}, with "
                    f"{'the same' if ours_head == base_head else 'different'} first bytes\n"
                    f"--- our stderr ---\n{ours.stderr_text()}\n--- nginx ---\n{base.error_log()}"
                )
            sampler = RssSampler(ours.proc.pid if ours.proc else 0)
            idle_rss = sampler.rss()
            targets = ((ours, ours.url + ours_path), (base, base.url + nginx_url_path))
            for server, url in targets:
                transfer(url, warmup_seconds(), server.label)
            seconds, rounds = bench_seconds(), bench_rounds()
            rates: dict[str, list[float]] = {"ours": [], "nginx": []}
            for i in range(rounds):
                with sampler:
                    rates["ours"].append(transfer(targets[0][1], seconds, "ours"))
                rates["nginx"].append(transfer(targets[1][1], seconds, "nginx"))
                log(
                    f"round {i + 1}/{rounds}: ours {rates['ours'][-1] / 1e9:.2f} GB/s, "
                    f"nginx {rates['nginx'][-1] / 1e9:.2f} GB/s"
                )
            samples = sampler.samples or [idle_rss]
            log(
                f"byte_serving: our RSS idle {mb(idle_rss)}, while serving {mb(min(samples))}"
                f"..{mb(max(samples))} ({len(samples)} samples), after {mb(sampler.rss())}"
            )
    result = Result(
        "byte_serving", median(rates["ours"]) / 1e9, median(rates["nginx"]) / 1e9, "GB/s"
    )
    verdict = "meets" if result.ratio >= GOAL else "MISSES"
    log(f"byte_serving: ratio {result.ratio:.2f} {verdict} the goal of >= {GOAL}")
    return [result]
