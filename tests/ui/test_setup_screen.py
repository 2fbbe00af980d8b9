"""The setup wizard driven with the keyboard alone through Pilot: back, a failed download and a
retry, the real server test on the embedded model, and the config written only at the end.
The machine is FAKE_HARDWARE (a GPU is out of reach); downloads come from FakeHubServer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.widgets import OptionList, Static

from nanobot_tui.engine.serving.workbench import Workbench
from nanobot_tui.models.download import part_path
from nanobot_tui.ui.app import NanobotApp
from nanobot_tui.ui.screens.main import MainScreen
from nanobot_tui.ui.screens.setup import SetupApp, SetupScreen
from tests.conftest import until
from tests.fake_hub import FakeHubServer, files_under, hub, sha256_of
from tests.setup_fakes import COPY_ID, FAKE_HARDWARE, GIB, copy_on_hub
from tests.ui.test_app import small_config, text_of

__all__ = ["copy_on_hub", "hub"]  # fixtures, imported for pytest


async def ready(app: App[Any]) -> SetupScreen:
    await until(lambda: isinstance(app.screen, SetupScreen) and app.screen.ready)
    assert isinstance(app.screen, SetupScreen)
    return app.screen


async def pick(pilot, screen: SetupScreen, slot: str, model_id: str) -> None:  # type: ignore[no-untyped-def]
    """Arrow down the focused slot list to `model_id`."""
    assert screen.plan is not None
    options = screen.query_one(f"#slot-{slot}", OptionList)
    assert screen.focused is options
    target = screen.plan.slots[slot].index_of(model_id)  # type: ignore[index]
    while options.highlighted != target:
        await pilot.press("down" if (options.highlighted or 0) < target else "up")
    await pilot.pause()


def shown(screen: SetupScreen, selector: str) -> str:
    return text_of(screen.query_one(selector, Static))


@pytest.mark.model
@pytest.mark.usefixtures("copy_on_hub")
async def test_walk_with_back_a_failed_download_and_a_retry(
    hub: FakeHubServer, embedded_model: Path, nanobot_home: Path
) -> None:
    nanobot_home.mkdir()
    config_path = nanobot_home / "config.json"
    config_path.write_text('{"ui": {"theme": "nord"}}\n')
    before = config_path.read_bytes()
    hub.fail_status = 404  # the first download attempt fails

    app = SetupApp(SetupScreen(hardware=FAKE_HARDWARE))
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await ready(app)
        assert screen.plan is not None and screen.plan.tier == "hybrid"
        assert "FakeGPU 12GB (test fake)" in shown(screen, "#hardware-facts")

        await pilot.press("enter")
        assert screen.step == "models"
        await pick(pilot, screen, "main", COPY_ID)
        await pilot.press("tab")
        await pick(pilot, screen, "rlm", "smollm2-135m-instruct")
        await pilot.press("tab")
        await pick(pilot, screen, "memory", "smollm2-135m-instruct")
        assert [o.model_id for o in screen.plan.downloads()] == [COPY_ID]
        assert "your pick" in shown(screen, "#why-main")

        # Back to the hardware step and forward again: the picks are kept.
        await pilot.press("b")
        assert screen.step == "hardware"
        await pilot.press("enter")
        assert screen.step == "models"
        assert screen.plan.slots["main"].choice.model_id == COPY_ID
        assert screen.focused is screen.query_one("#slot-main", OptionList)

        await pilot.press("enter")
        assert screen.step == "download" and screen.download_state == "idle"
        assert hub.seen == []  # nothing starts before Enter
        await pilot.press("enter")
        await until(lambda: screen.download_state == "failed")
        error = shown(screen, "#download-error")
        assert "not found (404)" in error and "\n" not in error.strip()
        assert files_under(nanobot_home / "models") == []

        # Enter does not skip a failed download; r retries it.
        await pilot.press("enter")
        assert screen.step == "download"
        hub.fail_status = None
        await pilot.press("r")
        await until(lambda: screen.download_state == "done")
        copy = nanobot_home / "models" / COPY_ID / "SmolLM2-copy.Q4_1.gguf"
        assert sha256_of(copy) == sha256_of(embedded_model)
        assert not part_path(copy).exists()

        await pilot.press("enter")
        assert screen.step == "test"
        await until(lambda: screen.test_state in {"ok", "failed"}, timeout=120)
        assert screen.test_state == "ok", shown(screen, "#test-results")
        assert sorted(c.slots for c in screen.checks) == [("main",), ("rlm", "memory")]
        assert "Every server answered." in shown(screen, "#test-results")

        await pilot.press("enter")
        assert screen.step == "config"
        diff = shown(screen, "#config-diff")
        assert f'+      "model": "{COPY_ID}",' in diff and '-{"ui": {"theme": "nord"}}' in diff
        assert config_path.read_bytes() == before  # shown, not written yet

        await pilot.press("enter")
        assert screen.written == config_path
        written = json.loads(config_path.read_text())
        assert written["local"]["main"]["model"] == COPY_ID
        assert written["local"]["rlm"]["model"] == "smollm2-135m-instruct"
        assert written["ui"]["theme"] == "nord"  # the rest of the config is kept
        await pilot.press("enter")
    assert app.return_value == config_path


@pytest.mark.usefixtures("copy_on_hub")
async def test_back_during_a_download_keeps_the_part_and_resumes_later(
    hub: FakeHubServer, embedded_model: Path, nanobot_home: Path
) -> None:
    hub.block_delay_s = 0.01  # a slow link, so Esc lands mid-download
    app = SetupApp(SetupScreen(hardware=FAKE_HARDWARE))
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await ready(app)
        await pilot.press("enter")
        for slot in ("main", "rlm", "memory"):
            await pick(pilot, screen, slot, COPY_ID)
            await pilot.press("tab")
        await pilot.press("enter", "enter")
        assert screen.step == "download" and screen.download_state == "running"
        copy = nanobot_home / "models" / COPY_ID / "SmolLM2-copy.Q4_1.gguf"
        await until(lambda: part_path(copy).exists() and part_path(copy).stat().st_size > 0)
        # The progress line comes with the sink's next report, after the first bytes.
        await until(lambda: "/s · ETA " in shown(screen, "#download-status"))
        assert shown(screen, "#download-status").startswith("SmolLM2-copy Q4_1: ")

        await pilot.press("escape")
        assert screen.step == "models" and screen.download_state == "idle"
        # The cancelled worker closes the .part on its way out; then its size holds still.
        await until(lambda: not [w for w in app.workers if w.group == "setup-download"])
        kept = part_path(copy).stat().st_size
        assert 0 < kept < embedded_model.stat().st_size and not copy.exists()

        hub.block_delay_s = 0.0
        await pilot.press("enter", "enter")
        await until(lambda: screen.download_state == "done")
        assert hub.ranges() == [f"bytes={kept}-"]
        assert sha256_of(copy) == sha256_of(embedded_model)


async def test_escape_on_the_first_step_writes_nothing(nanobot_home: Path) -> None:
    app = SetupApp(SetupScreen(hardware=FAKE_HARDWARE))
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await ready(app)
        await pilot.press("enter")
        await pilot.press("enter")
        assert screen.step == "download"
        for step in ("models", "hardware"):
            await pilot.press("escape")
            assert screen.step == step
        await pilot.press("escape")
    assert app.return_value is None
    assert not (nanobot_home / "config.json").exists()
    assert files_under(nanobot_home / "models") == []


async def test_a_slot_keeping_its_own_model_file_says_so(nanobot_home: Path) -> None:
    """A config whose main slot names the user's own GGUF: the models step and the final
    summary name that file, not the catalog model the tier would otherwise pick."""
    nanobot_home.mkdir()
    mine = nanobot_home / "mine.gguf"
    mine.write_bytes(b"GGUF" + bytes(1000))
    (nanobot_home / "config.json").write_text(json.dumps({"local": {"main": {"path": str(mine)}}}))
    app = SetupApp(SetupScreen(hardware=FAKE_HARDWARE))
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await ready(app)
        await pilot.press("enter")
        assert f"your own model file, kept: {mine}" in shown(screen, "#why-main")
        await screen._go("config")  # the download and the server test are not the point here
        await pilot.pause()
        summary = shown(screen, "#config-summary")
    main_line = summary.splitlines()[0]
    assert main_line == f"main   your own model file, kept: {mine}", summary


async def test_pushed_from_the_main_app_and_back(nanobot_home: Path) -> None:
    app = NanobotApp(small_config(), workbench=Workbench(small_config(), only_slots=()))
    results: list[Path | None] = []
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: isinstance(app.screen, MainScreen))
        app.push_screen(SetupScreen(hardware=FAKE_HARDWARE), callback=results.append)
        screen = await ready(app)
        await pilot.press("enter")
        assert screen.step == "models"
        await pilot.press("escape", "escape")
        await until(lambda: isinstance(app.screen, MainScreen))
    assert results == [None]


async def test_arrows_pick_another_tier(nanobot_home: Path) -> None:
    app = SetupApp(SetupScreen(hardware=FAKE_HARDWARE))
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await ready(app)
        await pilot.press("up", "up")  # hybrid -> sweet -> potato
        await pilot.press("enter")
        assert screen.plan is not None and screen.plan.tier == "potato"
        assert not screen.plan.tier_detected
        assert screen.plan.slots["main"].recommended_id == "nanbeige4.1-3b"
        await pilot.press("b")
        assert "tier  potato (chosen; detected hybrid)" in shown(screen, "#hardware-facts")


async def test_a_large_download_is_announced_before_it_starts(nanobot_home: Path) -> None:
    big_gpu = dataclasses.replace(
        FAKE_HARDWARE.gpus[0],
        name="FakeGPU 80GB (test fake)",
        vram_total=80 * GIB,
        vram_free=78 * GIB,
    )
    beast = dataclasses.replace(FAKE_HARDWARE, gpus=(big_gpu,))
    app = SetupApp(SetupScreen(hardware=beast))
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await ready(app)
        assert screen.plan is not None and screen.plan.tier == "beast"
        await pilot.press("enter", "enter")
        assert screen.step == "download"
        listing = shown(screen, "#download-list")
        assert "Qwen3-30B-A3B-Instruct-2507 Q8_0: 32.5 GB" in listing
        assert "This is a large download" in listing
        assert screen.download_state == "idle"


async def _to_models(pilot) -> None:  # type: ignore[no-untyped-def]
    await ready(pilot.app)
    await pilot.press("enter")
    await pilot.pause()


def test_models_step_snapshot_120x36(snap_compare, nanobot_home: Path) -> None:
    assert snap_compare(
        SetupApp(SetupScreen(hardware=FAKE_HARDWARE)),
        terminal_size=(120, 36),
        run_before=_to_models,
    )


def test_models_step_snapshot_80x24(snap_compare, nanobot_home: Path) -> None:
    assert snap_compare(
        SetupApp(SetupScreen(hardware=FAKE_HARDWARE)), terminal_size=(80, 24), run_before=_to_models
    )
