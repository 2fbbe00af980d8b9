"""The one error tree: every error a user can cause derives from `NanobotError`.

Its `str()` is one line naming what was wrong and where (a file, a flag, a run id, a
model). The CLI catches `NanobotError` in one place and prints `nanobot: <message>`,
exiting with the error's `exit_code`; the app shows the same line in a notification.
Anything else that escapes is a bug and keeps its traceback.

    NanobotError                 exit 1: the machine, a server, the network, a file
    │                            that went bad under us
    ├── UsageError               exit 2: the user's own input was wrong (a flag, a
    │                            path, a name, a config value, a run spec)
    │   ├── ConfigError            config.json does not validate
    │   ├── SpecError              a run's spec is impossible
    │   ├── UnknownModelError      no such model in the catalog (a KeyError too)
    │   ├── UnknownQuantError      no such quant of a catalog model (a KeyError too)
    │   ├── RunNotFound            no such run id
    │   ├── SessionNotFound        no such agent session
    │   └── ...                    (each module's bad-input errors)
    ├── LLMError                 a model server or cloud API failed a request
    ├── ServerStartError         a llama.cpp server would not start
    ├── DownloadError            a model download failed
    │   ├── OfflineError           the host could not be reached at all
    │   ├── IntegrityError         the bytes are not the file asked for
    │   └── DiskSpaceError         the file cannot fit on the disk
    ├── GgufError                a file is not a readable GGUF model (a ValueError too)
    ├── StoreError               a run store is missing, locked or unreadable
    └── ...                      (each module's own, listed by `grep NanobotError`)

Subsystems define their errors beside the code that raises them and derive them from
one of these two classes; this module imports nothing from nanobot_tui, so every layer
may use it.
"""

from __future__ import annotations


class NanobotError(Exception):
    """Something the user can cause or fix; `str()` is one line."""

    exit_code = 1

    def __str__(self) -> str:
        # One line, whatever the message held: a path or a server's reply can carry
        # newlines, and the CLI prints exactly one line.
        return super().__str__().replace("\r", " ").replace("\n", " ")


class UsageError(NanobotError):
    """The user's own input was wrong: exit 2, like argparse's own errors."""

    exit_code = 2
