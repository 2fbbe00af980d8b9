"""The setup wizard: hardware and tier → a model per slot → downloads → a quick server test →
the config, written only on the last step.

Keyboard only: Enter goes on, Esc (or b) goes back a step, arrows pick in a list and Tab
moves between lists. Downloads and server tests run in workers and report through
messages; a failed download shows its one-line error and offers a retry (r) or the embedded
model instead (e). The same screen runs inside `SetupApp` (`nanobot setup`) and can be
pushed from the main app; it is dismissed with the written config's path, or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import ContentSwitcher, Header, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from nanobot_tui.hardware import Tier
from nanobot_tui.ui.widgets.footer import Footer
from nanobot_tui.units import format_seconds, human_bytes

if TYPE_CHECKING:
    from nanobot_tui.hardware import HardwareInfo
    from nanobot_tui.models.download import DownloadProgress
    from nanobot_tui.setup.plan import ExistingConfig, ModelOption, ServerCheck, SetupPlan

STEPS = ("hardware", "models", "download", "test", "config")
TITLES = {
    "hardware": "Hardware",
    "models": "Models",
    "download": "Download",
    "test": "Test",
    "config": "Config",
}
TIER_ORDER = (Tier.POTATO, Tier.SWEET, Tier.HYBRID, Tier.POWER, Tier.BEAST)


def step_line(current: str) -> Text:
    """`1 Hardware › 2 Models › …` with the current step marked."""
    text = Text()
    for number, step in enumerate(STEPS, 1):
        if number > 1:
            text.append(" › ", style="dim")
        style = "bold reverse" if step == current else "dim"
        text.append(f" {number} {TITLES[step]} ", style=style)
    return text


def option_prompt(option: ModelOption, recommended: bool) -> Text:
    text = Text(option.label, style="" if option.fits else "dim")
    if recommended:
        text.append("  recommended", style="bold green")
    if option.embedded:
        text.append("  embedded", style="cyan")
    return text


class SetupScreen(Screen["Path | None"]):
    """The wizard. `hardware` and `plan` replace detection and planning (tests); `tier`
    overrides the detected tier."""

    CSS_PATH = "setup.tcss"
    SUB_TITLE = "setup"
    BINDINGS = [
        Binding("enter", "next", "Next", priority=True, id="setup.next"),
        Binding("escape", "back", "Back", id="setup.back"),
        Binding("b", "back", "Back", show=False, id="setup.back_b"),
        Binding("r", "retry", "Retry download", id="setup.retry"),
        Binding("e", "use_embedded", "Use embedded instead", id="setup.embedded"),
    ]

    @dataclass
    class Ready(Message):
        plan: SetupPlan
        existing: ExistingConfig

    @dataclass
    class Downloading(Message):
        option: ModelOption
        progress: DownloadProgress | None

    @dataclass
    class Downloaded(Message):
        option: ModelOption
        error: str | None

    @dataclass
    class Checked(Message):
        """One server's result; None when every server has been tried."""

        check: ServerCheck | None

    def __init__(
        self,
        *,
        hardware: HardwareInfo | None = None,
        plan: SetupPlan | None = None,
        tier: Tier | None = None,
    ) -> None:
        super().__init__()
        self._hardware = hardware
        self._tier = tier
        self.plan: SetupPlan | None = plan
        self.existing: ExistingConfig | None = None
        self.step = "hardware"
        self.ready = False
        # download: idle | running | failed | done; test: idle | running | ok | failed
        self.download_state = "idle"
        self.download_error = ""
        self.failed_option: ModelOption | None = None
        self.test_state = "idle"
        self.checks: list[ServerCheck] = []
        self._tested: str | None = None  # the config JSON the last test ran on
        self.written: Path | None = None
        self._models_shown: SetupPlan | None = None

    # --- layout -------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(step_line(self.step), id="steps")
        with ContentSwitcher(initial="hardware"):
            with VerticalScroll(id="hardware"):
                yield Static("Detecting hardware…", id="hardware-facts")
                yield Static("Tier (↑↓ to choose another)", classes="heading")
                yield OptionList(id="tier-list")
            yield VerticalScroll(id="models")
            with Vertical(id="download"):
                yield Static(id="download-list")
                yield ProgressBar(id="download-bar", show_eta=False)
                yield Static(id="download-status")
                yield Static(id="download-error")
            with VerticalScroll(id="test"):
                yield Static(id="test-results")
            with VerticalScroll(id="config"):
                yield Static(id="config-summary")
                yield Static(id="config-diff")
        yield Static(id="hint")
        yield Footer()

    def on_mount(self) -> None:
        self._prepare()

    @work(thread=True, exclusive=True, group="setup-prepare", exit_on_error=False)
    def _prepare(self) -> None:
        """Detection can take a moment (NVML, nvidia-smi), planning reads GGUF headers."""
        from nanobot_tui.hardware import detect
        from nanobot_tui.setup.plan import build_plan, read_existing

        existing = read_existing()
        plan = self.plan
        if plan is None:
            hardware = self._hardware or detect()
            plan = build_plan(hardware, self._tier, existing=existing.config)
        self.post_message(self.Ready(plan, existing))

    @on(Ready)
    def _ready(self, message: Ready) -> None:
        self.plan, self.existing = message.plan, message.existing
        self._show_facts()
        tiers = self.query_one("#tier-list", OptionList)
        detected = self.plan.hardware.tier
        tiers.clear_options()
        tiers.add_options(
            Option(f"{tier}{'  (detected)' if tier == detected else ''}", id=tier.value)
            for tier in TIER_ORDER
        )
        tiers.highlighted = TIER_ORDER.index(self.plan.tier)
        tiers.focus()
        self.ready = True
        self._show()

    def _show_facts(self) -> None:
        from nanobot_tui.setup.plan import hardware_lines

        assert self.plan is not None and self.existing is not None
        facts = "\n".join(hardware_lines(self.plan.hardware, self.plan.tier))
        if self.existing.error:
            facts += f"\nconfig {self.existing.error}; setup will replace it"
        self.query_one("#hardware-facts", Static).update(Text(facts))

    # --- moving between steps -----------------------------------------------------------

    def _show(self) -> None:
        self.query_one("#steps", Static).update(step_line(self.step))
        self.query_one(ContentSwitcher).current = self.step
        self.query_one("#hint", Static).update(self._hint())
        self.refresh_bindings()

    def _hint(self) -> str:
        if self.step == "hardware":
            return "enter: next · ↑↓ tier · esc: cancel"
        if self.step == "models":
            return "enter: next · ↑↓ pick a model · tab: next slot · esc/b: back"
        if self.step == "download":
            if self.download_state == "failed":
                return "r: retry · e: use the embedded model instead · esc/b: back"
            if self.download_state == "running":
                return "downloading… · esc/b: back (the download resumes later)"
            if self.download_state == "done":
                return "enter: next · esc/b: back"
            return "enter: start the download · esc/b: back"
        if self.step == "test":
            if self.test_state == "failed":
                return "enter: use the embedded model for what failed and test again · esc/b: back"
            if self.test_state == "running":
                return "testing… · esc/b: back"
            return "enter: next · esc/b: back"
        if self.written is not None:
            return "written · enter: close"
        return "enter: write the config · esc/b: back"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in {"retry", "use_embedded"}:
            return self.step == "download" and self.download_state == "failed"
        return True

    async def _go(self, step: str) -> None:
        self.step = step
        if step == "models":
            await self._fill_models()
        elif step == "download":
            self._enter_download()
        elif step == "test":
            self._enter_test()
        elif step == "config":
            self._enter_config()
        self._show()
        if step == "hardware":
            self.query_one("#tier-list", OptionList).focus()
        elif step == "models" and self.focused not in self.query("#models OptionList").nodes:
            self._focus_first_slot()

    async def action_next(self) -> None:
        if not self.ready or self.plan is None:
            return
        if self.step == "hardware":
            self._apply_tier()
            await self._go("models")
        elif self.step == "models":
            await self._go("download")
        elif self.step == "download":
            if self.download_state == "idle":
                self._start_downloads()
            elif self.download_state == "done":
                await self._go("test")
        elif self.step == "test":
            if self.test_state == "ok":
                await self._go("config")
            elif self.test_state == "failed":
                await self._fall_back_failed()
        elif self.step == "config":
            if self.written is None:
                self._write()
            else:
                self.dismiss(self.written)

    async def action_back(self) -> None:
        if self.step == "hardware":
            self.dismiss(None)
            return
        if self.step == "config" and self.written is not None:
            self.dismiss(self.written)
            return
        # Leaving a step stops its work: a download keeps its .part and resumes later.
        self.workers.cancel_group(self, "setup-download")
        self.workers.cancel_group(self, "setup-test")
        if self.download_state == "running":
            self.download_state = "idle"
        if self.test_state == "running":
            self.test_state = "idle"
            self._tested = None
        await self._go(STEPS[STEPS.index(self.step) - 1])

    # --- hardware and models ------------------------------------------------------------

    def _apply_tier(self) -> None:
        from nanobot_tui.setup.plan import build_plan

        assert self.plan is not None and self.existing is not None
        index = self.query_one("#tier-list", OptionList).highlighted
        tier = TIER_ORDER[index] if index is not None else self.plan.tier
        if tier != self.plan.tier:
            self.plan = build_plan(
                self.plan.hardware,
                tier,
                models_dir=self.plan.models_dir,
                existing=self.existing.config,
            )
            self.download_state, self.test_state = "idle", "idle"
            self._show_facts()

    async def _fill_models(self) -> None:
        """One list per slot, built again only when the plan is a new one (another tier)."""
        assert self.plan is not None
        if self._models_shown is self.plan:
            return
        self._models_shown = self.plan
        pane = self.query_one("#models", VerticalScroll)
        await pane.remove_children()
        widgets: list[Widget] = []
        for name, slot in self.plan.slots.items():
            widgets.append(Static(f"{name}", classes="heading"))
            widgets.append(Static(Text(slot.why), id=f"why-{name}", classes="why"))
            options = OptionList(
                *(
                    Option(option_prompt(o, o.model_id == slot.recommended_id), id=o.model_id)
                    for o in slot.options
                ),
                id=f"slot-{name}",
            )
            options.highlighted = slot.chosen
            widgets.append(options)
        widgets.append(Static(id="models-total", classes="heading"))
        await pane.mount_all(widgets)
        self._update_total()

    def _focus_first_slot(self) -> None:
        lists = self.query("#models OptionList")
        if lists:
            # The slot's heading and why sit above its list: keep them in view.
            lists.first().focus(scroll_visible=False)
            self.query_one("#models", VerticalScroll).scroll_home(animate=False)

    @on(OptionList.OptionHighlighted)
    def _picked(self, event: OptionList.OptionHighlighted) -> None:
        list_id = event.option_list.id or ""
        if self.plan is None or not list_id.startswith("slot-"):
            return
        slot = self.plan.slots[list_id.removeprefix("slot-")]  # type: ignore[index]
        if event.option_index != slot.chosen:
            slot.choose(event.option_index)
            self.download_state = "idle" if self.plan.downloads() else "done"
        self.query_one(f"#why-{slot.slot}", Static).update(Text(slot.why))
        self._update_total()

    def _update_total(self) -> None:
        assert self.plan is not None
        downloads = self.plan.downloads()
        text = Text()
        if downloads:
            text.append(
                f"To download: {human_bytes(self.plan.download_bytes())} "
                f"({len(downloads)} file{'s' if len(downloads) > 1 else ''})"
            )
        else:
            text.append("Nothing to download: every chosen model is present.")
        for warning in self.plan.warnings():
            text.append(f"\n{warning}", style="yellow")
        for widget in self.query("#models-total").results(Static):
            widget.update(text)

    # --- downloads ----------------------------------------------------------------------

    def _enter_download(self) -> None:
        from nanobot_tui.models.download import LARGE_DOWNLOAD_BYTES

        assert self.plan is not None
        downloads = self.plan.downloads()
        if self.download_state != "failed":
            self.download_state = "idle" if downloads else "done"
        lines = Text()
        if not downloads:
            lines.append("Nothing to download: every chosen model is present.")
        for option in downloads:
            lines.append(f"• {option.name} {option.quant}: {human_bytes(option.size_bytes)}\n")
        total = self.plan.download_bytes()
        if total > LARGE_DOWNLOAD_BYTES:
            lines.append(
                f"\nThis is a large download ({human_bytes(total)}). Enter starts it; "
                "it can be stopped with Esc and resumes where it stopped.",
                style="bold yellow",
            )
        self.query_one("#download-list", Static).update(lines)
        bar = self.query_one("#download-bar", ProgressBar)
        bar.display = bool(downloads)
        bar.update(total=total or 1, progress=0)
        self.query_one("#download-status", Static).update(
            "" if self.download_state != "done" or not downloads else "All downloaded."
        )
        self.query_one("#download-error", Static).update(self.download_error)

    def _start_downloads(self) -> None:
        self.download_state = "running"
        self.download_error = ""
        self.failed_option = None
        self.query_one("#download-error", Static).update("")
        self._show()
        self._download_all()

    @work(exclusive=True, group="setup-download", exit_on_error=False, description="download")
    async def _download_all(self) -> None:
        from nanobot_tui.models import catalog
        from nanobot_tui.models.download import DownloadError, fetch_model

        assert self.plan is not None
        for option in self.plan.downloads():
            model = catalog.get(option.model_id)

            def report(progress: DownloadProgress, option: ModelOption = option) -> None:
                self.post_message(self.Downloading(option, progress))

            self.post_message(self.Downloading(option, None))
            try:
                await fetch_model(
                    model,
                    model.quant(option.quant),
                    models_dir=self.plan.models_dir,
                    on_progress=report,
                )
            except DownloadError as exc:
                self.post_message(self.Downloaded(option, str(exc)))
                return
            self.post_message(self.Downloaded(option, None))

    @on(Downloading)
    def _downloading(self, message: Downloading) -> None:
        if self.download_state != "running":
            return
        option, progress = message.option, message.progress
        status = self.query_one("#download-status", Static)
        bar = self.query_one("#download-bar", ProgressBar)
        if progress is None:
            status.update(f"{option.name} {option.quant}: connecting…")
            return
        total = progress.total or option.size_bytes
        bar.update(total=total, progress=progress.done)
        eta = format_seconds(progress.eta_s) if progress.eta_s is not None else "–"
        status.update(
            f"{option.name} {option.quant}: {human_bytes(progress.done)} of "
            f"{human_bytes(total)} · {human_bytes(progress.bytes_per_s)}/s · ETA {eta}"
        )

    @on(Downloaded)
    def _downloaded(self, message: Downloaded) -> None:
        assert self.plan is not None
        if message.error is not None:
            self.download_state = "failed"
            self.download_error = message.error
            self.failed_option = message.option
            self.query_one("#download-error", Static).update(Text(message.error))
            self._show()
            return
        self.plan.mark_present(message.option.model_id, message.option.quant)
        if not self.plan.downloads():
            self.download_state = "done"
            self.query_one("#download-status", Static).update("All downloaded.")
            self._show()

    def action_retry(self) -> None:
        self._start_downloads()

    def action_use_embedded(self) -> None:
        assert self.plan is not None
        if self.failed_option is None:
            return
        self.plan.fall_back(self.failed_option.model_id, f"not downloaded ({self.download_error})")
        self.download_error = ""
        self.failed_option = None
        self.download_state = "idle"
        self._enter_download()
        if self.download_state == "idle":
            self._start_downloads()
        self._show()

    # --- the server test ----------------------------------------------------------------

    def _enter_test(self) -> None:
        from nanobot_tui.setup.plan import planned_config

        assert self.plan is not None
        config = planned_config(self.plan, self.existing).to_json()
        if config == self._tested and self.test_state in {"ok", "failed"}:
            return
        self._tested = config
        self.checks = []
        self.test_state = "running"
        self._render_checks()
        self._run_checks()

    @work(exclusive=True, group="setup-test", exit_on_error=False, description="server test")
    async def _run_checks(self) -> None:
        from nanobot_tui.setup.plan import check_servers, planned_config

        assert self.plan is not None
        config = planned_config(self.plan, self.existing)

        def checked(check: ServerCheck) -> None:
            self.post_message(self.Checked(check))

        await check_servers(config, on_check=checked)
        self.post_message(self.Checked(None))

    @on(Checked)
    def _checked(self, message: Checked) -> None:
        if self.test_state != "running":
            return
        if message.check is not None:
            self.checks.append(message.check)
        else:
            self.test_state = "ok" if all(c.ok for c in self.checks) else "failed"
        self._render_checks()
        self._show()

    def _render_checks(self) -> None:
        text = Text("Starting each model server and asking it one short question.\n\n")
        for check in self.checks:
            mark, style = ("✓", "green") if check.ok else ("✗", "bold red")
            text.append(f"{mark} ", style=style)
            text.append(f"{check.line}\n")
        if self.test_state == "running":
            text.append("testing…", style="dim")
        elif self.test_state == "ok":
            text.append("Every server answered.", style="green")
        elif self.test_state == "failed":
            text.append("A server failed its test.", style="bold red")
        self.query_one("#test-results", Static).update(text)

    async def _fall_back_failed(self) -> None:
        assert self.plan is not None
        if not self.plan.fall_back_failed(self.checks):
            self.notify("The embedded model failed too: see `nanobot doctor`.", severity="error")
            return
        self._tested = None
        await self._go("test")

    # --- the config ---------------------------------------------------------------------

    def _enter_config(self) -> None:
        from nanobot_tui.setup.plan import config_diff, planned_config

        assert self.plan is not None and self.existing is not None
        new = planned_config(self.plan, self.existing)
        summary = Text()
        for name, slot in self.plan.slots.items():
            summary.append(f"{name:<7}", style="bold")
            if slot.keeps_path:
                summary.append(f"your own model file, kept: {slot.own_path}\n")
            else:
                summary.append(f"{slot.choice.name} {slot.choice.quant}\n")
            if slot.note:
                summary.append(f"       {slot.note}\n", style="yellow")
        summary.append(f"\nConfig file: {self.existing.path}\n")
        if not self.existing.exists:
            summary.append("A new file:", style="bold")
            body = Text(new.to_json())
        else:
            diff = config_diff(self.existing, new)
            summary.append("Replaces the file; changes:" if diff else "Unchanged.", style="bold")
            body = Text()
            for line in diff.splitlines():
                style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
                body.append(line + "\n", style=style)
        self.query_one("#config-summary", Static).update(summary)
        self.query_one("#config-diff", Static).update(body)

    def _write(self) -> None:
        from nanobot_tui.config import ConfigError
        from nanobot_tui.setup.plan import planned_config, write_config

        assert self.plan is not None and self.existing is not None
        try:
            self.written = write_config(planned_config(self.plan, self.existing), self.existing)
        except (OSError, ConfigError) as exc:
            self.notify(f"cannot write the config: {exc}", severity="error")
            return
        self.query_one("#config-summary", Static).update(
            Text(f"Config written: {self.written}", style="bold green")
        )
        self._show()


class SetupApp(App["Path | None"]):
    """`nanobot setup`: the wizard alone; exits with the written config's path, or None.
    `screen` is the wizard to run (tests pass one with a fake machine)."""

    TITLE = "nanobot"

    def __init__(self, screen: SetupScreen | None = None) -> None:
        super().__init__()
        self._wizard = screen

    def on_mount(self) -> None:
        self.push_screen(self._wizard or SetupScreen(), callback=self.exit)
