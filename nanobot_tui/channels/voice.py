"""Voice, fully offline (the optional `voice` extra): voice notes heard as commands, and
replies spoken.

- Recognition: pocketsphinx with the US English model inside its wheel, on 16 kHz mono.
- Speech: hibari-tts, whose voice ships inside its wheel (24 kHz).
- Audio files: soundfile, whose wheel carries libsndfile with Ogg/Opus (Telegram's voice
  notes), so no ffmpeg is needed.

Nothing here imports the engines until they are used: without the extra this module still
imports, `missing_engine()` names what is missing, and a voice note is answered with
INSTALL_HINT.

A transcript becomes a command only when it is clearly one (`command_from_speech`): a few
fixed phrasings of the gateway's commands, a run named as "the latest run" (or task, or
job: run ids cannot be said). Anything else
is answered with what was heard, never executed. A spoken command is then handled exactly
as the typed one, so a changing command still needs an allowed sender.
"""

from __future__ import annotations

import importlib
import io
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanobot_tui.channels.base import Inbound
from nanobot_tui.channels.files import changing, gateway_dir, read_json
from nanobot_tui.errors import NanobotError

if TYPE_CHECKING:
    import numpy.typing as npt

INSTALL_HINT = (
    "voice notes need the optional 'voice' extra (pocketsphinx, hibari-tts, soundfile): "
    "pip install 'nanobot-tui[voice]'"
)
# The module each engine is imported as, in the order they are needed.
ENGINE_MODULES = ("numpy", "soundfile", "pocketsphinx", "hibari")
RECOGNIZER_RATE = 16_000  # the rate pocketsphinx's bundled model was trained at
# The containers a note may come in; libsndfile tells them apart by their first bytes.
FORMATS = ("flac", "oga", "ogg", "opus", "wav")
MAX_SPOKEN_CHARS = 600  # a longer reply is spoken up to here; the text has the rest
MAX_NOTE_BYTES = 5_000_000  # Telegram voice notes are far smaller; refuse anything bigger


class VoiceError(NanobotError):
    """A voice note that cannot be heard (not audio, too long) or a voice extra that is
    not installed; one line."""


@dataclass(frozen=True, slots=True)
class VoiceNote(Inbound):
    """An Inbound heard in a voice note, not typed: `text` is the transcript (empty when
    there is none) and `trouble`, when set, the one line saying why not."""

    trouble: str | None = None


def missing_engine() -> str | None:
    """The first module of the voice extra that cannot be imported; None when all can."""
    for name in ENGINE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def require_engines() -> None:
    missing = missing_engine()
    if missing is not None:
        raise VoiceError(f"{INSTALL_HINT} ({missing} is not installed)")


# --- audio ---------------------------------------------------------------------------------


def resample(samples: npt.NDArray[Any], from_rate: int, to_rate: int) -> npt.NDArray[Any]:
    """`samples` (mono float) at `to_rate`: zero-stuffed up, low-passed with a Kaiser-windowed
    sinc below both Nyquist rates, kept every n-th sample down."""
    import numpy as np

    common = gcd(from_rate, to_rate)
    up, down = to_rate // common, from_rate // common
    if up == down == 1:
        return samples.astype(np.float32)
    factor = max(up, down)
    taps = 32 * factor + 1
    cutoff = 0.5 / factor  # in cycles per sample at the upsampled rate
    n = np.arange(taps) - (taps - 1) / 2
    kernel = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, 8.0) * up
    stuffed = np.zeros(len(samples) * up, dtype=np.float64)
    stuffed[::up] = samples
    filtered = np.convolve(stuffed, kernel, mode="same")
    return np.asarray(filtered[::down], dtype=np.float32)


def decode_audio(audio: bytes, format: str = "ogg") -> tuple[npt.NDArray[Any], int]:
    """Mono float32 samples and their rate from an audio file's bytes (Ogg/Opus or Vorbis,
    WAV, FLAC)."""
    require_engines()
    import soundfile

    if format.lower() not in FORMATS:
        raise VoiceError(f"voice: format {format!r} is not one of {', '.join(FORMATS)}")
    if len(audio) > MAX_NOTE_BYTES:
        raise VoiceError(f"voice: a note of {len(audio):,} bytes is over {MAX_NOTE_BYTES:,}")
    try:
        data, rate = soundfile.read(io.BytesIO(audio), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        # libsndfile's own words, without the Python object it was given.
        reason = getattr(exc, "error_string", None) or str(exc)
        raise VoiceError(
            f"voice: the note is not {format} audio that can be read: {reason}"
        ) from None
    return data.mean(axis=1), int(rate)


def encode_ogg_opus(samples: npt.NDArray[Any], rate: int) -> bytes:
    """An Ogg/Opus file (what Telegram plays as a voice note) of mono float samples."""
    import soundfile

    out = io.BytesIO()
    soundfile.write(out, samples, rate, format="OGG", subtype="OPUS")
    return out.getvalue()


# --- the engines: loaded once, each used by one thread at a time ---------------------------

_recognizer_lock = threading.Lock()
_speaker_lock = threading.Lock()


@lru_cache(maxsize=1)
def _recognizer() -> Any:
    from pocketsphinx import Decoder

    # loglevel FATAL: pocketsphinx otherwise prints its whole configuration to stderr.
    return Decoder(samprate=RECOGNIZER_RATE, loglevel="FATAL")


@lru_cache(maxsize=1)
def _speaker() -> Any:
    from hibari import Hibari

    return Hibari(threads=1)


def transcribe(audio: bytes, format: str = "ogg") -> str:
    """The words said in `audio` (an Ogg/Opus voice note, or WAV or FLAC), lower case;
    "" when none were heard. Blocking: CPU-bound for about a second per note."""
    import numpy as np

    samples, rate = decode_audio(audio, format)
    pcm = (np.clip(resample(samples, rate, RECOGNIZER_RATE), -1.0, 1.0) * 32767).astype("<i2")
    with _recognizer_lock:
        decoder = _recognizer()
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
    return str(hypothesis.hypstr).strip() if hypothesis is not None else ""


def speak(text: str) -> bytes:
    """`text` spoken, as an Ogg/Opus file (a Telegram voice note). Blocking."""
    require_engines()
    import numpy as np

    spoken = text if len(text) <= MAX_SPOKEN_CHARS else text[:MAX_SPOKEN_CHARS] + "…"
    with _speaker_lock:
        speaker = _speaker()
        # A fixed seed: the same text gives the same note.
        samples = speaker(spoken, seed=0)
        rate = int(speaker.sample_rate)
    if len(samples) == 0:
        samples = np.zeros(rate // 10, dtype=np.float32)  # nothing to say: a short silence
    return encode_ogg_opus(samples, rate)


# --- transcripts -> commands -----------------------------------------------------------------

# Words a speaker may put around a command that change nothing in it.
_POLITE = ("please", "nanobot", "now")
# The phrasings below are ones pocketsphinx's general model hears right: it often hears
# "run" as "round" and "pause" as "cause", so "task" and "hold" are offered beside them.
_SIMPLE = {
    "status": "/status",
    "what is the status": "/status",
    "runs": "/runs",
    "list runs": "/runs",
    "list the runs": "/runs",
    "list every run": "/runs",
    "list every job": "/runs",
    "help": "/help",
    "voice replies on": "/voice on",
    "start voice replies": "/voice on",
    "voice replies off": "/voice off",
    "stop voice replies": "/voice off",
    "no more voice replies": "/voice off",
}
_RUN_VERBS = {
    "pause": "pause",
    "hold": "pause",
    "resume": "resume",
    "continue": "resume",
    "cancel": "cancel",
    "watch": "watch",
    "follow": "watch",
    "unwatch": "unwatch",
    "stop watching": "unwatch",
    "stop following": "unwatch",
    "status of": "status",
    "what is the status of": "status",
}
# A run is named aloud as the newest one: run ids are not sayable.
_LATEST_RUN = re.compile(r"the (?:latest|last|newest|current) (?:run|task|job)")
SPOKEN_HELP = (
    'say for instance "what is the status", "list every run", "hold the latest task", '
    '"continue the latest task", "cancel the latest task", "follow the latest task", '
    '"start TEMPLATE" or "stop voice replies"'
)


def normalize_speech(transcript: str) -> str:
    """Lower case, letters, digits and single spaces, without the polite words around it."""
    words = re.sub(r"[^a-z0-9' ]+", " ", transcript.lower()).split()
    while words and words[0] in _POLITE:
        words.pop(0)
    while words and words[-1] in _POLITE:
        words.pop()
    return " ".join(words)


def command_from_speech(
    transcript: str, *, latest_run: Callable[[], str], templates: Sequence[str] = ()
) -> str | None:
    """The typed command a transcript clearly says ("pause the latest run" -> "/pause
    RUN_ID"); None when it is not one of the phrasings known here. `latest_run` is asked
    only when the phrase names the latest run; `templates` are the names /start knows,
    spoken with spaces for their dashes and underscores."""
    said = normalize_speech(transcript)
    if said in _SIMPLE:
        return _SIMPLE[said]
    for spoken_verb, verb in _RUN_VERBS.items():
        rest = said.removeprefix(spoken_verb + " ")
        if rest != said and _LATEST_RUN.fullmatch(rest):
            return f"/{verb} {latest_run()}"
    if said.startswith("start "):
        rest = said.removeprefix("start ")
        for name in templates:
            if rest == re.sub(r"[-_]+", " ", name.lower()):
                return f"/start {name}"
    return None


# --- which chats get spoken replies ----------------------------------------------------------


class VoiceReplies:
    """The chats that asked for spoken replies (`/voice on`), per channel, kept in
    NANOBOT_HOME/gateway/voice.json: {CHANNEL: [CHAT, ...]}."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or gateway_dir() / "voice.json"

    def wanted(self, channel: str, chat: str) -> bool:
        chats = read_json(self.path).get(channel) or []
        return chat in chats

    def set(self, channel: str, chat: str, on: bool) -> bool:
        """Turn spoken replies on or off for `chat`; whether that changed anything."""
        with changing(self.path) as data:
            chats: list[str] = list(data.get(channel) or [])
            before = chat in chats
            if on and not before:
                chats.append(chat)
            elif not on and before:
                chats.remove(chat)
            data[channel] = chats
        return before != on
