"""A user message too long for the model's window becomes a volume the model reads with
the ctx_* tools, instead of a clipped copy or a refusal.

The session keeps the whole message (it is what the user said, and the chat shows it); a
"volume" record after it says that the live conversation gives the model a short note in
its place: the message's size, the volume's name, its first lines, and the tools that read
it. The volume is an ordinary one (`nanobot volumes` lists it, `nanobot grep` searches it),
ingested by the context engine from a copy of the text kept beside the session file, so
its root names a file that exists.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nanobot_tui import paths
from nanobot_tui.engine.agent.sessions import Session
from nanobot_tui.errors import NanobotError

if TYPE_CHECKING:
    from nanobot_tui.engine.agent.tools.registry import ToolRegistry
    from nanobot_tui.engine.context.micro_tools import ContextStore

# A message that would take more than this share of the window's room (what the system
# prompt, the tools and the answer leave) is stored: the rest of the conversation and a
# round of tool results need the remainder.
MESSAGE_SHARE = 0.75
HEAD_LINES = 5  # the note shows the message's first lines, up to HEAD_CHARS characters
HEAD_CHARS = 300
READ_TOOLS = ("ctx_slice", "ctx_grep", "ctx_search")
NAME_PREFIX = "message-"
NAME_CHARS = 64  # the longest volume name (storage.valid_name)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MessageStored:
    """A user message was too long for the window: the model reads it as a volume."""

    index: int  # the message's record index in the session
    volume: str
    tokens: int  # its estimated size in tokens
    lines: int


def volume_name(session: str, index: int) -> str:
    """`message-<session>-<index>`, the session's name cut so it stays a volume name."""
    tail = f"-{index}"
    room = NAME_CHARS - len(NAME_PREFIX) - len(tail)
    return f"{NAME_PREFIX}{session[:room]}{tail}"


def source_path(session: Session, index: int) -> Path:
    """The copy of message `index` that its volume is ingested from, beside the session
    file (`<session>.files/message-<index>.txt`)."""
    return session.path.with_name(f"{session.path.stem}.files") / f"message-{index}.txt"


def note_for(volume: str, tokens: int, lines: int, text: str) -> str:
    """What the model is given in place of the message."""
    return (
        f"[The user's message is too long to give here: about {tokens:,} tokens in "
        f'{lines:,} lines. Its whole text is stored as volume "{volume}". Read it with '
        f'ctx_slice (volume "{volume}", lines 1 to {lines:,}), find words in it with '
        "ctx_grep or passages with ctx_search, then answer the user. It begins:]\n"
        f"{_head(text)}"
    )


def _head(text: str) -> str:
    lines = text.splitlines()
    head = "\n".join(lines[:HEAD_LINES])
    if len(head) > HEAD_CHARS:
        return head[: HEAD_CHARS - 1] + "…"
    return head + ("\n…" if len(lines) > HEAD_LINES else "")


async def store_message(session: Session, index: int, text: str, tokens: int) -> MessageStored:
    """Write message `index` (`text`) as a volume and record in the session that the
    model is given the note instead. The ingest reads and indexes files: a thread does
    it. VolumeError or OSError when it cannot be written (the session is unchanged)."""
    name = volume_name(session.name, index)
    lines = await asyncio.to_thread(_ingest, source_path(session, index), name, text)
    note = note_for(name, tokens, lines, text)
    session.append({"type": "volume", "index": index, "volume": name, "content": note})
    return MessageStored(index, name, tokens, lines)


async def try_store_message(
    session: Session, index: int, text: str, tokens: int
) -> MessageStored | None:
    """`store_message`, or None (logged) when the volume cannot be written: the message
    then stays in the conversation and is clipped to fit, like any other."""
    try:
        return await store_message(session, index, text, tokens)
    except (NanobotError, OSError) as exc:
        log.warning("message %d of session %s not stored as a volume: %s", index, session.name, exc)
        return None


def _ingest(source: Path, name: str, text: str) -> int:
    """The text as file `source` (0600 in a 0700 folder, like the session), ingested as
    volume `name`; returns its line count."""
    from nanobot_tui.engine.context.ingest import ingest

    paths.ensure(source.parent)
    data = text.encode("utf-8", "replace")  # a lone surrogate cannot be stored as UTF-8
    fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return ingest(source, name).lines


def ensure_read_tools(tools: ToolRegistry, store: ContextStore | None) -> ContextStore | None:
    """Add the ctx_* tools to `tools` when it lacks them (an agent built without the
    context tools); returns the store they read through: `store`, or a new one when it is
    None and the tools were added."""
    if all(name in tools for name in READ_TOOLS):
        return store
    from nanobot_tui.engine.agent.tools.context import context_tools
    from nanobot_tui.engine.context.micro_tools import ContextStore

    store = store if store is not None else ContextStore()
    for tool in context_tools(store, output_chars=tools.output_chars):
        # Only the readers: the mem_* tools are not this agent's unless it was given them.
        if tool.name.startswith("ctx_") and tool.name not in tools:
            tools.add(tool)
    return store


__all__ = [
    "MESSAGE_SHARE",
    "MessageStored",
    "ensure_read_tools",
    "note_for",
    "source_path",
    "store_message",
    "try_store_message",
    "volume_name",
]
