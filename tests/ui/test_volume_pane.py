"""The volume browser pane and the file viewer, driven through Pilot on real volumes."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import ComposeResult
from textual.pilot import Pilot
from textual.widgets import Input, OptionList, Static, Tree

from nanobot_tui.engine.context.ingest import ingest
from nanobot_tui.engine.context.volume import Volume
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.panes.volumes import EMPTY_HINT, VolumeBrowser
from nanobot_tui.ui.screens.viewer import FileView, FileViewer
from nanobot_tui.units import human_bytes
from tests.conftest import until
from tests.ui.test_app import small_config

SIZE = (140, 40)

MODULE = "\n".join(
    [
        '"""A small module."""',
        "",
        "import os",
        "",
        "",
        "def greet(name: str) -> str:",
        '    return f"hello {name}"',
        "",
        *[f"VALUE_{i} = {i}  # filler line {i}" for i in range(200)],
        "",
        "def launch_rocket(code: int) -> None:",
        '    """The zephyr launch sequence: the secret code is 7315."""',
        "    print(code)",
        "",
        *[f"OTHER_{i} = {i}" for i in range(100)],
        "",
    ]
)


def make_project(root: Path) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "src" / "pkg" / "rocket.py").write_text(MODULE)
    (root / "src" / "pkg" / "__init__.py").write_text("from .rocket import greet\n")
    (root / "src" / "main.py").write_text("print('main')\n")
    (root / "docs" / "guide.md").write_text("# Guide\n\nSome *words* about the project.\n")
    (root / "README.md").write_text("# Project\n\nA test project.\n")
    return root


def browser(app: NanobotApp) -> VolumeBrowser:
    return app.screen.query_one(VolumeBrowser)


def prompts(listing: OptionList) -> list[str]:
    return [str(listing.get_option_at_index(i).prompt) for i in range(listing.option_count)]


def viewer_row(view: FileView, line: int) -> str:
    """The text drawn for file line `line`, gutter removed; it must be on screen."""
    top = view.scroll_offset.y
    assert top < line <= top + view.scrollable_content_region.height, "line not on screen"
    drawn = view.render_line(line - 1 - top).text
    number, _, text = drawn.partition(" │ ")
    assert int(number) == line
    return text.rstrip()


def on_screen(view: FileView, line: int) -> bool:
    top = view.scroll_offset.y
    return not view.loading and top < line <= top + view.scrollable_content_region.height


async def open_volume(pilot, name: str) -> VolumeBrowser:
    pane = browser(pilot.app)
    listing = pane.query_one("#volumes-list", OptionList)
    await until(lambda: any(o.id == name for o in listing.options))
    listing.focus()
    listing.highlighted = next(i for i, o in enumerate(listing.options) if o.id == name)
    await pilot.press("enter")
    await until(lambda: pane.is_open and pane.volume is not None)
    await pilot.pause()
    return pane


@pytest.mark.model
async def test_empty_state_then_refresh(tmp_path: Path) -> None:
    app = NanobotApp(small_config())
    async with app.run_test(size=SIZE) as pilot:
        pane = browser(app)
        assert pane.border_title == "Volumes"
        listing = pane.query_one("#volumes-list", OptionList)
        await until(lambda: listing.option_count == 1)
        assert prompts(listing) == [EMPTY_HINT]
        # Ingest now, then `r` on the list shows the new volume.
        (tmp_path / "a.txt").write_text("one\ntwo\n")
        ingest(tmp_path / "a.txt", name="late")
        listing.focus()
        await pilot.press("r")
        await until(lambda: listing.option_count == 1 and listing.options[0].id == "late")
        assert "1 files" in prompts(listing)[0]
        assert "8 B" in prompts(listing)[0]
        # Re-ingested bigger: `r` updates the row in place.
        (tmp_path / "a.txt").write_text("one\ntwo\n" * 1000)
        ingest(tmp_path / "a.txt", name="late")
        await pilot.press("r")
        await until(lambda: "8.0 kB" in prompts(listing)[0])
        # The pane did not wait for the model servers. Leaving while the server is still
        # loading its model makes the stop wait out a timeout, so let it come up first.
        await until(lambda: app.engine_state.ready or bool(app.engine_state.error))


async def search_opens_the_viewer_at_the_hit(pilot: Pilot[None], rocket: list[str]) -> None:
    """`/`, a query, Enter: ranked hits; the first opens the viewer at the line that
    matched; G and g in the viewer; Esc back to the pane."""
    app = pilot.app
    pane = browser(app)
    # `/` focuses the search box; a query lists ranked hits.
    await pilot.press("slash")
    query = pane.query_one("#volume-query", Input)
    assert app.focused is query
    await pilot.press(*"zephyr secret code")
    await pilot.press("enter")
    hits = pane.query_one("#volume-hits", OptionList)
    await until(lambda: bool(pane.hits))
    first = str(hits.get_option_at_index(0).prompt)
    assert first.startswith("src/pkg/rocket.py:")
    assert "7315" in first
    status = str(pane.query_one("#volumes-status", Static).render())
    assert "hits" in status
    # Choosing the first hit opens the viewer at the line that matched.
    target = rocket.index('    """The zephyr launch sequence: the secret code is 7315."""') + 1
    assert pane.hits[0].line == target
    hits.focus()
    await pilot.press("enter")
    await until(lambda: isinstance(app.screen, FileViewer))
    view = app.screen.view
    assert app.screen.title == "proj:src/pkg/rocket.py"
    await until(lambda: on_screen(view, target))
    assert view.target == target
    assert viewer_row(view, target) == rocket[target - 1]
    # The target sits mid-screen, and the view is highlighted as python.
    middle = view.scroll_offset.y + view.scrollable_content_region.height // 2
    assert abs(middle - target) <= 2
    assert view._lexer is not None and "python" in view._lexer.aliases
    # G and g go to the bottom and the top.
    await pilot.press("G")
    await until(lambda: on_screen(view, len(rocket)))
    await pilot.press("g")
    await until(lambda: view.scroll_offset.y == 0)
    assert viewer_row(view, 1) == rocket[0]
    await pilot.press("escape")
    await until(lambda: not isinstance(app.screen, FileViewer))


async def grep_hits_open_at_their_line(pilot: Pilot[None], rocket: list[str]) -> None:
    """re:PATTERN greps; a hit reads file:line: text and opens the viewer at that line."""
    app = pilot.app
    pane = browser(app)
    query = pane.query_one("#volume-query", Input)
    query.focus()
    query.value = r"re:def \w+\("
    await pilot.press("enter")
    await until(lambda: len(pane.hits) == 2)
    hits = pane.query_one("#volume-hits", OptionList)
    greet = rocket.index("def greet(name: str) -> str:") + 1
    assert str(hits.get_option_at_index(0).prompt) == (
        f"src/pkg/rocket.py:{greet}: def greet(name: str) -> str:"
    )
    assert "grep · 2 hits" in str(pane.query_one("#volumes-status", Static).render())
    hits.focus()
    await pilot.press("down", "enter")
    await until(lambda: isinstance(app.screen, FileViewer))
    launch = rocket.index("def launch_rocket(code: int) -> None:") + 1
    await until(lambda: on_screen(app.screen.view, launch))
    assert viewer_row(app.screen.view, launch) == rocket[launch - 1]
    await pilot.press("escape")
    await until(lambda: not isinstance(app.screen, FileViewer))


@pytest.mark.model
async def test_list_tree_search_grep_and_viewer(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    report = ingest(project, name="proj")
    notes = tmp_path / "notes.txt"
    notes.write_text("".join(f"note {i}\n" for i in range(50)))
    ingest(notes, name="notes")
    rocket = MODULE.splitlines()

    app = NanobotApp(small_config())
    async with app.run_test(size=SIZE) as pilot:
        pane = browser(app)
        listing = pane.query_one("#volumes-list", OptionList)
        await until(lambda: listing.option_count == 2)
        shown = prompts(listing)
        assert shown[0].startswith("notes\n") and shown[1].startswith("proj\n")
        with Volume.open("proj") as volume:
            size = human_bytes(volume.n_bytes)
        assert f"{report.files} files · {size}" in shown[1]
        assert "tok" in shown[1]

        # Enter opens a volume: its top-level entries only, folders not yet loaded.
        pane = await open_volume(pilot, "proj")
        tree = pane.query_one("#volume-tree", Tree)
        assert app.focused is tree
        top = [str(node.label).split("  ")[0] for node in tree.root.children]
        assert top == ["docs/", "src/", "README.md"]
        src = tree.root.children[1]
        assert src.allow_expand and not src.children
        # Expanding a folder (keyboard: cursor to it, space) adds its children then.
        tree.move_cursor(src)
        await pilot.press("space")
        await until(lambda: bool(src.children))
        assert [str(n.label).split("  ")[0] for n in src.children] == ["pkg/", "main.py"]
        pkg = src.children[0]
        assert not pkg.children  # still lazy one level down
        assert "lines" in str(src.children[1].label)

        # Enter on a file opens the viewer at line 1; escape pops it.
        tree.move_cursor(src.children[1])
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, FileViewer))
        viewer = app.screen
        assert viewer.title == "proj:src/main.py"
        assert "1 lines" in str(viewer.sub_title)
        await until(lambda: on_screen(viewer.view, 1))
        assert viewer_row(viewer.view, 1) == "print('main')"
        await pilot.press("escape")
        await until(lambda: app.screen.query(VolumeBrowser))
        pane = browser(app)

        await search_opens_the_viewer_at_the_hit(pilot, rocket)
        await grep_hits_open_at_their_line(pilot, rocket)

        # A bad pattern says so in one line.
        pane = browser(app)
        query = pane.query_one("#volume-query", Input)
        query.focus()
        query.value = "re:("
        await pilot.press("enter")
        status = pane.query_one("#volumes-status", Static)
        await until(lambda: "invalid pattern" in str(status.render()))

        # Escape goes back from the volume to the list (and closes the volume).
        await pilot.press("escape")
        await until(lambda: not pane.is_open)
        assert pane.volume is None
        assert app.focused is pane.query_one("#volumes-list", OptionList)
        # Backspace goes back too.
        pane = await open_volume(pilot, "notes")
        assert [str(n.label).split("  ")[0] for n in pane.query_one(Tree).root.children] == [
            "notes.txt"
        ]
        await pilot.press("backspace")
        await until(lambda: not pane.is_open)


@pytest.mark.model
async def test_viewer_jumps_through_a_million_lines(tmp_path: Path) -> None:
    big = tmp_path / "big.log"
    with big.open("w") as out:
        out.writelines(f"{i:07d} entry\n" for i in range(1, 1_000_001))
    ingest(big, name="big", index=False)

    app = NanobotApp(small_config())
    async with app.run_test(size=SIZE) as pilot:
        pane = await open_volume(pilot, "big")
        volume = pane.volume
        assert volume is not None
        viewer = FileViewer(volume, "big.log", 900_000)
        await app.push_screen(viewer)
        view = viewer.view
        await until(lambda: on_screen(view, 900_000))
        assert viewer_row(view, 900_000) == "0900000 entry"
        assert viewer.sub_title.startswith("1,000,000 lines")
        assert view.virtual_size.height == 1_000_000
        # Only the blocks around the target were read, not the file.
        assert len(view._blocks) <= 4
        # The end, then line 1, by keyboard.
        await pilot.press("G")
        await until(lambda: on_screen(view, 1_000_000))
        assert viewer_row(view, 1_000_000) == "1000000 entry"
        await pilot.press("ctrl+g")
        await pilot.press(*"123456", "enter")
        await until(lambda: on_screen(view, 123_456))
        assert viewer_row(view, 123_456) == "0123456 entry"
        assert view.target == 123_456
        # Two jumps in a row: the view ends at the second, whatever order the reads land.
        view.jump_to(500_000)
        view.jump_to(750_000)
        await until(lambda: on_screen(view, 750_000))
        await until(lambda: not any(w.is_running for w in app.workers if w.node is view))
        await pilot.pause()
        assert on_screen(view, 750_000)
        assert viewer_row(view, 750_000) == "0750000 entry"
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, FileViewer))


@pytest.mark.model
async def test_a_backtracking_grep_leaves_the_app_answering(tmp_path: Path) -> None:
    """re:(a+)+$ over lines of a's and then a b: Python's re took hours there, holding
    the GIL, so the app froze. The grep answers, a pattern RE2 lacks is one line, and
    ctrl+q then quits."""
    evil = tmp_path / "evil.txt"
    evil.write_text(("a" * 80 + "b\n") * 20 + "aaaa\n")
    ingest(evil, name="evil")
    app = NanobotApp(small_config())
    async with app.run_test(size=SIZE) as pilot:
        pane = await open_volume(pilot, "evil")
        query = pane.query_one("#volume-query", Input)
        status = pane.query_one("#volumes-status", Static)
        query.focus()
        query.value = "re:(a+)+$"
        await pilot.press("enter")
        await until(lambda: "grep · 1 hits" in str(status.render()))
        assert [str(o.prompt) for o in pane.query_one("#volume-hits", OptionList).options] == [
            "evil.txt:21: aaaa"
        ]
        query.focus()
        query.value = "re:(?<=a)b"
        await pilot.press("enter")
        await until(lambda: "lookahead and lookbehind are not supported" in str(status.render()))
        await until(lambda: app.engine_state.ready or bool(app.engine_state.error))
        await pilot.press("ctrl+q")
        await until(lambda: not app.is_running)


async def test_the_list_follows_an_ingest_made_elsewhere(tmp_path: Path) -> None:
    """A volume ingested by the CLI (another process; here the engine call it makes)
    shows up in the list, and a re-ingest updates its row, without pressing `r`."""
    from textual.app import App

    class Host(App[None]):
        def compose(self) -> ComposeResult:
            yield VolumeBrowser(id="volumes")

    app = Host()
    async with app.run_test(size=SIZE):
        listing = app.query_one("#volumes-list", OptionList)
        await until(lambda: prompts(listing) == [EMPTY_HINT])
        (tmp_path / "a.txt").write_text("one\ntwo\n")
        ingest(tmp_path / "a.txt", name="late", index=False)
        await until(lambda: [o.id for o in listing.options] == ["late"])
        assert "8 B" in prompts(listing)[0]
        (tmp_path / "a.txt").write_text("one\ntwo\n" * 1000)
        ingest(tmp_path / "a.txt", name="late", index=False)
        await until(lambda: "8.0 kB" in prompts(listing)[0])
