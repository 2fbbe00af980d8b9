"""The config file: round trips, atomic 0600 writes, tier defaults and one-line errors."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from nanobot_tui import atomic, paths
from nanobot_tui.config import (
    Config,
    ConfigError,
    LocalConfig,
    SlotConfig,
    default_config,
    load_config,
    parse_config,
    save_config,
)
from nanobot_tui.hardware import Tier
from nanobot_tui.models import catalog

SECRET = "sk-test-0123456789abcdef"


def full_config() -> Config:
    """A config that sets every section, so a round trip has something to lose."""
    return Config.model_validate(
        {
            "local": {
                "main": {
                    "model": "qwen3-30b-a3b-2507",
                    "quant": "Q4_K_M",
                    "gpuLayers": 20,
                    "contextSize": 16384,
                    "parallel": 2,
                    "temperature": 0.5,
                },
                "rlm": {"path": "/models/custom.gguf", "contextSize": 4096, "parallel": 8},
                "memory": {"model": "qwen3-0.6b", "gpuLayers": 0, "temperature": 0.0},
            },
            "runtime": "/opt/llama/bin/llama-server",
            "providers": {
                "openai": {"apiBase": "http://localhost:9000/v1", "apiKey": SECRET},
                "anthropic": {"apiKey": SECRET + "-a"},
            },
            "ui": {"theme": "nord", "keymap": {"quit": "ctrl+q"}},
        }
    )


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def assert_one_line(exc: ConfigError, *parts: str) -> str:
    message = str(exc)
    assert "\n" not in message and "\r" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# --- round trip and writing ---------------------------------------------------------------


def test_round_trip_keeps_every_value_with_camel_case_on_disk(nanobot_home: Path) -> None:
    original = full_config()
    written = save_config(original)
    assert written == paths.config_path() == nanobot_home / "config.json"

    on_disk = json.loads(written.read_text(encoding="utf-8"))
    main = on_disk["local"]["main"]
    assert main["gpuLayers"] == 20
    assert main["contextSize"] == 16384
    assert on_disk["providers"]["openai"]["apiBase"] == "http://localhost:9000/v1"
    assert on_disk["providers"]["openai"]["apiKey"] == SECRET
    # No snake_case spelling leaks to disk, and unset values (None) are left out.
    assert "gpu_layers" not in written.read_text() and "context_size" not in written.read_text()
    assert "model" not in on_disk["local"]["rlm"]

    loaded, exists = load_config()
    assert exists is True
    assert loaded == original
    assert loaded.local.rlm.path == Path("/models/custom.gguf")
    assert loaded.providers.anthropic.api_key == SECRET + "-a"


def test_save_creates_the_folder_and_writes_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "config.json"
    save_config(Config(), target)
    assert target.parent.is_dir()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_save_tightens_an_existing_world_readable_file(tmp_path: Path) -> None:
    target = write(tmp_path / "config.json", {"runtime": "embedded"})
    target.chmod(0o644)
    save_config(full_config(), target)
    # The API key must not stay readable by others just because the old file was.
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert json.loads(target.read_text())["runtime"] == "/opt/llama/bin/llama-server"


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "config.json"
    save_config(Config(runtime="llama-server"), target)
    before = target.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, failing, boom)  # save_config writes through atomic.py
    with pytest.raises(OSError, match="No space left"):
        save_config(full_config(), target)
    monkeypatch.undo()

    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert load_config(target)[0].runtime == "llama-server"


# --- defaults -----------------------------------------------------------------------------


@pytest.mark.parametrize("tier", [Tier.POTATO, Tier.BEAST])
def test_missing_file_gives_the_tiers_models(tier: Tier, nanobot_home: Path) -> None:
    loaded, exists = load_config(tier=tier)
    assert exists is False
    wanted = catalog.recommended_models(tier)
    assert loaded.local.main.model == wanted["main"]
    assert loaded.local.rlm.model == wanted["rlm"]
    assert loaded.local.memory.model == wanted["memory"]
    assert loaded == default_config(tier)
    # Loading must not create the file (or even NANOBOT_HOME).
    assert not nanobot_home.exists()


def test_tier_defaults_differ_where_the_table_says() -> None:
    assert default_config(Tier.POTATO).local.main.model == "nanbeige4.1-3b"
    assert default_config(Tier.BEAST).local.main.model == "qwen3-30b-a3b-2507"
    # rlm gets parallel request slots for voting; memory a cold temperature.
    rlm = default_config(Tier.POTATO).local.rlm
    assert (rlm.parallel, rlm.temperature) == (4, 0.3)
    assert default_config(Tier.POTATO).local.memory.context_size == 4096


def test_missing_file_without_a_tier_is_potato() -> None:
    loaded, exists = load_config()
    assert exists is False
    assert loaded == default_config(Tier.POTATO)


def test_partial_file_fills_in_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", {"local": {"rlm": {"parallel": 3}}})
    loaded, exists = load_config(path, tier=Tier.BEAST)
    assert exists is True
    assert loaded.local.rlm.parallel == 3
    # A file that exists is taken as written: no tier models are slipped in.
    assert loaded.local.main.model is None
    assert loaded.runtime == "embedded"


# --- one-line errors ----------------------------------------------------------------------


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", '{\n  "runtime": ,\n}')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_one_line(info.value, str(path), "invalid JSON", "line 2 column 14")
    assert info.value.path == path


def test_top_level_array_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", "[1, 2]")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_one_line(info.value, str(path), "expected a JSON object")


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({"local": {"main": {"contextSize": "big"}}}, "local.main.contextSize", "valid integer"),
        ({"local": {"rlm": {"parallel": 0}}}, "local.rlm.parallel", "greater than or equal to 1"),
        ({"local": {"main": {"parallel": 65}}}, "local.main.parallel", "less than or equal to 64"),
        (
            {"local": {"memory": {"temperature": 5}}},
            "local.memory.temperature",
            "less than or equal to 2",
        ),
        ({"local": {"main": {"gpuLayers": -2}}}, "local.main.gpuLayers", "greater than or equal"),
        ({"local": {"main": {"colour": "red"}}}, "local.main.colour", "unknown setting"),
        ({"runtime": ["x"]}, "runtime", "valid string"),
        ({"providers": {"openai": {"api_token": "x"}}}, "providers.openai.api_token", "unknown"),
    ],
)
def test_invalid_value_names_file_field_and_problem(
    tmp_path: Path, data: object, field: str, problem: str
) -> None:
    path = write(tmp_path / "config.json", data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = assert_one_line(info.value, str(path), problem)
    assert f"{path}: {field}: " in message
    assert info.value.field == field
    assert "more problem" not in message


def test_unknown_model_lists_the_known_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", {"local": {"main": {"model": "gpt-5"}}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = assert_one_line(info.value, str(path), "local.main.model", "unknown model 'gpt-5'")
    for model_id in catalog.CATALOG:
        assert model_id in message
    assert "Value error" not in message  # pydantic's prefix is stripped


def test_several_errors_are_counted(tmp_path: Path) -> None:
    data = {"local": {"main": {"parallel": 0, "temperature": 5, "colour": 1}}}
    path = write(tmp_path / "config.json", data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_one_line(info.value, "local.main.parallel", "(and 2 more problems)")

    write(path, {"local": {"main": {"parallel": 0}}, "runtime": 3})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    # Singular for one.
    assert str(info.value).endswith("(and 1 more problem)")


def test_error_stays_one_line_for_a_key_with_a_newline(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", {"local": {"main": {"col\nour": 1}}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_one_line(info.value, str(path), "unknown setting")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file anyway")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", {"runtime": "embedded"})
    path.chmod(0)
    try:
        with pytest.raises(ConfigError) as info:
            load_config(path)
    finally:
        path.chmod(0o600)
    assert_one_line(info.value, str(path), "cannot read", "permission denied")


def test_config_path_that_is_a_folder_cannot_be_read(tmp_path: Path) -> None:
    # The unreadable case that also holds for root.
    path = tmp_path / "config.json"
    path.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_one_line(info.value, str(path), "cannot read", "is a directory")


def test_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(b'{"runtime": "caf\xe9"}')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_one_line(info.value, str(path), "cannot read", "utf-8", "0xe9")


def test_parse_config_is_the_same_check_without_a_file() -> None:
    where = Path("/nowhere/config.json")
    assert parse_config('{"runtime": "llama-server"}', where).runtime == "llama-server"
    with pytest.raises(ConfigError, match=r"^/nowhere/config\.json: ui\.theme: "):
        parse_config('{"ui": {"theme": 1}}', where)


# --- the model objects --------------------------------------------------------------------


def test_slot_without_model_or_path_has_no_own_model() -> None:
    assert SlotConfig().has_own_model is False
    assert SlotConfig(model="qwen3-0.6b").has_own_model is True
    assert SlotConfig(path=Path("/x.gguf")).has_own_model is True
    assert LocalConfig().slot("rlm").has_own_model is False


def test_assignment_is_validated_too() -> None:
    slot = SlotConfig()
    with pytest.raises(ValueError, match="unknown model"):
        slot.model = "not-a-model"
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        slot.parallel = 0


def test_api_keys_stay_out_of_repr() -> None:
    cfg = full_config()
    assert SECRET not in repr(cfg)
    assert SECRET not in str(cfg)
    assert SECRET not in repr(cfg.providers.openai)
    # Still there to be used and saved.
    assert cfg.providers.openai.api_key == SECRET
    assert SECRET in cfg.to_json()


# --- a config.json that is no file, or far too big: refused in one line, never a hang ----


def test_a_fifo_as_config_is_refused_at_once(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: `doctor` hung. Not any more."""
    path = tmp_path / "config.json"
    os.mkfifo(path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not a regular file" in str(info.value) and "\n" not in str(info.value)


def test_a_link_to_dev_zero_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.symlink_to("/dev/zero")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not a regular file" in str(info.value)


def test_a_huge_config_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    with path.open("wb") as fh:
        fh.truncate(2**34)  # 16 GiB, sparse: reading it whole would exhaust memory
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "too large" in str(info.value)


def test_a_link_to_a_real_config_still_works(tmp_path: Path) -> None:
    real = write(tmp_path / "dotfiles" / "nanobot.json", {"ui": {"theme": "nord"}})
    path = tmp_path / "config.json"
    path.symlink_to(real)
    assert load_config(path)[0].ui.theme == "nord"


def test_nanobot_home_is_created_for_its_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "fresh" / "nanobot"
    monkeypatch.setenv("NANOBOT_HOME", str(home))
    paths.ensure(paths.runs_dir())
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(paths.runs_dir().stat().st_mode) == 0o700
    save_config(Config(), paths.config_path())
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
