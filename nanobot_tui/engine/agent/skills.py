"""Skills: one folder per skill under NANOBOT_HOME/skills/, each with a SKILL.md.

A SKILL.md may start with front matter between `---` lines; only simple `key: value`
lines are read (`name:`, `description:`), so no YAML parser is needed. Without them the
folder's name is the skill's name and the first line of text its description.

A user message is matched against each skill's name, description and first lines with
BM25 over the skills, using the context index's tokenizer (so `git_commit` meets "git
commit"), with plurals folded. A skill matches when it shares at least two content words
with the message, or one word of its name: "hello" (a chat word) matches nothing. At most
`limit` matched skills go into the prompt, within `max_chars`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from nanobot_tui import paths
from nanobot_tui.engine.context.tokens import STOP_WORDS, tokens

log = logging.getLogger(__name__)

SKILL_FILE = "SKILL.md"
MAX_SKILL_BYTES = 64 * 1024  # a bigger SKILL.md is read up to here
MATCH_LINES = 15  # the body's first non-empty lines that count for matching
MIN_MATCHED_TERMS = 2
NAME_WEIGHT = 3  # a word of the name counts as this many occurrences
K1, B = 1.2, 0.75
# Words of small talk: they say nothing about which skill would help.
CHAT_WORDS = frozenset(
    "hello hi hey hiya thanks thank thx please ok okay yes yeah yep no nope sure help "
    "good great fine morning afternoon evening night bye goodbye cool nice lol".split()
)


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    path: Path  # the SKILL.md
    body: str  # the text after the front matter

    def match_text(self) -> str:
        lines = [x for x in self.body.splitlines() if x.strip()][:MATCH_LINES]
        return "\n".join([self.description, *lines])


def _fold(term: str) -> str:
    """A plural's singular, roughly ("skills" -> "skill", "queries" -> "query")."""
    if len(term) > 4 and term.endswith("ies"):
        return term[:-3] + "y"
    if len(term) > 3 and term.endswith("s") and not term.endswith(("ss", "us", "is")):
        return term[:-1]
    return term


def terms(text: str) -> list[str]:
    """Content terms of `text`: index tokens, plurals folded, stop and chat words out."""
    out = []
    for token in tokens(text):
        if token in STOP_WORDS or token in CHAT_WORDS:
            continue
        out.append(_fold(token))
    return out


def front_matter(text: str) -> tuple[dict[str, str], str]:
    """(the `key: value` fields between the leading `---` lines, the body after them) of a
    SKILL.md's text; no front matter: ({}, the text)."""
    fields: dict[str, str] = {}
    body = text
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
        if end is not None:
            for line in lines[1:end]:
                key, sep, value = line.partition(":")
                if sep and key.strip() and not line.startswith((" ", "\t", "#")):
                    fields[key.strip().lower()] = value.strip().strip("\"'")
            body = "\n".join(lines[end + 1 :])
    return fields, body


def parse_skill(text: str, folder_name: str) -> tuple[str, str, str]:
    """(name, description, body) of a SKILL.md's text."""
    fields, body = front_matter(text)
    name = fields.get("name") or folder_name
    description = fields.get("description") or next(
        (x.strip() for x in body.splitlines() if x.strip() and not x.startswith("#")), ""
    )
    return name, description, body.strip()


def load_skills(root: Path | None = None, *, learned: bool = True) -> list[Skill]:
    """Every skill folder's SKILL.md, by name; with `learned` False, not those that
    learning wrote (`learned: true` in their front matter), as when learning is off. An
    unreadable one is skipped with a warning; a missing skills folder means no skills."""
    root = root if root is not None else paths.skills_dir()
    if not root.is_dir():
        return []
    skills = []
    for folder in sorted(root.iterdir()):
        path = folder / SKILL_FILE
        if folder.name.startswith(".") or not path.is_file():
            continue
        try:
            with path.open("rb") as fh:
                text = fh.read(MAX_SKILL_BYTES).decode("utf-8", "replace")
        except OSError as exc:
            log.warning("skill %s skipped: %s", folder.name, exc.strerror or exc)
            continue
        if not learned and front_matter(text)[0].get("learned", "").lower() == "true":
            continue
        name, description, body = parse_skill(text, folder.name)
        skills.append(Skill(name, description, path, body))
    return skills


def match_skills(skills: list[Skill], text: str, limit: int = 2) -> list[Skill]:
    """The skills that fit the message, best first (BM25 over the skills)."""
    query = list(dict.fromkeys(terms(text)))
    if not query or not skills or limit <= 0:
        return []
    docs: list[Counter[str]] = []
    names: list[set[str]] = []
    for skill in skills:
        name_terms = terms(skill.name.replace("-", " "))
        doc = Counter(terms(skill.match_text()))
        for term in name_terms:
            doc[term] += NAME_WEIGHT
        docs.append(doc)
        names.append(set(name_terms))
    n = len(docs)
    avgdl = sum(sum(d.values()) for d in docs) / n or 1.0
    df = {t: sum(1 for d in docs if t in d) for t in query}
    scored = []
    for skill, doc, name in zip(skills, docs, names, strict=True):
        matched = [t for t in query if t in doc]
        if len(matched) < MIN_MATCHED_TERMS and not name.intersection(matched):
            continue
        dl = sum(doc.values())
        score = 0.0
        for t in matched:
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            tf = doc[t]
            score += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avgdl))
        scored.append((-score, skill.name, skill))
    scored.sort(key=lambda row: (row[0], row[1]))
    return [skill for _, _, skill in scored[:limit]]


def skills_prompt(matched: list[Skill], max_chars: int = 2000) -> str | None:
    """The matched skills' instructions for the system prompt, within `max_chars`; None
    when nothing matched."""
    if not matched:
        return None
    head = "Skills that may help with this request:"
    share = max(200, (max_chars - len(head)) // len(matched))
    parts = [head]
    for skill in matched:
        title = f"## {skill.name}"
        room = share - len(title) - 2
        body = skill.body or skill.description
        if len(body) > room:
            note = f"\n[... clipped; the whole skill is in {skill.path}]"
            cut = max(0, room - len(note))
            newline = body.rfind("\n", 0, cut)
            body = body[: newline if newline > cut // 2 else cut].rstrip() + note
        parts.append(f"{title}\n{body}")
    return "\n\n".join(parts)


__all__ = [
    "Skill",
    "front_matter",
    "load_skills",
    "match_skills",
    "parse_skill",
    "skills_prompt",
    "terms",
]
