"""A model server the supervisor gave up on, in the app on the real embedded model: the
meter, a notification and the chat's status say it is down and how to restart it, and
the palette's command brings it back."""

from __future__ import annotations

import os
import signal

import pytest
from textual.widgets import Static

from nanobot_tui.engine.serving.status import ServerState
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.format import RESTART_HINT, RESTART_SERVERS
from nanobot_tui.ui.panes.meter import HardwareMeter
from tests.conftest import until
from tests.ui.palette import run_command
from tests.ui.test_app import small_config, text_of


@pytest.mark.model
async def test_a_server_that_stays_down_says_so_and_the_palette_restarts_it() -> None:
    app = NanobotApp(small_config())
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: app.engine_state.ready)
        assert app.workbench is not None
        manager = app.workbench.manager
        manager.max_restarts = 0  # the supervisor gives up at the first crash
        server = manager.server_for("main")
        pid = server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await until(lambda: server.state is ServerState.FAILED)
        meter = app.screen.query_one(HardwareMeter).query_one("#meter-servers", Static)
        await until(lambda: "failed" in text_of(meter))
        assert "down: exited with code -9" in text_of(meter)
        assert RESTART_HINT in text_of(meter)
        notes = [n.message for n in app._notifications]
        assert any("model server is down" in n and RESTART_HINT in n for n in notes), notes
        status = text_of(app.screen.query_one("#chat-status", Static))
        assert "down" in status and RESTART_HINT in status

        await run_command(pilot, RESTART_SERVERS)
        await until(lambda: server.state is ServerState.READY and server.pid not in (None, pid))
        await until(lambda: "ready" in text_of(meter) and RESTART_HINT not in text_of(meter))
        await until(lambda: any("restarted: main" in n.message for n in app._notifications))
