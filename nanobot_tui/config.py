"""The config file: schema, loading with one-line errors, atomic writes.

`~/.nanobot/config.json` (NANOBOT_HOME overrides the folder). Keys are camelCase on disk
(`gpuLayers`, `contextSize`, `apiBase`) and snake_case in Python. A missing file means
defaults chosen from the hardware tier; a broken one raises ConfigError, whose message is
one line naming the file, the field and what is wrong.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from nanobot_tui import paths
from nanobot_tui.atomic import write_atomic
from nanobot_tui.errors import UsageError
from nanobot_tui.hardware import Tier
from nanobot_tui.models import catalog

SlotName = Literal["main", "rlm", "memory"]
ProviderName = Literal["local", "openai", "anthropic"]


class _Section(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_assignment=True
    )


class SlotConfig(_Section):
    """One local model slot. With neither `model` nor `path`, the slot uses main's model."""

    model: str | None = None
    path: Path | None = None
    quant: str | None = None
    gpu_layers: int = Field(default=-1, ge=-1, description="-1 offloads every layer that fits")
    context_size: int = Field(default=8192, ge=256, le=1_048_576)
    parallel: int = Field(default=1, ge=1, le=64)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    # Where the slot's requests go: its local server, or a cloud API from `providers`
    # running `remote_model`. A cloud choice without a key stays local (engine.providers).
    provider: ProviderName = "local"
    remote_model: str | None = None

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        if value is not None and not catalog.is_known(value):
            known = ", ".join(sorted(catalog.CATALOG))
            raise ValueError(f"unknown model {value!r} (known: {known})")
        return value

    @property
    def has_own_model(self) -> bool:
        return self.model is not None or self.path is not None


class LocalConfig(_Section):
    main: SlotConfig = Field(default_factory=SlotConfig)
    rlm: SlotConfig = Field(default_factory=SlotConfig)
    memory: SlotConfig = Field(default_factory=SlotConfig)

    def slot(self, name: SlotName) -> SlotConfig:
        return getattr(self, name)


class OpenAIProvider(_Section):
    api_base: str | None = None
    api_key: str | None = Field(default=None, repr=False)


class AnthropicProvider(_Section):
    api_base: str = "https://api.anthropic.com"
    api_key: str | None = Field(default=None, repr=False)


class ProvidersConfig(_Section):
    openai: OpenAIProvider = Field(default_factory=OpenAIProvider)
    anthropic: AnthropicProvider = Field(default_factory=AnthropicProvider)


class ContextConfig(_Section):
    """Search over volumes: with an embedding model, ctx_search fuses vectors with BM25."""

    # A GGUF embedding model nanobot serves itself (llama.cpp --embeddings) ...
    embedding_model: Path | None = None
    # ... its pooling, when the GGUF does not carry one (chat models used for embeddings).
    embedding_pooling: Literal["mean", "cls", "last"] | None = None
    # ... or an OpenAI-compatible endpoint that already serves /v1/embeddings.
    embedding_url: str | None = None
    embedding_api_key: str | None = Field(default=None, repr=False)


class AgentConfig(_Section):
    """The chat agent: its tools, where they may touch files, how long it may go on."""

    # File tools are confined here; None means the folder nanobot was started in.
    workspace: Path | None = None
    # The shell tool runs commands in the workspace; off unless turned on.
    shell: bool = False
    shell_timeout: float = Field(default=30.0, gt=0, le=3600)
    # Small local models are cheap: a tool loop may run for hundreds of rounds.
    max_rounds: int = Field(default=500, ge=1, le=100_000)
    # How tool calls travel: "auto" asks the server whether its chat template renders
    # tools (native) and otherwise lists them in the prompt; "constrained" holds every
    # reply to a JSON schema (for models too small to write a call unaided).
    tool_mode: Literal["auto", "native", "prompted", "constrained"] = "auto"
    # Tool results longer than this are cut (with a note saying so) before the model sees them.
    tool_output_chars: int = Field(default=4000, ge=200, le=1_000_000)


class LearningConfig(_Section):
    """The learning loops (engine.learning): reuse of verified results, budgets from
    history, learned skills. Off: nothing is read from or added to what was learned."""

    enabled: bool = True
    # The app's learning jobs (LoRA adapters): "ask" offers one when a step type has
    # enough new verified examples, "auto" starts it, "off" leaves it to `nanobot learn`.
    distill: Literal["off", "ask", "auto"] = "ask"


class UIConfig(_Section):
    theme: str = "nanobot-dark"
    keymap: dict[str, str] = Field(default_factory=dict)


class TelegramConfig(_Section):
    """The Telegram channel (channels/telegram.py): a bot, long polling."""

    enabled: bool = False
    # NANOBOT_TELEGRAM_TOKEN wins over this (`with_env_secrets`); never logged.
    token: str = Field(default="", repr=False)
    base_url: str = "https://api.telegram.org"
    allow: list[str] = Field(default_factory=list)  # Telegram user ids allowed to command
    poll_seconds: float = Field(default=10.0, gt=0, le=3600)


class EmailConfig(_Section):
    """The email channel (channels/email.py): SMTP out, IMAP in, a thread per run."""

    enabled: bool = False
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    imap_host: str = ""
    imap_port: int = Field(default=993, ge=1, le=65535)
    imap_tls: Literal["tls", "starttls", "none"] = "tls"
    user: str = ""
    # NANOBOT_EMAIL_PASSWORD wins over this (`with_env_secrets`); never logged.
    password: str = Field(default="", repr=False)
    from_addr: str = ""
    allow: list[str] = Field(default_factory=list)  # addresses allowed to command
    poll_seconds: float = Field(default=60.0, gt=0, le=86400)


class TemplateConfig(_Section):
    """A named process a channel may start with `/start NAME`: `nanobot process TASK --on
    ON --recipe RECIPE --detach` with this sampler."""

    task: str
    on: Path
    recipe: str
    sampler: str = "local:rlm"  # or "simulated:P"


class GatewayConfig(_Section):
    """`nanobot gateway`: the channels, how often runs report, how fast chats are sent to."""

    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    email: EmailConfig = Field(default_factory=EmailConfig)
    milestone_every_percent: int = Field(default=10, ge=1, le=100)
    milestone_every_hours: float = Field(default=2.0, gt=0)
    rate_limit_per_minute: int = Field(default=20, ge=1, le=10_000)
    templates: dict[str, TemplateConfig] = Field(default_factory=dict)

    def with_env_secrets(self) -> GatewayConfig:
        """A copy with NANOBOT_TELEGRAM_TOKEN and NANOBOT_EMAIL_PASSWORD, when set, in
        place of the file's token and password (the environment wins)."""
        out = self.model_copy(deep=True)
        token = os.environ.get("NANOBOT_TELEGRAM_TOKEN")
        password = os.environ.get("NANOBOT_EMAIL_PASSWORD")
        if token:
            out.telegram.token = token
        if password:
            out.email.password = password
        return out


class EndpointConfig(_Section):
    """An OpenAI-compatible server the user already runs (llama-server, vLLM on another
    machine), joined by URL to the pool of a `--cluster` run (engine/cluster/pool.py)."""

    url: str
    api_key: str | None = None
    model: str | None = None  # the model its requests name (None: whatever it serves)
    # Requests it takes at once (None: asked of its /slots, else 1).
    slots: int | None = Field(default=None, ge=1, le=1024)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) < 10:
            raise ValueError(f"want an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")


class ClusterConfig(_Section):
    """`--cluster` runs: members of the pool besides the Ray cluster's model hosts."""

    endpoints: list[EndpointConfig] = Field(default_factory=list)


class Config(_Section):
    local: LocalConfig = Field(default_factory=LocalConfig)
    # "embedded" (the xllamacpp wheel), "llama-server" (found on PATH) or a binary's path.
    runtime: str = "embedded"
    providers: ProvidersConfig = Field(default_factory=ProvidersConfig)
    context: ContextConfig = Field(default_factory=ContextConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    learning: LearningConfig = Field(default_factory=LearningConfig)
    ui: UIConfig = Field(default_factory=UIConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    def holds_keys(self) -> bool:
        """Whether any API key is set (every field whose name ends in `api_key`)."""

        def walk(value: object) -> bool:
            if isinstance(value, dict):
                return any((str(k).endswith("api_key") and v) or walk(v) for k, v in value.items())
            return False

        return walk(self.model_dump())

    def to_json(self) -> str:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return json.dumps(data, indent=2) + "\n"


class ConfigError(UsageError):
    """A config file that cannot be used. str() is one line: file, field, problem."""

    def __init__(self, path: Path, problem: str, field: str | None = None) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        where = f"{path}: {field}: " if field else f"{path}: "
        # Keys and values come from the file: escape control characters so the message
        # stays one line whatever the file holds.
        super().__init__((where + problem).encode("unicode_escape").decode("ascii"))


# Per-slot defaults by role, before the tier picks the models. rlm runs voting and tool
# loops, so it gets parallel slots; memory summarises, so a small cold temperature.
_ROLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "main": {"context_size": 8192, "parallel": 1, "temperature": 0.7},
    "rlm": {"context_size": 8192, "parallel": 4, "temperature": 0.3},
    "memory": {"context_size": 4096, "parallel": 1, "temperature": 0.2},
}


def default_config(tier: Tier) -> Config:
    """The config nanobot uses when the file is missing: the tier's recommended models."""
    recommended = catalog.recommended_models(tier)
    slots = {
        name: SlotConfig(model=recommended[name], **_ROLE_DEFAULTS[name])
        for name in ("main", "rlm", "memory")
    }
    return Config(local=LocalConfig(**slots))


def load_config(path: Path | None = None, *, tier: Tier | None = None) -> tuple[Config, bool]:
    """Read the config; returns (config, exists). A missing file gives the defaults of
    `tier`, detected here when not given (only then: detection can take a moment).

    Raises ConfigError for anything unreadable, unparsable or invalid.
    """
    config = load_config_file(path)
    if config is not None:
        return config, True
    if tier is None:
        from nanobot_tui.hardware import detect

        tier = detect().tier
    return default_config(tier), False


def load_config_file(path: Path | None = None) -> Config | None:
    """The config file's settings; None when there is no file, without detecting the
    hardware (the app fills in the tier's defaults after its first frame). Raises
    ConfigError as load_config does."""
    path = path or paths.config_path()
    text = _config_text(path)
    return None if text is None else parse_config(text, path)


def load_context_config(path: Path | None = None) -> ContextConfig:
    """The config's `context` section, for commands that need only it (`nanobot search`):
    its defaults do not depend on the tier, so a missing file detects no hardware."""
    path = path or paths.config_path()
    text = _config_text(path)
    return ContextConfig() if text is None else parse_config(text, path).context


def _config_text(path: Path) -> str | None:
    """The config file's text, None when there is none; ConfigError when unreadable."""
    try:
        return read_config_text(path)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot read: {_reason(exc)}") from None


# A config is a few KB; anything past this is not one (and is never read whole).
MAX_CONFIG_BYTES = 1 << 20

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def read_config_text(path: Path) -> str:
    """The text of a config file, read only if it is a regular file of at most
    MAX_CONFIG_BYTES: a FIFO would block the open and the read, and a link to /dev/zero
    would read until memory ran out. Raises OSError (strerror says why, in words) or
    UnicodeDecodeError."""
    # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a file")
            raise OSError(errno.EINVAL, f"not a regular file ({kind})", str(path))
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_CONFIG_BYTES:
            limit = f"{MAX_CONFIG_BYTES // 2**20} MiB"
            raise OSError(errno.EFBIG, f"too large (a config is at most {limit})", str(path))
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")


def parse_config(text: str, path: Path) -> Config:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ConfigError(path, f"invalid JSON at {where}: {exc.msg}") from None
    except RecursionError:  # Python's json recurses once per level: "[[[[…" thousands deep
        raise ConfigError(path, "invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a JSON object, found {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown setting"
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(path, message, field) from None


def save_config(config: Config, path: Path | None = None) -> Path:
    """Write atomically (temp file, fsync, rename) with mode 0600: it may hold API keys."""
    path = path or paths.config_path()
    paths.ensure(path.parent)
    return write_atomic(path, config.to_json(), mode=0o600, sync_dir=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)
