"""A synthetic haystack of code, docs and logs with needles planted at random lines.

Deterministic for a seed. Each needle is one line stating a project's access code, written
in the style of the file it lands in (a comment in code, a sentence in docs, a log
record in logs); the question for it names the project and asks for the code.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from pathlib import Path

WORDS = [
    "system",
    "data",
    "value",
    "request",
    "server",
    "client",
    "buffer",
    "stream",
    "index",
    "volume",
    "chunk",
    "token",
    "model",
    "process",
    "thread",
    "worker",
    "queue",
    "cache",
    "memory",
    "store",
    "record",
    "event",
    "signal",
    "handler",
    "config",
    "path",
    "file",
    "line",
    "result",
    "error",
    "status",
    "metric",
    "sample",
    "vote",
    "step",
    "state",
    "tree",
    "node",
    "budget",
    "trace",
    "update",
    "report",
    "search",
    "query",
    "ranking",
    "window",
    "context",
    "slice",
    "pattern",
    "match",
    "parse",
    "render",
]
LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "WARN", "ERROR")
SYLLABLES = ("ka", "lo", "mi", "zen", "dra", "vor", "qui", "tes", "ban", "rho", "sul", "nix")


@dataclass(frozen=True)
class Needle:
    project: str
    code: str
    file: str
    line: int  # 1-based line in the file where the needle sits

    @property
    def question(self) -> str:
        return f"What is the access code for project {self.project}?"


def _identifier(rng: random.Random) -> str:
    return "_".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def code_file(rng: random.Random, lines: int) -> list[str]:
    out: list[str] = []
    while len(out) < lines:
        name = _identifier(rng)
        args = ", ".join(_identifier(rng) for _ in range(rng.randint(0, 3)))
        out.append(f"def {name}({args}):")
        out.append(f'    """{_sentence(rng, rng.randint(4, 10))}"""')
        for _ in range(rng.randint(2, 8)):
            left, right = _identifier(rng), _identifier(rng)
            out.append(f"    {left} = {right}({rng.randint(0, 999)})")
        out.append(f"    return {_identifier(rng)}")
        out.append("")
    return out[:lines]


def doc_file(rng: random.Random, lines: int) -> list[str]:
    out: list[str] = [f"# {_sentence(rng, 4)[:-1]}", ""]
    while len(out) < lines:
        if rng.random() < 0.1:
            out += ["", f"## {_sentence(rng, 3)[:-1]}", ""]
        out.append(" ".join(_sentence(rng, rng.randint(6, 14)) for _ in range(rng.randint(1, 3))))
    return out[:lines]


def log_file(rng: random.Random, lines: int) -> list[str]:
    out = []
    t = rng.randint(0, 10**6)
    for _ in range(lines):
        t += rng.randint(1, 5000)
        stamp = f"2026-11-{1 + t // 86_400_000 % 28:02d}T{t // 3_600_000 % 24:02d}:"
        stamp += f"{t // 60_000 % 60:02d}:{t // 1000 % 60:02d}.{t % 1000:03d}Z"
        out.append(f"{stamp} {rng.choice(LEVELS):<5} [{rng.choice(WORDS)}] {_sentence(rng, 8)}")
    return out


def project_name(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
        if name not in taken:
            taken.add(name)
            return name


def access_code(rng: random.Random) -> str:
    pick = lambda n: "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))  # noqa: E731
    return f"{pick(2)}-{pick(3)}-{rng.randint(10, 99)}"


def needle_line(kind: str, project: str, code: str) -> str:
    if kind == "code":
        return f"    # NOTE: the access code for project {project} is {code}"
    if kind == "doc":
        return f"The access code for project {project} is {code}, keep it safe."
    return f"2026-11-25T03:14:15.926Z INFO  [vault] access code for project {project} is {code}"


def build(
    root: Path, *, tokens: int = 1_000_000, needles: int = 100, seed: int = 7
) -> list[Needle]:
    """Write about `tokens` tokens (4 characters each) of files under root; plant needles."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    budget = tokens * 4
    files: list[tuple[str, str, list[str]]] = []
    written = 0
    index = 0
    while written < budget:
        kind = rng.choice(("code", "code", "doc", "log"))
        n = rng.randint(200, 900)
        lines = {"code": code_file, "doc": doc_file, "log": log_file}[kind](rng, n)
        suffix = {"code": ".py", "doc": ".md", "log": ".log"}[kind]
        folder = {"code": "src", "doc": "docs", "log": "logs"}[kind]
        files.append((kind, f"{folder}/{kind}_{index:04d}{suffix}", lines))
        written += sum(len(line) + 1 for line in lines)
        index += 1

    taken: set[str] = set()
    planted: list[Needle] = []
    for _ in range(needles):
        kind, rel, lines = rng.choice(files)
        at = rng.randint(0, len(lines))
        project, code = project_name(rng, taken), access_code(rng)
        lines.insert(at, needle_line(kind, project, code))
        planted.append(Needle(project, code, rel, at + 1))
    # Needles planted earlier in the same file moved down when later ones went above them.
    for _, rel, lines in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    positions = {}
    for _, rel, lines in files:
        for number, line in enumerate(lines, 1):
            if "access code for project" in line:
                positions[(rel, line.split("project ")[1].split()[0].rstrip(","))] = number
    return [Needle(n.project, n.code, n.file, positions[(n.file, n.project)]) for n in planted]


# --------------------------------------------------------------------------- look-alikes

# Look-alike needles: every passage says the same words except a compound service name
# whose parts recur across passages (amber-quartz-3, amber-velvet-1, coral-quartz-3), so
# only the whole name tells them apart. Some land in near-empty files, whose tiny chunks
# BM25's length normalisation favours.
FIRSTS = ("amber", "coral", "ivory", "olive", "slate", "azure", "ochre", "umber")
SECONDS = ("quartz", "velvet", "falcon", "willow", "harbor", "cobalt", "meadow", "lantern")
TINY_FILE = '"""Package marker."""\n'
CODE_IN_LINE = re.compile(r" is ([A-Z0-9]{2}-[A-Z0-9]{3}-\d{2})\b")


@dataclass(frozen=True)
class Planted:
    kind: str  # "unique" (an invented project name) or "lookalike" (a compound name)
    question: str
    code: str
    file: str
    line: int  # 1-based line in the file where the needle sits


def source_files(limit_bytes: int) -> list[tuple[str, str]]:
    """(relative path, text) of real Python source, about `limit_bytes` of it: the
    standard library's .py files, then the environment's site-packages, in sorted order
    (deterministic on one machine)."""
    import sysconfig

    out: list[tuple[str, str]] = []
    total = 0
    for key in ("stdlib", "purelib"):
        base = Path(sysconfig.get_paths()[key])
        for path in sorted(base.rglob("*.py")):
            if key == "stdlib" and "site-packages" in path.parts:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if not text.strip():
                continue
            out.append((f"{key}/{path.relative_to(base)}", text))
            total += len(text.encode())
            if total >= limit_bytes:
                return out
    return out


def lookalike_line(name: str, code: str) -> str:
    return f"    # the release key for service {name} is {code}; rotate it when the service moves"


def build_source(
    root: Path, *, tokens: int = 1_000_000, unique: int = 100, lookalike: int = 60, seed: int = 7
) -> list[Planted]:
    """Real source code of about `tokens` tokens (4 bytes each) under root, with `unique`
    needles named by invented projects and `lookalike` needles named by compound names
    (a third of them each in a near-empty file of its own)."""
    rng = random.Random(seed)
    files = [(rel, text.splitlines()) for rel, text in source_files(tokens * 4)]
    taken: set[str] = set()
    names = [f"{a}-{b}-{d}" for a in FIRSTS for b in SECONDS for d in range(1, 10)]
    rng.shuffle(names)
    plan: list[tuple[str, str, str, str]] = []  # kind, rel, line text, question
    for k in range(unique + lookalike):
        code = access_code(rng)
        if k < unique:
            project = project_name(rng, taken)
            text = f"    # NOTE: the access code for project {project} is {code}"
            plan.append(("unique", code, text, f"What is the access code for project {project}?"))
        else:
            name = names[k - unique]
            question = f"What is the release key for service {name}?"
            plan.append(("lookalike", code, lookalike_line(name, code), question))
    planted: list[tuple[str, str, str, str]] = []  # kind, code, rel, question
    for n, (kind, code, text, question) in enumerate(plan):
        if kind == "lookalike" and n % 3 == 0:
            rel = f"planted/pkg_{n:03d}/__init__.py"
            files.append((rel, [*TINY_FILE.splitlines(), text]))
        else:
            rel, lines = rng.choice(files)
            lines.insert(rng.randint(0, len(lines)), text)
        planted.append((kind, code, rel, question))
    positions: dict[tuple[str, str], int] = {}
    codes = {code for _, code, _, _ in planted}
    for rel, lines in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        for number, line in enumerate(lines, 1):
            found = CODE_IN_LINE.search(line)
            if found and found.group(1) in codes:
                positions[(rel, found.group(1))] = number
    return [Planted(k, q, c, rel, positions[(rel, c)]) for k, c, rel, q in planted]
