"""The bad-input corpus: each entry is a name and the bytes (or the thing) a user or a
model might hand nanobot. Small and generated here; no big files are checked in."""

from __future__ import annotations

import struct

# config.json contents that are no valid config. Each must give one line, exit 2, from a
# command that reads the config, and leave the file as it was.
BAD_CONFIG_TEXTS: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b"  \n\t\n",
    "truncated": b'{"local": {"main": {"contextSize": 8192',
    "trailing-comma": b'{"local": {"main": {"contextSize": 8192,}}}',
    "not-an-object": b"[]",
    "a-string": b'"config"',
    "null": b"null",
    "a-number": b"42",
    "wrong-type": b'{"local": {"main": {"contextSize": "big"}}}',
    "slots-a-list": b'{"local": []}',
    "path-a-number": b'{"local": {"main": {"path": 5}}}',
    "negative-context": b'{"local": {"main": {"contextSize": -1}}}',
    "infinite-number": b'{"local": {"main": {"contextSize": 1e400}}}',
    "huge-integer": b'{"local": {"main": {"contextSize": 99999999999999999999999999}}}',
    "unknown-top-key": b'{"zzz": 1}',
    "unknown-slot-key": b'{"local": {"main": {"colour": "red"}}}',
    "unknown-model": b'{"local": {"main": {"model": "gpt-5"}}}',
    "bool-for-object": b'{"agent": true}',
    "non-utf8": b'{"local": {"main": {"path": "caf\xe9.gguf"}}}',
    "utf16-bom": b"\xff\xfe{\x00}\x00",
    "nul-bytes": b'{"a"\x00: 1}',
    "deeply-nested": b"[" * 100_000,
    "too-large": b'{"a": "' + b"x" * (2 << 20) + b'"}',
}

# Config files that are not regular files: made by the test (see test_cli_corpus).
ODD_CONFIG_FILES = ("directory", "fifo", "dev-zero-link", "self-link", "dangling-link")


def _gguf_header(version: int, tensors: int, kvs: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


# Model files given as a custom `path`: none is a usable GGUF model.
BAD_GGUF_FILES: dict[str, bytes] = {
    "empty": b"",
    "magic-only": b"GGUF",
    "header-cut": b"GGUF\x03\x00",
    "wrong-magic": b"GGML" + bytes(60),
    "random-bytes": bytes((i * 37 + 11) % 256 for i in range(16_384)),
    "text-file": b"this is not a model\n" * 50,
    "bad-version": _gguf_header(999, 0, 0),
    "absurd-tensor-count": _gguf_header(3, 1 << 62, 0),
    "absurd-kv-count": _gguf_header(3, 0, 1 << 62),
    "kv-cut-short": _gguf_header(3, 0, 1) + struct.pack("<Q", 1 << 40) + b"general.",
}

# Text a model (or a file) might send that holds terminal control sequences.
CONTROL_TEXTS: dict[str, str] = {
    "osc-title-bel": "a\x1b]0;PWNED\x07b",
    "osc-title-st": "a\x1b]2;PWNED\x1b\\b",
    "osc-unterminated": "a\x1b]0;PWNED forever",
    "csi-colour": "a\x1b[31mred\x1b[0mb",
    "csi-clear-screen": "a\x1b[2J\x1b[Hb",
    "csi-8bit": "a\x9b5mblink",
    "osc-8bit": "a\x9d0;title\x9cb",
    "dcs": "a\x1bPq#0;2;0;0;0\x1b\\b",
    "osc52-clipboard": "a\x1b]52;c;cm0gLXJmIC8=\x07b",
    "hyperlink": "a\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\b",
    "lone-esc": "a\x1b",
    "esc-charset": "a\x1b(0qqq\x1b(Bb",
    "bell-backspace-cr": "a\x07\x08\x08\rb",
    "nul-del": "a\x00\x7fb",
    "c1-range": "a" + "".join(chr(c) for c in range(0x80, 0xA0)) + "b",
    "many-sequences": "\x1b[1m" * 5_000 + "end",
}
