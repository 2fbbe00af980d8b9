"""What a long session must not pile up: a pane switch recomposes the footer, and the keys
it replaced must be let go (Textual kept every one alive through the footer's watchers of
`compact`: about eight widgets, with their styles and strips, a switch). The memory over a
30-minute session is measured by benchmarks/app_memory.py."""

from __future__ import annotations

import gc

from textual.widgets._footer import FooterKey

from nanobot_tui.ui.widgets.footer import Footer
from tests.ui.test_process_pane import quiet_app
from tests.ui.test_small_terminal import main_screen

NARROW = (100, 30)  # one pane at a time: F2 shows each in turn
SWITCHES = 25


async def test_pane_switches_leave_no_footer_keys_behind() -> None:
    app = quiet_app()
    async with app.run_test(size=NARROW) as pilot:
        screen = await main_screen(app)
        await pilot.pause()
        for _ in range(SWITCHES):
            await pilot.press("f2")
            await pilot.pause()
        await pilot.pause()
        footer = screen.query_one(Footer)
        shown = len(footer.query(FooterKey))
        assert shown > 0
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, FooterKey)]
        watchers = getattr(footer, "__watchers", {}).get("compact", [])
        # At most the keys shown and those of one recompose still on its way out; before
        # the fix, every key of every switch (over 150 here).
        assert len(alive) <= 2 * shown, (len(alive), shown)
        assert len(watchers) <= 2 * shown, (len(watchers), shown)
