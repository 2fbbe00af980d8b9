"""A run's trace lines: the SQL that renders them from committed rows (for the read API
and the writer alike), the text of plain simulated steps, and the trace file the writer
appends to after each commit and repairs after a crash (see runs/traces.py for a line's
fields)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import IO, Any

from nanobot_tui.engine.runs.store.db import to_json
from nanobot_tui.engine.runs.store.rows import StepOut
from nanobot_tui.engine.runs.store.tree_update import merge_ranges

LINE_HEAD = '{"step":'


def trace_select(keep_samples: bool, where: str) -> str:
    """One JSON trace line per step row (and per earlier attempt) matching `where` over
    alias r (r.value = [first, last] of a step range), ordered by step then attempt.
    Fields that are null are left out (json_patch drops them): a plain simulated step's
    line is {"step", "attempt", "status", "rounds", "samples", "valid", "correct",
    "tokens"}."""
    sample_list = (
        ", 'sample_list', (SELECT json_group_array(json_object('key', x.key, 'red_flag', "
        "x.red_flag, 'tokens', x.tokens, 'temperature', x.temperature, 'latency_ms', "
        "x.latency_ms)) FROM samples x WHERE x.step = s.step AND x.attempt = {att})"
    )
    final = sample_list.format(att="s.attempts") if keep_samples else ""
    earlier = sample_list.format(att="s.attempt") if keep_samples else ""
    return (
        "SELECT st, at, line FROM ("
        "SELECT s.step AS st, s.attempts AS at, json_patch('{}', json_object('step', s.step, "
        "'attempt', s.attempts, 'status', s.status, 'rounds', s.rounds, 'samples', s.samples, "
        "'valid', s.valid, 'votes', json(s.votes), 'red_flags', json(s.red_flags), "
        "'winner', json(s.answer), 'correct', s.correct, 'tokens', s.completion_tokens, "
        f"'latency_ms', s.latency_ms, 'wall_ms', s.wall_ms, 'error', s.error{final})) AS line "
        f"FROM json_each(:ranges) AS r CROSS JOIN steps AS s ON {where} "
        "UNION ALL "
        "SELECT s.step AS st, s.attempt AS at, json_patch('{}', json_object('step', s.step, "
        "'attempt', s.attempt, 'status', s.status, 'rounds', s.rounds, 'samples', s.samples, "
        "'valid', s.valid, 'votes', json(s.votes), 'red_flags', json(s.red_flags), "
        "'winner', json(s.answer), 'tokens', s.completion_tokens, "
        f"'latency_ms', s.latency_ms, 'wall_ms', s.wall_ms, 'error', s.error{earlier})) AS line "
        f"FROM json_each(:ranges) AS r CROSS JOIN attempts AS s ON {where} "
        ") ORDER BY st, at"
    )


RANGE_WHERE = "s.step BETWEEN json_extract(r.value, '$[0]') AND json_extract(r.value, '$[1]')"


def mixed_tail(rounds: int, samples: int, valid: int, votes: str, flags: str | None) -> str:
    flag_part = f',"red_flags":{flags}' if flags else ""
    return (
        f',"attempt":1,"status":"completed","rounds":{rounds},"samples":{samples},'
        f'"valid":{valid},"votes":{votes}{flag_part},"correct":1,"tokens":0}}'
    )


def plain_tail(rounds: int, samples: int) -> str:
    """The rest of a plain simulated step's trace line after its step number."""
    return (
        f',"attempt":1,"status":"completed","rounds":{rounds},"samples":{samples},'
        f'"valid":{samples},"correct":1,"tokens":0}}'
    )


class TraceFile:
    """The trace file the writer thread appends a batch's lines to, right after the
    batch's commit, rendered from the rows the batch committed."""

    def __init__(self, path: Path, conn: sqlite3.Connection, keep_samples: bool) -> None:
        self.conn = conn
        self.file: IO[bytes] = open(path, "ab")  # noqa: SIM115 (closed in close())
        self.sql = trace_select(keep_samples, RANGE_WHERE)

    def offset(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        self.file.close()

    def append(self, text: str) -> None:
        if text:
            self.file.write(text.encode())
            self.file.write(b"\n")
            self.file.flush()

    def batch_text(
        self,
        runs: list[tuple[int, int, int, int]],
        mixed: list[tuple[int, int, int, int, str, str | None]],
        rows: list[StepOut],
    ) -> str:
        """The batch's trace lines in step order: plain and mixed simulated steps rendered
        here (the very text SQLite's json_object gives for their rows: tests check it),
        the other rows (and their earlier attempts) by SQL from the committed rows."""
        chunks: list[tuple[int, int, str]] = []
        head = LINE_HEAD
        for a, z, rounds, n in runs:
            tail = plain_tail(rounds, n)
            sep = tail + "\n" + head
            chunks.append((a, 0, head + sep.join(map(str, range(a, z + 1))) + tail))
        for step, rounds, n, valid, votes, flags in mixed:
            chunks.append((step, 0, f"{head}{step}" + mixed_tail(rounds, n, valid, votes, flags)))
        if rows:
            got = self.conn.execute(
                f"SELECT json_group_array(json_array(st, at, line)) FROM ({self.sql})",
                {"ranges": to_json(merge_ranges((r.step, r.step) for r in rows))},
            ).fetchone()[0]
            chunks += [tuple(x) for x in json.loads(got or "[]")]
        if not (runs or mixed):
            return "\n".join(c[2] for c in chunks)  # rows only: in order from SQL already
        chunks.sort(key=lambda c: (c[0], c[1]))
        return "\n".join(c[2] for c in chunks)

    def text(self, ranges: list[list[int]]) -> str:
        """Every line of `ranges`, by SQL from the committed rows."""
        got = self.conn.execute(
            f"SELECT group_concat(line, char(10)) FROM ({self.sql})",
            {"ranges": to_json(ranges)},
        ).fetchone()
        return got[0] or ""

    def repair(self, last: dict[str, Any] | None) -> None:
        """After a crash the last committed batch's lines may be missing or half written
        (they are written after its commit): cut the file back to where that batch began
        and write its lines again, from the committed rows."""
        if not last:
            return
        offset = int(last.get("offset", 0))
        size = self.file.seek(0, os.SEEK_END)
        if size < offset:
            return  # the file was cut or replaced by someone else: leave it
        self.file.truncate(offset)
        self.file.seek(offset)
        self.append(self.text(last.get("ranges") or []))


def unpack_trace(path: Path) -> None:
    """Before a runner appends to `path`: a trace compacted to `path`.gz
    (`nanobot runs compact`) is made plain again, so that appends and the repair's
    offsets apply to the very bytes they did before."""
    packed = path.with_name(path.name + ".gz")
    if path.exists() or not packed.exists():
        return
    part = path.with_name(path.name + ".part")
    with gzip.open(packed, "rb") as src, open(part, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(part, path)
    packed.unlink()
