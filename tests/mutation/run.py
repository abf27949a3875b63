"""Mutation testing: `make mutate`, or `python tests/mutation/run.py [--only GROUP] [--keep]`.

The tool is mutmut 3 (a dev dependency). It copies the code once, puts every mutant of a
function behind a trampoline in that copy, runs pytest once to learn which tests reach which
function, then forks one child per mutant that runs only those tests: no file is rewritten
per mutant and pytest starts once. cosmic-ray rewrites a module on disk for each mutant and
starts the whole test command again (minutes a mutant for the checkout suite, on two cores),
and cannot aim at one function.

What a run does:
1. copies the working tree's app/, tests/, migrations/, templates/, courses/, alembic.ini and
   pyproject.toml (with a [tool.mutmut] section added) into a temporary folder: mutmut's
   mutants/ lives there, the repository is not written to, and the folder is removed after;
2. runs the tests of the mutated domains (tests/checkout, tests/engagement) once on the
   unmutated copy, on SQLite only (`-m "not postgres"`, the PostgreSQL parameter of the
   `database_url` fixture carries that mark): mutmut needs a green suite, so tests that
   already fail there are left out and named;
3. `mutmut run` over the targets below, on SQLite only as well;
4. prints each mutant that was not killed (status, file:line, mutant name, its diff), a
   line per file, and the closing line `mutate killed=K survived=S timeout=T`. Survivors do
   not fail the run; the exit code is 1 only when the run itself could not be done.

Targets: a file, or only some of its functions (mutmut's keys: `x_name` for a function,
`xǁClassǁname` for a method). In app/engagement/service.py that is `fold`, where a batch's
score decides `engaged_now` and `engaged_at`; app/engagement/fastpath.py has no such
decision of its own (it calls `service.fold` and stores what it returns) and its tests need
PostgreSQL, so it is not a target.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Target:
    file: str  # relative to the repository
    functions: tuple[str, ...] = ()  # mutmut keys; none: every function of the file

    @property
    def module(self) -> str:
        return self.file.removesuffix(".py").replace("/", ".")

    @property
    def patterns(self) -> list[str]:
        """mutmut's mutant names of the target (as `mutmut run` and its results take them)."""
        if not self.functions:
            return [f"{self.module}.*"]
        return [f"{self.module}.{key}__mutmut_*" for key in self.functions]


GROUPS: dict[str, tuple[Target, ...]] = {
    "engagement": (
        Target("app/engagement/score.py"),
        Target("app/engagement/service.py", ("x_fold",)),
    ),
    "checkout": (
        Target("app/checkout/service.py"),
        Target("app/checkout/webhooks.py"),
    ),
}
TESTS = ["tests/checkout", "tests/engagement"]
# SQLite only: the `postgres` mark is on the PostgreSQL parameter of `database_url` (and on
# the PostgreSQL-only modules); no cache folder in the copy either.
PYTEST_ARGS = ["-m", "not postgres", "-p", "no:cacheprovider"]
COPY_DIRS = ["app", "tests", "migrations", "templates", "courses"]
COPY_FILES = ["alembic.ini", "pyproject.toml"]
KILLED = {"killed", "caught by type check"}
TIMEOUT = {"timeout"}


@dataclass(frozen=True)
class Mutant:
    name: str
    status: str
    file: str
    line: int
    diff: list[str]


def copy_tree(work: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "artifacts")
    for name in COPY_DIRS:
        shutil.copytree(ROOT / name, work / name, ignore=ignore, symlinks=True)
    for name in COPY_FILES:
        shutil.copy2(ROOT / name, work / name)


def write_config(work: Path, targets: list[Target], deselected: list[str]) -> None:
    pyproject = work / "pyproject.toml"
    text = pyproject.read_text()
    if "[tool.mutmut]" in text:
        raise SystemExit("pyproject.toml has a [tool.mutmut] section: the runner writes its own")
    skip = [arg for node in deselected for arg in ("--deselect", node)]
    settings = {
        "source_paths": ["app"],
        "only_mutate": sorted({t.file for t in targets}),
        "also_copy": ["migrations", "templates", "courses", "alembic.ini"],
        "pytest_add_cli_args": PYTEST_ARGS + skip,
        "pytest_add_cli_args_test_selection": TESTS,
        "use_git_change_detection": False,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    pyproject.write_text(text + "\n".join(lines) + "\n")


def failing_tests(work: Path) -> list[str]:
    """The selected tests that fail on the unmutated code (mutmut needs a green start)."""
    cmd = [sys.executable, "-m", "pytest", *TESTS, *PYTEST_ARGS, "-q", "-rfE"]
    run = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
    if run.returncode not in (0, 1):
        print(run.stdout[-5000:] + run.stderr[-5000:])
        raise SystemExit(f"the tests could not run on the unmutated code (pytest {run.returncode})")
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+::\S+)", run.stdout, re.MULTILINE)
    if run.returncode == 1 and not failed:
        print(run.stdout[-5000:])
        raise SystemExit("pytest failed without naming a failing test (a collection error?)")
    return sorted(set(failed))


def run_mutmut(work: Path, targets: list[Target], max_children: int | None) -> None:
    mutmut = Path(sys.executable).parent / "mutmut"
    cmd = [str(mutmut), "run"]
    if max_children:
        cmd += ["--max-children", str(max_children)]
    cmd += [p for t in targets for p in t.patterns]
    log = work / "mutmut.log"
    print(f"mutate: mutmut running, log in {log}", flush=True)
    with log.open("w") as out:
        code = subprocess.run(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT, check=False)
    if code.returncode != 0:
        print(log.read_text()[-8000:])
        raise SystemExit(f"mutmut run failed (exit {code.returncode})")


def _function_start(source: str, key: str) -> int:
    """The first line (decorator or def) of the function a mutmut key names."""
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    name, cls = orig_function_and_class_names_from_key(key + "__mutmut_1")
    body: list[ast.stmt] = ast.parse(source).body
    if cls is not None:
        body = next(n.body for n in body if isinstance(n, ast.ClassDef) and n.name == cls)
    node = next(
        n for n in body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name
    )
    return min([node.lineno, *(d.lineno for d in node.decorator_list)])


def describe(work: Path, target: Target, name: str, status: str) -> Mutant:
    """The mutant's diff, and the line of the original file where it changes something."""
    import libcst as cst
    from mutmut.mutation import diff_apply

    key = name.rpartition(".")[2].partition("__mutmut_")[0]
    os.chdir(work)  # mutmut reads mutants/ relative to the working directory
    functions = diff_apply.read_functions_from_index(name, target.file)
    if functions is None:
        module = diff_apply.read_mutants_module(target.file)
        functions = (
            diff_apply.read_original_function(module, name),
            diff_apply.read_mutant_function(module, name),
        )
    orig, mutated = (cst.Module([f]).code.strip().split("\n") for f in functions)
    # The function's code may begin with the comments above it: line numbers count from its
    # decorator or def.
    first = next(i for i, s in enumerate(orig) if s.startswith(("@", "def ", "async def ")))
    start = _function_start((work / target.file).read_text(), key)
    changed = _first_change(orig, mutated)
    diff = [
        line
        for line in difflib.unified_diff(orig, mutated, lineterm="", n=0)
        if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))
    ]
    return Mutant(name, status, target.file, start + changed - first, diff)


def _first_change(orig: list[str], mutated: list[str]) -> int:
    for op, i, _, _, _ in difflib.SequenceMatcher(
        None, orig, mutated, autojunk=False
    ).get_opcodes():
        if op != "equal":
            return i
    return 0


def results(work: Path, targets: list[Target]) -> dict[Target, list[Mutant]]:
    """Each target's mutants (mutmut's results); the ones not killed with diff and line."""
    from mutmut.stats import status_by_exit_code

    found: dict[Target, list[Mutant]] = {}
    for target in targets:
        meta = json.loads((work / "mutants" / (target.file + ".meta")).read_text())
        codes: dict[str, int | None] = meta["exit_code_by_key"]
        mine = found.setdefault(target, [])
        for name, code in codes.items():
            if not any(fnmatch.fnmatchcase(name, p) for p in target.patterns):
                continue
            status = status_by_exit_code[code]
            if outcome(status) == "survived":
                mine.append(describe(work, target, name, status))
            else:
                mine.append(Mutant(name, status, target.file, 0, []))
    return found


def outcome(status: str) -> str:
    """killed, timeout or survived: every other status of mutmut's (no tests, suspicious,
    segfault, not checked) is listed with the survivors, under its own name."""
    if status in KILLED:
        return "killed"
    if status in TIMEOUT:
        return "timeout"
    return "survived"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", action="append", choices=sorted(GROUPS), help="a group")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--max-children", type=int, help="parallel mutants (default: cores)")
    args = parser.parse_args()
    groups: list[str] = args.only or list(GROUPS)
    targets = [t for g in groups for t in GROUPS[g]]

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="rapport-mutate-"))
    try:
        copy_tree(work)
        deselected = failing_tests(work)
        for node in deselected:
            print(f"mutate: left out, fails on the unmutated code: {node}")
        write_config(work, targets, deselected)
        run_mutmut(work, targets, args.max_children)
        found = results(work, targets)
    finally:
        os.chdir(ROOT)
        if args.keep:
            print(f"mutate: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    counts = dict.fromkeys(("killed", "survived", "timeout"), 0)
    for target, mutants in found.items():
        mine = dict.fromkeys(counts, 0)
        for m in mutants:
            mine[outcome(m.status)] += 1
            counts[outcome(m.status)] += 1
        what = " ".join([target.file, *(f.removeprefix("x_") for f in target.functions)])
        print(f"mutate {what}: " + " ".join(f"{k}={v}" for k, v in mine.items()))
    survivors = [m for ms in found.values() for m in ms if outcome(m.status) == "survived"]
    for m in sorted(survivors, key=lambda m: (m.file, m.line, m.name)):
        print(f"\n{m.status} {m.file}:{m.line} {m.name}")
        for d in m.diff:
            print(f"    {d}")
    print(f"\nmutate took {time.monotonic() - started:.0f}s")
    print(" ".join(["mutate", *(f"{k}={v}" for k, v in counts.items())]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
