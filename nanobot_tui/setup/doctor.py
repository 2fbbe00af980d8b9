"""`nanobot doctor`: what nanobot sees and whether it can run, as text or JSON.

Problems make the exit status 1 (an invalid config, no runtime, a slot with no model at
all, a model file that is no readable GGUF, a configured model that will not fit);
warnings do not (a recommended model not yet downloaded, so the slot falls back to
another).

Channels: one line per channel the gateway's config enables, each checked here with a
short timeout and in parallel: Telegram's getMe on the configured Bot API base URL,
email's SMTP EHLO (and login) and IMAP login; the browser view has nothing to reach, so
its line says where `nanobot web` binds. An unreachable channel is a warning (the
gateway restarts it until it answers). Tokens and passwords are never printed: an
error's text has them replaced by ***.
"""

from __future__ import annotations

import contextlib
import json
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanobot_tui import __version__, paths
from nanobot_tui.config import (
    Config,
    ConfigError,
    EmailConfig,
    GatewayConfig,
    TelegramConfig,
    default_config,
    load_config,
)
from nanobot_tui.engine.serving.slots import SLOT_NAMES, ResolvedSlot, plan_servers, resolve_slots
from nanobot_tui.hardware import HardwareInfo, detect
from nanobot_tui.models import catalog, sizing
from nanobot_tui.units import human_bytes


@dataclass
class DoctorReport:
    data: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> str:
        out = {**self.data, "ok": self.ok, "problems": self.problems, "warnings": self.warnings}
        return json.dumps(out, indent=2)


def memory_budget(hardware: HardwareInfo, gpu_layers: int) -> tuple[int, str]:
    """The memory a slot's model will live in: GPU VRAM when offloading, else free RAM."""
    if gpu_layers != 0 and hardware.unified_memory:
        return int(hardware.vram_gb * 2**30), "unified memory"
    if gpu_layers != 0 and hardware.gpus:
        gpu = max(hardware.gpus, key=lambda g: g.vram_total)
        return gpu.vram_free, f"GPU{gpu.index} free VRAM"
    return hardware.ram_available, "available RAM"


def _slot_report(
    slot: ResolvedSlot,
    config: Config,
    config_exists: bool,
    hardware: HardwareInfo,
    report: DoctorReport,
) -> dict[str, Any]:
    wanted = config.local.slot(slot.name)
    budget, budget_kind = memory_budget(hardware, slot.gpu_layers)
    n_ctx = slot.context_size * slot.parallel
    entry: dict[str, Any] = {
        "wanted": slot.wanted,
        "model": slot.model_id,
        "displayName": slot.display_name,
        "path": str(slot.path) if slot.path else None,
        "present": bool(slot.path and slot.path.is_file()),
        "quant": slot.quant,
        "contextSize": slot.context_size,
        "parallel": slot.parallel,
        "gpuLayers": slot.gpu_layers,
        "note": slot.note,
        "budget": budget,
        "budgetKind": budget_kind,
    }
    if slot.path is None:
        report.problems.append(f"slot {slot.name}: {slot.note}")
        return entry
    if slot.note:
        # Falling back from the tier's defaults is the plan before `nanobot setup` has
        # downloaded them (the config may name them already: setup writes them); falling
        # back from a model of the user's own choice is a problem to fix.
        recommended = catalog.recommended_models(hardware.tier).get(slot.name)
        chosen = config_exists and (wanted.path is not None or wanted.model != recommended)
        (report.problems if chosen else report.warnings).append(f"slot {slot.name}: {slot.note}")
    if slot.model_id == "custom":
        # A file named by `path` gets the same GGUF check as a catalog model's.
        try:
            sizing.read_gguf_facts(slot.path)
        except sizing.GgufError as exc:
            report.problems.append(f"slot {slot.name}: {exc}")
    else:
        model = catalog.get(slot.model_id)
        quant = next(q for q in model.quants if q.name == slot.quant)
        try:
            need = sizing.estimate_bytes(model, quant, n_ctx, slot.path)
        except sizing.GgufError as exc:
            report.problems.append(f"slot {slot.name}: {exc}")
            return entry
        entry["estimate"] = need
        entry["fits"] = need <= budget * sizing.FIT_FRACTION
        if not entry["fits"]:
            # Too big for the tier's own defaults is advice; too big for what the user
            # configured is a problem to fix.
            (report.problems if config_exists else report.warnings).append(
                f"slot {slot.name}: {model.name} {quant.name} needs about {human_bytes(need)}, "
                f"more than {sizing.FIT_FRACTION:.0%} of {budget_kind} ({human_bytes(budget)})"
            )
    if wanted.model is not None:
        choice = sizing.choose_quant(catalog.get(wanted.model), n_ctx, budget, paths.models_dir())
        entry["recommendedQuant"] = choice.quant.name if choice else None
        entry["recommendedReason"] = choice.reason if choice else "no quant fits this machine"
    return entry


def _ports() -> dict[str, Any]:
    running = []
    for pid_file in sorted(paths.run_dir().glob("servers-*.json")):
        try:
            record = json.loads(pid_file.read_text())
            running += [{"pid": s["pid"], "port": s["port"]} for s in record["servers"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
        can_bind = True
    except OSError:
        can_bind = False
    return {"host": "127.0.0.1", "canBindFreePort": can_bind, "running": running}


def _check_key_file_mode(path: Path, report: DoctorReport) -> None:
    """A config holding API keys that others may read (a user-made 0644 file): say so.
    nanobot writes it 0600 itself, and any save of the config makes it 0600."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        report.warnings.append(
            f"{path} holds API keys and is readable by others (mode {mode:04o}): chmod 600 {path}"
        )


CHANNEL_TIMEOUT_S = 5.0  # each connection of a channel check
# Where `nanobot web` binds unless told otherwise (cli/web.py's defaults).
WEB_BIND = "127.0.0.1:8765"


def _one_line(exc: BaseException, secrets: list[str]) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def check_telegram(config: TelegramConfig, timeout: float = CHANNEL_TIMEOUT_S) -> tuple[bool, str]:
    """getMe on the configured Bot API: (reachable, one line)."""
    import httpx

    base = config.base_url.rstrip("/")
    if not config.token:
        return (
            False,
            "telegram: no bot token (set gateway.telegram.token or NANOBOT_TELEGRAM_TOKEN)",
        )
    secrets = [config.token]
    try:
        answer = httpx.post(f"{base}/bot{config.token}/getMe", timeout=timeout)
        body = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        return False, f"telegram: getMe at {base} failed: {_one_line(exc, secrets)}"
    if not isinstance(body, dict) or not body.get("ok"):
        why = body.get("description") if isinstance(body, dict) else None
        detail = _one_line(Exception(why or f"HTTP {answer.status_code}"), secrets)
        return False, f"telegram: getMe at {base} refused: {detail}"
    result = body.get("result")
    name = result.get("username") if isinstance(result, dict) else None
    return True, f"telegram: reachable at {base} as @{name or '?'}"


def check_email(config: EmailConfig, timeout: float = CHANNEL_TIMEOUT_S) -> tuple[bool, str]:
    """SMTP EHLO (and login when a user is set), IMAP login: (both fine, one line)."""
    import imaplib
    import smtplib
    import ssl

    secrets = [config.password] if config.password else []
    parts: list[str] = []
    ok = True
    smtp_where = f"{config.smtp_host}:{config.smtp_port}"
    if not config.smtp_host:
        ok = False
        parts.append("no SMTP server (set gateway.email.smtpHost)")
    else:
        try:
            smtp: smtplib.SMTP
            if config.smtp_tls == "tls":
                smtp = smtplib.SMTP_SSL(config.smtp_host, config.smtp_port, timeout=timeout,
                                        context=ssl.create_default_context())  # fmt: skip
            else:
                smtp = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=timeout)
            with smtp:
                smtp.ehlo()
                if config.smtp_tls == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if config.user:
                    smtp.login(config.user, config.password)
            parts.append(f"SMTP {smtp_where} ok" + (" (logged in)" if config.user else ""))
        except (smtplib.SMTPException, OSError) as exc:
            ok = False
            parts.append(f"SMTP {smtp_where} failed: {_one_line(exc, secrets)}")
    imap_where = f"{config.imap_host}:{config.imap_port}"
    if not config.imap_host:
        ok = False
        parts.append("no IMAP server (set gateway.email.imapHost)")
    else:
        try:
            imap: imaplib.IMAP4
            if config.imap_tls == "tls":
                imap = imaplib.IMAP4_SSL(config.imap_host, config.imap_port, timeout=timeout,
                                         ssl_context=ssl.create_default_context())  # fmt: skip
            else:
                imap = imaplib.IMAP4(config.imap_host, config.imap_port, timeout=timeout)
            try:
                if config.imap_tls == "starttls":
                    imap.starttls(ssl.create_default_context())
                imap.login(config.user, config.password)
            finally:
                with contextlib.suppress(OSError, imaplib.IMAP4.error):
                    imap.logout()
            parts.append(f"IMAP {imap_where} ok (logged in)")
        except (imaplib.IMAP4.error, OSError) as exc:
            ok = False
            parts.append(f"IMAP {imap_where} failed: {_one_line(exc, secrets)}")
    return ok, "email: " + "; ".join(parts)


def check_channels(
    gateway: GatewayConfig, timeout: float = CHANNEL_TIMEOUT_S
) -> dict[str, dict[str, Any]]:
    """{channel: {"ok", "line"}} for each enabled channel (checked in parallel), and the
    browser view's bind address; secrets from the environment as the gateway takes them."""
    from concurrent.futures import ThreadPoolExecutor

    config = gateway.with_env_secrets()
    checks = {}
    if config.telegram.enabled:
        checks["telegram"] = lambda: check_telegram(config.telegram, timeout)
    if config.email.enabled:
        checks["email"] = lambda: check_email(config.email, timeout)
    out: dict[str, dict[str, Any]] = {}
    if checks:
        with ThreadPoolExecutor(len(checks)) as pool:
            futures = {name: pool.submit(check) for name, check in checks.items()}
            for name, future in futures.items():
                ok, line = future.result()
                out[name] = {"ok": ok, "line": line}
    out["web"] = {
        "ok": True,
        "line": f"web: nothing to reach; `nanobot web` serves on {WEB_BIND} when started "
        "(--host, --port), with a token in its URL",
    }
    return out


def build_report(
    *, hardware: HardwareInfo | None = None, config_path: Path | None = None
) -> DoctorReport:
    from nanobot_tui.engine.runs.prune import data_usage
    from nanobot_tui.engine.serving.manager import ServerStartError, resolve_runtime
    from nanobot_tui.engine.serving.providers import resolve_providers

    report = DoctorReport()
    hardware = hardware or detect()
    config_path = config_path or paths.config_path()
    report.data["version"] = __version__
    report.data["home"] = str(paths.home())
    report.data["hardware"] = hardware.to_dict()
    report.data["tier"] = {"name": str(hardware.tier), "why": hardware.tier_rule.description}

    exists = False
    try:
        config, exists = load_config(config_path, tier=hardware.tier)
        report.data["config"] = {"path": str(config_path), "exists": exists, "valid": True}
        if not exists:
            report.warnings.append(
                f"no config at {config_path}: using the {hardware.tier} tier's defaults"
            )
        elif config.holds_keys():
            _check_key_file_mode(config_path, report)
    except ConfigError as exc:
        report.data["config"] = {
            "path": str(config_path),
            "exists": True,
            "valid": False,
            "error": str(exc),
        }
        report.problems.append(str(exc))
        config = default_config(hardware.tier)

    try:
        runtime = resolve_runtime(config.runtime)
        report.data["runtime"] = {
            "setting": config.runtime,
            "kind": runtime.kind,
            "version": runtime.version,
            "command": list(runtime.command),
        }
    except ServerStartError as exc:
        report.data["runtime"] = {"setting": config.runtime, "error": str(exc)}
        report.problems.append(str(exc))

    resolved = resolve_slots(config, paths.models_dir())
    choices = resolve_providers(config)
    report.data["slots"] = {}
    for name in SLOT_NAMES:
        choice = choices[name]
        if choice.is_cloud:
            # A cloud slot needs no local model; the key itself is never shown.
            report.data["slots"][name] = {
                "provider": choice.provider,
                "model": choice.model,
                "displayName": choice.label,
                "apiBase": choice.api_base,
                "keyFrom": choice.key_from,
            }
            resolved.pop(name)
            continue
        entry = _slot_report(resolved[name], config, exists, hardware, report)
        entry["provider"] = "local"
        if choice.note:  # asked for a cloud provider it cannot use: local is the fallback
            entry["providerNote"] = choice.note
            report.warnings.append(f"slot {name}: {choice.note}")
        report.data["slots"][name] = entry
    report.data["servers"] = [
        {
            "slots": list(spec.slots),
            "model": spec.display_name,
            "contextSize": spec.context_size,
            "parallel": spec.parallel,
        }
        for spec in plan_servers(resolved)
    ]
    report.data["channels"] = check_channels(config.gateway)
    for entry in report.data["channels"].values():
        if not entry["ok"]:
            report.warnings.append(entry["line"])
    report.data["ports"] = _ports()
    report.data["dataUsage"] = data_usage()
    if not report.data["ports"]["canBindFreePort"]:
        report.problems.append("cannot bind a free port on 127.0.0.1")
    return report


def format_report(report: DoctorReport) -> str:
    d = report.data
    hw = d["hardware"]
    lines = [f"nanobot {d['version']} · home {d['home']}", "", "Hardware"]
    cpu = hw["cpu"]
    lines.append(
        f"  CPU      {cpu['model']} ({cpu['physical_cores']} cores, {cpu['logical_cores']} threads)"
    )
    lines.append(
        f"  RAM      {human_bytes(hw['ram_total'])} total, "
        f"{human_bytes(hw['ram_available'])} available"
    )
    for gpu in hw["gpus"]:
        lines.append(
            f"  GPU{gpu['index']}     {gpu['name']}: {human_bytes(gpu['vram_total'])} VRAM, "
            f"{human_bytes(gpu['vram_free'])} free (via {gpu['source']})"
        )
    if not hw["gpus"]:
        lines.append(f"  GPU      none ({'; '.join(hw['notes'])})")
    lines.append(f"  Tier     {d['tier']['name']}: {d['tier']['why']}")
    cfg = d["config"]
    state = "valid" if cfg["valid"] else "INVALID"
    lines += [
        "",
        "Config",
        f"  {cfg['path']} ({'exists' if cfg['exists'] else 'missing'}, {state})",
    ]
    rt = d["runtime"]
    lines += ["", "Runtime"]
    if "error" in rt:
        lines.append(f"  {rt['setting']}: {rt['error']}")
    else:
        lines.append(f"  {rt['kind']}: {rt['version']}")
    lines += ["", "Slots"]
    for name, slot in d["slots"].items():
        if slot["provider"] != "local":
            key = "no key" if slot["keyFrom"] == "none" else f"key from {slot['keyFrom']}"
            lines.append(f"  {name:<7}  {slot['displayName']} · {slot['apiBase']} · {key}")
            continue
        status = "present" if slot["present"] else "missing"
        quant = f" {slot['quant']}" if slot["quant"] else ""
        lines.append(
            f"  {name:<7}  {slot['displayName']}{quant} ({status}) · ctx {slot['contextSize']}"
            f" × {slot['parallel']}"
        )
        if slot.get("estimate") is not None:
            lines.append(
                f"           needs ~{human_bytes(slot['estimate'])} of {slot['budgetKind']} "
                f"({human_bytes(slot['budget'])})"
            )
        if slot.get("recommendedReason"):
            lines.append(f"           {slot['wanted']} here: {slot['recommendedReason']}")
        if slot.get("providerNote"):
            lines.append(f"           {slot['providerNote']}")
    lines += ["", "Servers (started on free 127.0.0.1 ports)"]
    for server in d["servers"]:
        lines.append(
            f"  {'+'.join(server['slots']):<18} {server['model']} · ctx {server['contextSize']}"
            f" · {server['parallel']} parallel"
        )
    for running in d["ports"]["running"]:
        lines.append(f"  running now: pid {running['pid']} on port {running['port']}")
    lines += ["", "Channels (nanobot gateway)"]
    if set(d["channels"]) == {"web"}:
        lines.append(
            "  none enabled: gateway.telegram.enabled, gateway.email.enabled in the config"
        )
    for channel in d["channels"].values():
        lines.append(f"  {'ok  ' if channel['ok'] else 'FAIL'} {channel['line']}")
    lines += ["", "Data (nanobot runs prune gives space back)"]
    for name, folder in d["dataUsage"].items():
        lines.append(f"  {name:<9}{human_bytes(folder['bytes']):>10}  {folder['path']}")
    if report.warnings:
        lines += ["", "Warnings", *(f"  - {w}" for w in report.warnings)]
    if report.problems:
        lines += ["", "Problems", *(f"  - {p}" for p in report.problems)]
    lines += ["", "All is well." if report.ok else f"{len(report.problems)} problem(s)."]
    return "\n".join(lines)
