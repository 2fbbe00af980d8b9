"""Voice (channels/voice.py, the `voice` extra), with the real engines: hibari-tts speaks,
pocketsphinx hears, soundfile's libsndfile writes and reads Ogg/Opus. What a transcript
becomes, and who may have it carried out, goes through the same commands as typed text."""

from __future__ import annotations

import io
import re
import sys
import time

import numpy as np
import pytest
import soundfile

from nanobot_tui.channels.base import Inbound
from nanobot_tui.channels.commands import Commands
from nanobot_tui.channels.voice import (
    INSTALL_HINT,
    VoiceError,
    VoiceNote,
    VoiceReplies,
    command_from_speech,
    decode_audio,
    encode_ogg_opus,
    missing_engine,
    resample,
    speak,
    transcribe,
)
from nanobot_tui.engine.runs.control import run_status
from nanobot_tui.engine.runs.durable import execute, start_run
from nanobot_tui.engine.runs.spec import Budgets
from tests.channels.gateway_helpers import OWNER, STRANGER, hanoi_spec, telegram_config

CODE = re.compile(r"Pairing code: ([A-Z0-9]+)")

# Each phrase, spoken by hibari and heard by pocketsphinx, comes back word for word; and
# the command it says (RUN: the latest run).
ROUND_TRIPS = {
    "start the task on the server": None,  # the phrase: heard, but not a command
    "what is the status": "/status",
    "list every run": "/runs",
    "hold the latest task": "/pause RUN",
    "continue the latest task": "/resume RUN",
    "cancel the latest task": "/cancel RUN",
    "follow the latest job": "/watch RUN",
    "stop watching the latest task": "/unwatch RUN",
    "start voice replies": "/voice on",
    "stop voice replies": "/voice off",
    "help": "/help",
}


def latest() -> str:
    return "RUN"


def test_command_phrases_round_trip_through_speech_exactly() -> None:
    heard = {phrase: transcribe(speak(phrase)) for phrase in ROUND_TRIPS}
    assert heard == {phrase: phrase for phrase in ROUND_TRIPS}
    commands = {p: command_from_speech(p, latest_run=latest) for p in ROUND_TRIPS}
    assert commands == ROUND_TRIPS


def test_a_note_recorded_at_48_khz_as_phones_do_is_heard() -> None:
    """Telegram's own voice notes are Opus at 48 kHz: decoded and brought down to 16."""
    samples, rate = decode_audio(speak("cancel the latest task"))
    assert rate == 24_000
    note = encode_ogg_opus(resample(samples, rate, 48_000), 48_000)
    assert soundfile.info(io.BytesIO(note)).samplerate == 48_000
    assert transcribe(note) == "cancel the latest task"


def test_resample_keeps_a_tone_and_its_length() -> None:
    seconds, tone = 0.5, 440.0
    t = np.arange(int(48_000 * seconds)) / 48_000
    down = resample(np.sin(2 * np.pi * tone * t), 48_000, 16_000)
    assert len(down) == 8_000
    expected = np.sin(2 * np.pi * tone * np.arange(8_000) / 16_000)
    middle = slice(500, 7_500)  # away from the filter's edges
    assert np.max(np.abs(down[middle] - expected[middle])) < 0.01


def test_what_is_not_audio_is_a_voice_error_in_one_line() -> None:
    with pytest.raises(VoiceError, match=r"^voice: the note is not ogg audio") as caught:
        transcribe(b"OggS but not really")
    assert "\n" not in str(caught.value)
    with pytest.raises(VoiceError, match=r"^voice: format 'mp3' is not one of"):
        transcribe(speak("help"), "mp3")


def test_only_clear_phrasings_become_commands() -> None:
    """Near misses are not guessed at; the latest run is looked up only when named."""

    def no_lookup() -> str:
        raise AssertionError("the latest run was looked up")

    for transcript in (
        "cause the latest round",  # "pause the latest run", misheard
        "pause",
        "cancel everything",
        "cancel the latest run and start again",
        "start the task on the server",  # no template of that name
        "",
    ):
        assert command_from_speech(transcript, latest_run=no_lookup) is None, transcript
    assert command_from_speech("Please, STATUS.", latest_run=no_lookup) == "/status"
    assert command_from_speech("pause the last run please", latest_run=latest) == "/pause RUN"
    templates = ["nightly-build", "tests"]
    assert (
        command_from_speech("start nightly build", latest_run=no_lookup, templates=templates)
        == "/start nightly-build"
    )


def note(sender: str, transcript: str, trouble: str | None = None) -> VoiceNote:
    return VoiceNote("telegram", sender, sender, transcript, time.time(), trouble=trouble)


async def test_a_spoken_command_is_carried_out_for_an_allowed_sender_only() -> None:
    """A real stopped simulated run: the stranger's spoken cancel gets a pairing code and
    does nothing; the owner's cancels it, and the answer says what was heard."""
    rid = await start_run(hanoi_spec(6))
    await execute(rid, budgets=Budgets(steps=10))
    commands = Commands(telegram_config())
    refused = await commands.handle(note(STRANGER, "cancel the latest task"))
    assert CODE.search(refused.text) and "nothing was done" in refused.text
    assert run_status(rid).status == "stopped"
    answer = await commands.handle(note(OWNER, "cancel the latest task"))
    assert answer.text == (
        f'heard "cancel the latest task" (/cancel {rid}): '
        f"run {rid}: cancelled (no runner was running)"
    )
    assert run_status(rid).status == "cancelled"


async def test_what_is_not_a_command_is_answered_with_what_was_heard() -> None:
    commands = Commands(telegram_config())
    answer = await commands.handle(note(OWNER, "start the task on the server"))
    assert answer.text.startswith(
        'heard "start the task on the server": not a command, so nothing was done; say '
    )
    no_runs = await commands.handle(note(OWNER, "hold the latest task"))
    assert no_runs.text == 'heard "hold the latest task": there is no run yet'
    silent = await commands.handle(note(OWNER, ""))
    assert silent.text.startswith("heard nothing in that voice note; say ")
    trouble = await commands.handle(note(OWNER, "", trouble="voice: too long"))
    assert trouble.text == "voice: too long"


async def test_voice_replies_are_per_telegram_chat() -> None:
    commands = Commands(telegram_config(email={"allow": [OWNER]}))
    replies = VoiceReplies()

    async def typed(text: str, channel: str = "telegram") -> str:
        return (await commands.handle(Inbound(channel, OWNER, OWNER, text, time.time()))).text

    assert await typed("/voice on") == "replies here come also as voice notes"
    assert replies.wanted("telegram", OWNER) and not replies.wanted("telegram", "77")
    assert await typed("/voice maybe") == "/voice: say on or off, not 'maybe'"
    assert await typed("/voice off") == "replies here are text only"
    assert not replies.wanted("telegram", OWNER)
    assert await typed("/voice on", "email") == "/voice: spoken replies are sent on Telegram only"


async def test_without_the_extra_voice_is_one_line_on_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pocketsphinx made unimportable, as when the extra is not installed."""
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    assert missing_engine() == "pocketsphinx"
    with pytest.raises(VoiceError, match="pip install 'nanobot-tui\\[voice\\]'"):
        transcribe(b"")
    commands = Commands(telegram_config())
    answer = await commands.handle(Inbound("telegram", OWNER, OWNER, "/voice on", time.time()))
    assert answer.text == f"/voice: {INSTALL_HINT} (pocketsphinx is not installed)"
    assert not VoiceReplies().wanted("telegram", OWNER)
