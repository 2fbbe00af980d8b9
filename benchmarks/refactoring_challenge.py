"""The Refactoring Challenge: `nanobot process` on a real open-source codebase.

The codebase is SymPy 1.14.0 (pure Python, 1,532 .py files), fetched from the package
registry at that pinned version and unpacked into a temporary folder, so every run starts
from the same bytes; its own tests run in a virtual environment of its own (SymPy 1.14.0
with its test requirements, pytest and hypothesis, from the registry, cached). The work is
the `fstrings` recipe, whose right edit is known (flynt's), so p and correctness are
measured, not guessed: flynt converts formatting in 384 of SymPy's files.

What runs, each as a user would run it (the real `nanobot` command, a private
NANOBOT_HOME):
1. SymPy's own tests (a stated subset, `--tests`) on the pristine tree;
2. `nanobot process ... --recipe fstrings --sampler simulated:P` over the WHOLE codebase
   (a SIMULATED model, right with probability P, otherwise a plausible wrong edit);
3. with `--real N`: the same with the embedded model (`--sampler local`) on the N files
   with the least to edit (the model writes each function back whole), and its
   projection to the whole codebase from the subset's cost per function;
4. the same tests on each run's final working copy; every changed file compiled.

    .venv/bin/python -m benchmarks.refactoring_challenge [--p 0.9] [--k 3] [--real N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

PACKAGE = "sympy"
VERSION = "1.14.0"
TEST_REQUIREMENTS = (f"{PACKAGE}=={VERSION}", "pytest", "hypothesis")
TESTS = "sympy/printing/tests"  # the tests of the code most of the edits touch
TASK = "turn %-formatting and str.format calls into f-strings"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nanobot-bench"
NANOBOT = [sys.executable, "-m", "nanobot_tui"]


def fetch(dest: Path) -> Path:
    """The pinned wheel from the registry (cached), unpacked into `dest`/codebase."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wheel = next(CACHE.glob(f"{PACKAGE}-{VERSION}-*.whl"), None)
    if wheel is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE),
             f"{PACKAGE}=={VERSION}"],
            check=True,
        )  # fmt: skip
        wheel = next(CACHE.glob(f"{PACKAGE}-{VERSION}-*.whl"))
    tree = dest / "codebase"
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith(f"{PACKAGE}/"):
                z.extract(name, tree)
    return tree


def test_python() -> Path:
    """A virtual environment with the codebase's test requirements (cached); the tests
    run from the tree, so they import the tree's copy of the package, not this one's."""
    venv = CACHE / f"venv-{PACKAGE}-{VERSION}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *TEST_REQUIREMENTS], check=True)
    return python


def run_tests(tree: Path, tests: str) -> dict[str, Any]:
    cmd = [str(test_python()), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests.split()]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return {"passed": proc.returncode == 0, "summary": last, "seconds": time.perf_counter() - start}


def nanobot(home: Path, *args: str) -> tuple[dict[str, Any], float]:
    env = {**os.environ, "NANOBOT_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.run([*NANOBOT, *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise SystemExit(f"nanobot {' '.join(args[:2])} printed nothing: {proc.stderr[-2000:]}")
    return json.loads(lines[-1]), wall


def process(home: Path, tree: Path, sampler: str, k: int, extra: list[str]) -> dict[str, Any]:
    out, wall = nanobot(
        home, "process", TASK, "--on", str(tree), "--recipe", "fstrings", "--sampler", sampler,
        "--k", str(k), "--json", *extra,
    )  # fmt: skip
    run, result = out["run"], out["outcome"]
    final = Path(result["patch"]).parent / "final" / "tree"
    return {
        "sampler": sampler,
        "k": k,
        "plan": out["plan"],
        "functions": result["functions"],
        "decided": result["decided"],
        "proposed": result["proposed"],
        "accepted": result["accepted"],
        "reverted": len(result["reverted"]),
        "changed_files": len(result["changed_files"]),
        "compiled": result["compiled"],
        "errors": run.get("errors"),
        "errors_by_reason": run.get("errors_by_reason"),
        "samples": run.get("samples"),
        "completion_tokens": run.get("completion_tokens"),
        "run_seconds": run.get("seconds"),
        "command_seconds": wall,
        "final_tree": str(final),
        "run_summary": run,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--p", type=float, default=0.9, help="the simulated model's p")
    ap.add_argument("--k", type=int, default=3, help="votes ahead (simulated run)")
    ap.add_argument("--real", type=int, default=0, metavar="N", help="N files with the real model")
    ap.add_argument("--real-k", type=int, default=2, help="votes ahead (real model)")
    ap.add_argument("--real-samples", type=int, default=6, help="samples per function at most")
    ap.add_argument("--tests", default=TESTS, help="the codebase's tests to run, before and after")
    ap.add_argument("--no-tests", action="store_true", help="skip the codebase's own tests")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nb-refactor-") as tmp:
        root = Path(tmp)
        tree = fetch(root)
        files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*.py"))
        report: dict[str, Any] = {"codebase": f"{PACKAGE} {VERSION}", "python_files": len(files)}
        if not args.no_tests:
            report["tests"] = args.tests
            report["tests_before"] = run_tests(tree, args.tests)
        sampler = f"simulated:{args.p}"
        sim = process(root / "home-sim", tree, sampler, args.k, ["--max-samples", "40"])
        if not args.no_tests:
            sim["tests_after"] = run_tests(Path(sim["final_tree"]), args.tests)
        report["simulated"] = sim
        if args.real:
            report["real"] = real_subset(root, tree, sim, args)
            if not args.no_tests:
                report["real"]["tests_after"] = run_tests(
                    Path(report["real"]["final_tree"]), args.tests
                )
        shutil.rmtree(root / "home-sim", ignore_errors=True)
    print(json.dumps(report, indent=None if args.json else 1, default=str))


def files_with_work(tree: Path) -> list[tuple[str, int]]:
    """(file, functions the recipe wants) in the order a process takes them."""
    from nanobot_tui.engine.work.domain import CodeDomain

    return CodeDomain({"root": str(tree), "recipe": "fstrings"}).groups()


def smallest_files_with_work(tree: Path, count: int) -> list[str]:
    """The `count` files whose functions to edit are the shortest in all (the embedded
    model writes every function back whole: short ones keep the measured subset cheap),
    in the order a process takes them."""
    from nanobot_tui.engine.work.domain import CodeDomain

    domain = CodeDomain({"root": str(tree), "recipe": "fstrings"})
    size: dict[str, int] = {}
    for site in domain.sites:
        size[site.path] = size.get(site.path, 0) + len(site.source)
    chosen = set(sorted(size, key=lambda path: (size[path], path))[:count])
    return [path for path, _ in domain.groups() if path in chosen]


def real_subset(
    root: Path, tree: Path, sim: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """The embedded model on the N files with the least to edit, and the whole
    codebase's cost projected from the subset's cost per function."""
    chosen = smallest_files_with_work(tree, args.real)
    res = process(
        root / "home-real", tree, "local", args.real_k,
        ["--files", *chosen, "--max-samples", str(args.real_samples)],
    )  # fmt: skip
    res["files"] = chosen
    n = res["functions"] or 1
    whole = sim["functions"]
    res["projection"] = {
        "functions": whole,
        "completion_tokens": res["run_summary"]["completion_tokens"] / n * whole,
        "hours": res["command_seconds"] / n * whole / 3600,
    }
    return res


if __name__ == "__main__":
    main()
