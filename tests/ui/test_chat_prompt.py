"""The chat's prompt takes multi-line text: a paste stays whole and never sends, ctrl+j
(shift+enter, alt+enter where the terminal reports them) starts a new line, Enter sends
the whole text. The agent is a scripted FAKE (no model server); the terminal's bytes go
through Textual's own input parser, as the driver hands them to the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from textual import events
from textual._xterm_parser import XTermParser

from nanobot_tui.engine.agent.loop import AgentEvent, AnswerDelta, TurnDone
from nanobot_tui.engine.llm.results import Usage
from nanobot_tui.ui.panes.chat import Note, UserMessage
from tests.conftest import until
from tests.ui.test_app import text_of
from tests.ui.test_chat_agent import pane_of, quiet_app
from tests.ui.test_chat_turns import with_fake_agent

THREE_LINES = "first line\nsecond line\nthird line"


def typed(app: Any, data: str) -> None:
    """`data` as a terminal sends it: parsed into keys and pastes, posted to the app."""
    parser = XTermParser()
    for event in [*parser.feed(data), *parser.feed("")]:
        app.post_message(event)


def pasted(app: Any, text: str) -> None:
    """A paste, as a terminal sends it with bracketed paste on (Textual turns it on)."""
    typed(app, f"\x1b[200~{text}\x1b[201~")


def prompt_of(app: Any) -> Any:
    return app.screen.query_one("#prompt")


def listening_app() -> tuple[Any, list[str]]:
    """The app with a FAKE agent that answers "ok"; the list gets what each turn was given."""
    asked: list[str] = []

    async def script(text: str) -> AsyncIterator[AgentEvent]:
        asked.append(text)
        yield AnswerDelta("ok")
        yield TurnDone("ok", 1, None, Usage(10, 1, 11), 1)

    app = quiet_app()
    with_fake_agent(app, script)
    return app, asked


async def test_a_pasted_paragraph_stays_whole_and_sends_nothing() -> None:
    app, asked = listening_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: app.focused is prompt_of(app))
        # Terminals send a pasted line end as CR; a CR LF (from a Windows file) is one too.
        pasted(app, "first line\rsecond line\r\nthird line")
        await until(lambda: prompt_of(app).value != "")
        await pilot.pause()
        assert prompt_of(app).value == THREE_LINES
        assert asked == [] and not pane_of(app).busy and not pane_of(app).query(UserMessage)
        # It grew to show the three lines.
        assert prompt_of(app).content_size.height == 3


async def test_enter_sends_every_line_as_one_message() -> None:
    app, asked = listening_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: app.focused is prompt_of(app))
        pasted(app, THREE_LINES)
        await until(lambda: prompt_of(app).value != "")
        await pilot.press("enter")
        pane = pane_of(app)
        await until(lambda: bool(asked) and not pane.busy)
        await pilot.pause()
        assert asked == [THREE_LINES]
        assert [text_of(m) for m in pane.query(UserMessage)] == [f"› {THREE_LINES}"]
        assert prompt_of(app).value == ""


@pytest.mark.parametrize(
    ("key", "sent"),
    [("ctrl+j", "\n"), ("shift+enter", "\x1b[13;2u"), ("alt+enter", "\x1b[13;3u")],
    ids=["ctrl+j", "shift+enter (kitty protocol)", "alt+enter (kitty protocol)"],
)
async def test_the_new_line_key_starts_a_line_and_sends_nothing(key: str, sent: str) -> None:
    app, asked = listening_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: app.focused is prompt_of(app))
        await pilot.press(*"one")
        typed(app, sent)  # the bytes the terminal sends for the key
        await pilot.pause()
        await pilot.press(*"two")
        await pilot.pause()
        assert prompt_of(app).value == "one\ntwo"
        await pilot.press(key)  # and the key itself, as Pilot names it
        await pilot.press(*"three", "enter")
        await until(lambda: bool(asked) and not pane_of(app).busy)
        assert asked == ["one\ntwo\nthree"]


async def test_keys_in_one_burst_act_in_the_order_they_came() -> None:
    """Fast typing or a script delivers text, the new-line key and Enter in one read: the
    new line lands between the words and Enter sends all of it (a binding's action ran
    out of order with the typed text: "alphabeta" was sent as the text's remains, or
    nothing was)."""
    app, asked = listening_app()
    async with app.run_test(size=(120, 36)):
        await until(lambda: app.focused is prompt_of(app))
        typed(app, "alpha\nbeta\r")
        await until(lambda: bool(asked) and not pane_of(app).busy)
        assert asked == ["alpha\nbeta"]
        assert prompt_of(app).value == ""


async def test_an_empty_or_blank_prompt_sends_nothing() -> None:
    app, asked = listening_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: app.focused is prompt_of(app))
        await pilot.press("enter")
        pasted(app, "  \n\t\n   ")
        await until(lambda: prompt_of(app).value != "")
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert asked == [] and not pane_of(app).query(UserMessage) and not pane_of(app).busy


async def test_a_long_text_scrolls_in_a_prompt_of_a_few_lines() -> None:
    app, _asked = listening_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: app.focused is prompt_of(app))
        pasted(app, "\n".join(f"line {n}" for n in range(1, 41)))
        await until(lambda: prompt_of(app).value != "")
        await pilot.pause()
        prompt = prompt_of(app)
        assert prompt.value.count("\n") == 39
        transcript = pane_of(app).query_one("#transcript")
        # A few lines, then it scrolls; the transcript keeps most of the pane.
        assert 3 <= prompt.content_size.height <= 8 and prompt.max_scroll_y > 0
        assert transcript.size.height > prompt.outer_size.height
        assert prompt.scroll_y == prompt.max_scroll_y  # the cursor, at the end, in view


async def test_esc_still_stops_a_turn_and_enter_while_busy_keeps_the_text() -> None:
    asked: list[str] = []

    async def endless(text: str) -> AsyncIterator[AgentEvent]:
        asked.append(text)
        yield AnswerDelta("thinking it over")
        await asyncio.Event().wait()  # never ends by itself

    app = quiet_app()
    with_fake_agent(app, endless)
    async with app.run_test(size=(120, 36)) as pilot:
        pane = pane_of(app)
        await until(lambda: app.focused is prompt_of(app))
        await pilot.press(*"go", "enter")
        await until(lambda: pane.busy and bool(asked))
        pasted(app, "a second\nquestion")
        await until(lambda: prompt_of(app).value != "")
        await pilot.press("enter")  # still busy: refused, the text kept
        await pilot.pause()
        assert asked == ["go"] and prompt_of(app).value == "a second\nquestion"
        await pilot.press("escape")  # from the prompt: the chat's "stop"
        await until(lambda: not pane.busy)
        await pilot.pause()
        assert [text_of(n) for n in pane.query(Note)][-1] == "⊘ stopped"
        assert prompt_of(app).value == "a second\nquestion" and app.focused is prompt_of(app)


async def test_a_paste_draws_no_control_sequence() -> None:
    app, _asked = listening_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: app.focused is prompt_of(app))
        # A Paste event as a driver posts it (Textual's xterm parser types the ESC of a
        # pasted sequence as "^" itself; other drivers hand the text over as it is).
        app.post_message(events.Paste("red \x1b[31mRED\x1b[0m\ttitle \x1b]0;PWNED\x07 end"))
        await until(lambda: prompt_of(app).value != "")
        await pilot.pause()
        assert prompt_of(app).value == "red RED\ttitle  end"
