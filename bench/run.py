"""Run the benchmarks: `python bench/run.py [NAME ...]`; prints one `bench ...` line per figure.

Every module `bench/<name>.py` exposing `run() -> list[Result]` is a benchmark. With no
names, all present ones run (known ones in the order below, then any others alphabetically).
"""

from __future__ import annotations

import importlib
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, so the `bench` package and `app` import from the repo root, and a bench
# module's name (catalog, ...) never shadows anything from bench/ itself.
sys.path[0] = str(ROOT)

from bench._common import BenchError, Result  # noqa: E402

ORDER = (
    "catalog",
    "stream_url",
    "byte_serving",
    "stamping",
    "ingestion",
    "upload_rss",
    "dashboard",
)
NOT_BENCHMARKS = {"run", "bare_app", "__init__", "data", "load"}  # load: `make load`


def available() -> list[str]:
    """The benchmark module names present in bench/, known order first."""
    here = Path(__file__).resolve().parent
    present = {p.stem for p in here.glob("*.py") if not p.stem.startswith("_")} - NOT_BENCHMARKS
    known = [n for n in ORDER if n in present]
    return known + sorted(present - set(ORDER))


def load(name: str) -> Callable[[], list[Result]]:
    module = importlib.import_module(f"bench.{name}")
    run = getattr(module, "run", None)
    if not callable(run):
        raise BenchError(f"bench/{name}.py has no run() function")
    return cast(Callable[[], list[Result]], run)


def _terminate(signum: int, _frame: object) -> None:
    # SIGTERM (CI timeouts, `kill`) unwinds like Ctrl-C, so every server is stopped.
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    names = available()
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("available:", " ".join(names) or "(none)")
        return 0
    unknown = [n for n in argv if n not in names]
    if unknown:
        print(
            f"unknown benchmark(s): {' '.join(unknown)}; available: {' '.join(names)}",
            file=sys.stderr,
        )
        return 2
    failed: list[str] = []
    code = 0
    for name in argv or names:
        try:
            results = load(name)()
        except BenchError as exc:
            print(f"bench {name} FAILED: {exc}", file=sys.stderr, flush=True)
            if exc.exit_code == 2:
                return 2  # a missing tool: every other benchmark would fail the same way
            failed.append(name)
            code = max(code, exc.exit_code)
            continue
        except Exception:
            print(f"bench {name} FAILED with an unexpected error:", file=sys.stderr)
            traceback.print_exc()
            failed.append(name)
            code = max(code, 1)
            continue
        for result in results:
            print(result.line(), flush=True)
    if failed:
        print(f"failed: {' '.join(failed)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
