"""Shared pieces of the benchmarks: results, errors, uvicorn servers and wrk runs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
_VENV_PY = ROOT / ".venv" / "bin" / "python"
PYTHON = str(_VENV_PY) if _VENV_PY.exists() else sys.executable


@dataclass(frozen=True)
class Result:
    """One figure: ours against the baseline, in one unit.

    `ratio` is always "how much of the baseline we reach", so higher is better: ours/baseline
    for rates (req/s, MB/s), baseline/ours for costs (ms, MB) where `higher_is_better` is False.
    """

    name: str
    ours: float
    baseline: float
    unit: str
    higher_is_better: bool = True

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.ours / self.baseline if self.baseline else 0.0
        return self.baseline / self.ours if self.ours else 0.0

    def line(self) -> str:
        return (
            f"bench {self.name} ratio={self.ratio:.2f} ours={fmt(self.ours)} "
            f"baseline={fmt(self.baseline)} unit={self.unit}"
        )


class BenchError(Exception):
    """A benchmark could not run or produced an invalid measurement; exits non-zero."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fmt(value: float) -> str:
    """Whole numbers for big values, three significant digits for small ones."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def log(message: str) -> None:
    """Progress for the human, on stderr: stdout carries only the `bench ...` lines."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def env_number(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise BenchError(f"{name}={raw!r} is not a number") from exc
    return max(value, minimum)


def bench_seconds() -> int:
    """Seconds of each measured wrk run (BENCH_SECONDS, default 5)."""
    return int(env_number("BENCH_SECONDS", 5, 1))


def warmup_seconds() -> int:
    """Seconds of the warm-up wrk run (BENCH_WARMUP_SECONDS, default 2)."""
    return int(env_number("BENCH_WARMUP_SECONDS", 2, 1))


def bench_rounds() -> int:
    """Alternating rounds per figure (BENCH_ROUNDS, default 3); the median is reported."""
    return int(env_number("BENCH_ROUNDS", 3, 1))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rapport_env(tmp: Path) -> dict[str, str]:
    """The process environment for a throwaway Rapport in `tmp` (inherited RAPPORT_* dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")}
    env.update(
        RAPPORT_DATABASE_URL=f"sqlite:///{tmp / 'bench.db'}",
        RAPPORT_MEDIA_DIR=str(tmp / "media"),
        RAPPORT_DATA_DIR=str(tmp / "data"),
        RAPPORT_STORAGE="local",
        RAPPORT_ENV="dev",
        RAPPORT_LOG_JSON="true",
    )
    return env


def run_cli(args: Sequence[str], env: Mapping[str, str], what: str) -> str:
    """Run `python -m app ARGS` in the repo root; its stdout, or BenchError with its output."""
    proc = subprocess.run(
        [PYTHON, "-m", "app", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(
            f"{what} failed (exit {proc.returncode}): python -m app {' '.join(args)}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def setup_catalog(tmp: Path, env: Mapping[str, str]) -> None:
    """Migrate a fresh database and publish every demo course folder into it."""
    run_cli(["migrate"], env, "migrate")
    folders = sorted(p for p in (ROOT / "courses").iterdir() if (p / "course.toml").is_file())
    if not folders:
        raise BenchError(f"no course folders (with course.toml) under {ROOT / 'courses'}")
    for folder in folders:
        run_cli(["publish", str(folder.relative_to(ROOT))], env, f"publishing {folder.name}")


def uvicorn_args(target: str, port: int, *, factory: bool) -> list[str]:
    """The one uvicorn command line every server of a comparison shares."""
    args = [PYTHON, "-m", "uvicorn", target]
    if factory:
        args.append("--factory")
    return [
        *args,
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--loop", "uvloop", "--http", "httptools"),
        *("--no-access-log", "--log-level", "warning"),
    ]


class Server:
    """A uvicorn server in its own process group; a context manager that always stops it."""

    def __init__(
        self,
        label: str,
        target: str,
        env: Mapping[str, str],
        *,
        factory: bool = False,
        ready_path: str = "/",
        start_timeout: float = 60.0,
    ) -> None:
        self.label = label
        self.target = target
        self.env = dict(env)
        self.factory = factory
        self.ready_path = ready_path
        self.start_timeout = start_timeout
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stderr_text(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-6000:]

    def start(self) -> None:
        cmd = uvicorn_args(self.target, self.port, factory=self.factory)
        log(f"starting {self.label} server on {self.url} ({self.target})")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # our access log goes there: its cost stays in
            stderr=self._stderr,
            start_new_session=True,  # own process group, killed whole in stop()
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.label} server exited with code {self.proc.returncode} "
                    f"before answering\ncommand: {' '.join(cmd)}\n"
                    f"--- its stderr ---\n{self.stderr_text()}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.label} server did not answer {self.url}{self.ready_path} within "
                    f"{self.start_timeout:.0f} s\ncommand: {' '.join(cmd)}\n"
                    f"--- its stderr ---\n{self.stderr_text()}"
                )
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as resp:
                resp.read()
            return True
        except urllib.error.HTTPError:
            return True  # it answered, if not with 2xx; callers check what they need
        except (OSError, urllib.error.URLError):
            return False

    def get(self, path: str) -> bytes:
        """GET a path; anything but 200 raises with the server's stderr."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as resp:
                status = resp.status
                body: bytes = resp.read()
        except urllib.error.HTTPError as exc:
            raise BenchError(
                f"{self.label} server answered GET {path} with {exc.code}\n"
                f"--- its stderr ---\n{self.stderr_text()}"
            ) from exc
        if status != 200:
            raise BenchError(f"{self.label} server answered GET {path} with {status}")
        return body

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL if it lingers; idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._stderr.close()


WRK_INSTALL_HINT = (
    "wrk is not installed: install it with `apt-get install -y wrk` "
    "(as root; `make bench` does this by itself when run as root)"
)


def wrk_path() -> str:
    path = shutil.which("wrk") or ("/usr/bin/wrk" if Path("/usr/bin/wrk").exists() else None)
    if path is None:
        raise BenchError(WRK_INSTALL_HINT, exit_code=2)
    return path


@dataclass(frozen=True)
class WrkRun:
    requests_per_sec: float
    non_2xx_3xx: int
    socket_errors: dict[str, int]
    output: str


_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(output: str) -> WrkRun:
    match = _RPS.search(output)
    if match is None:
        raise BenchError(f"no 'Requests/sec:' in wrk's output:\n{output}")
    non2xx = _NON2XX.search(output)
    sock = _SOCKET.search(output)
    errors = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True))
        if sock
        else {}
    )
    return WrkRun(float(match.group(1)), int(non2xx.group(1)) if non2xx else 0, errors, output)


def wrk(
    url: str, seconds: int, *, threads: int = 2, connections: int = 64, label: str = ""
) -> WrkRun:
    """One wrk run; any non-2xx/3xx response or socket error fails the benchmark."""
    cmd = [wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise BenchError(
            f"wrk failed (exit {proc.returncode}) against {label or url}: {' '.join(cmd)}\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    run = parse_wrk(proc.stdout)
    bad = {k: v for k, v in run.socket_errors.items() if v}
    if run.non_2xx_3xx or bad:
        raise BenchError(
            f"wrk against {label or url} saw {run.non_2xx_3xx} non-2xx/3xx responses and "
            f"socket errors {bad or 'none'}; the figure would be meaningless\n{proc.stdout}"
        )
    return run


def compare_rps(
    ours: Server, baseline: Server, path: str = "/", *, connections: int = 64
) -> tuple[float, float]:
    """Warm both up, then alternate measured wrk runs; the median req/s of each."""
    seconds, rounds = bench_seconds(), bench_rounds()
    for server in (ours, baseline):
        wrk(server.url + path, warmup_seconds(), connections=connections, label=server.label)
    ours_rps: list[float] = []
    base_rps: list[float] = []
    for i in range(rounds):
        for server, into in ((ours, ours_rps), (baseline, base_rps)):
            run = wrk(server.url + path, seconds, connections=connections, label=server.label)
            into.append(run.requests_per_sec)
            log(f"round {i + 1}/{rounds} {server.label}: {run.requests_per_sec:.0f} req/s")
    return median(ours_rps), median(base_rps)
