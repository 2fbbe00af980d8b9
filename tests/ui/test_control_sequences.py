"""Model and file text reaches the terminal without its control sequences: the chat's
answers, notes and tool blocks, grep hits and the file viewer, drawn by the real widgets
in a real pty, and the raw bytes read back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.ui.test_small_terminal import read_for, set_size

# OSC title, a hyperlink, blink+red, an 8-bit CSI, a bell: each between visible markers.
HOSTILE = (
    "one\x1b]0;PWNED\x07two\x1b]8;;http://evil.example\x1b\\three\x1b[5;31mfour\x9b5;31mfive\x07six"
)
SHOWN = "onetwothreefourfivesix"
# (The viewer shows a file's ESC as a picture, so "PWNED" may be drawn there as text.)
FORBIDDEN = [b"\x1b]0;PWNED", b"\x1b]8;;http://evil", b"\x1b[5;31m", b"\xc2\x9b", b"\x07six"]

CHILD = r"""
import sys
from pathlib import Path

from textual.app import App
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.context.volume import Volume
from nanobot_tui.ui.panes.chat import Note, UserMessage, problem_note
from nanobot_tui.ui.widgets.answer import Answer
from nanobot_tui.ui.panes.volumes import grep_hit
from nanobot_tui.ui.screens.viewer import FileViewer
from nanobot_tui.ui.widgets.tool_block import Outcome, ToolBlock

hostile = sys.argv[1]
src = Path(sys.argv[2])
src.write_text(f"{hostile}\n" * 3)
ingest(src, name="hostile", index=False)
volume = Volume.open("hostile")


class Show(App[None]):
    def compose(self):
        yield UserMessage(hostile)
        yield Answer(hostile)
        yield Note(hostile)
        yield problem_note(hostile)
        block = ToolBlock("c1", "read" + hostile, {"path": hostile})
        block.finish(Outcome(hostile, True, 0.1))
        yield block
        yield OptionList(*[Option(grep_hit(h).label) for h in volume.grep("four").hits])

    async def on_mount(self):
        answer = self.query_one(Answer)
        await answer.append("\n\n" + hostile)
        self.query_one("Collapsible").collapsed = False
        self.set_timer(1.5, self.view)

    def view(self):
        self.push_screen(FileViewer(volume, volume.files[0].path))
        self.set_timer(1.5, self.exit)


Show().run()
"""


def test_no_model_or_file_control_sequence_reaches_the_terminal(tmp_path: Path) -> None:
    script = tmp_path / "show.py"
    script.write_text(CHILD)
    master, slave = os.openpty()
    set_size(slave, (160, 48))
    env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor")
    proc = subprocess.Popen(
        [sys.executable, str(script), HOSTILE, str(tmp_path / "hostile.txt")],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        cwd=Path(__file__).parents[2],
    )
    os.close(slave)
    written = b""
    try:
        while proc.poll() is None or (more := read_for(master, 0.2)):
            written += read_for(master, 0.2)
        written += more
    finally:
        os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, written[-2000:]
    for sequence in FORBIDDEN:
        assert sequence not in written, sequence
    # The text between the sequences was drawn (the viewer shows ESC as a picture, ␛).
    screen = written.decode("utf-8", "replace")
    assert screen.count("onetwo") >= 4 and "␛" in screen
