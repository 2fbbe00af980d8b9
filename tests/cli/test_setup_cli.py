"""`nanobot models`, `nanobot models pull` and `nanobot setup --yes`: exit codes, one-line
errors, --json, an end-to-end pull of a real GGUF from FakeHubServer (resumed after a dropped
connection), and setup left working on the embedded model when nothing can be downloaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nanobot_tui import hardware
from nanobot_tui.cli import main as cli
from nanobot_tui.config import load_config
from nanobot_tui.models import catalog
from nanobot_tui.models import download as dl
from nanobot_tui.models.download import part_path
from tests.cli.test_cli import assert_one_error_line, nanobot
from tests.conftest import fake_download, free_port
from tests.fake_hub import FakeHubServer, files_under, hub, sha256_of
from tests.setup_fakes import COPY_ID, FAKE_HARDWARE, copy_on_hub

__all__ = ["copy_on_hub", "hub"]  # fixtures, imported for pytest

EMBEDDED = catalog.EMBEDDED_ID


@pytest.fixture
def fake_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection answers FAKE_HARDWARE (a GPU is out of reach here)."""
    monkeypatch.setattr(hardware, "detect", lambda *a, **k: FAKE_HARDWARE)


def test_models_table_and_json(
    fake_machine: None, nanobot_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"tier hybrid; models in {nanobot_home / 'models'}"
    assert out[1].split() == ["ID", "ROLES", "FOR", "TIER", "QUANT", "SIZE", "PRESENT", "PATH"]
    rows = {line.split()[0]: line.split() for line in out[2:-1]}
    assert set(rows) == set(catalog.CATALOG)
    assert rows["qwen3-30b-a3b-2507"][2:7] == ["main", "Q3_K_M", "14.7", "GB~", "no"]
    assert rows[EMBEDDED][-2:] == ["yes", str(catalog.embedded_model_path())]

    assert cli.main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tier"] == "hybrid" and data["modelsDir"] == str(nanobot_home / "models")
    by_id = {m["id"]: m for m in data["models"]}
    assert by_id["nanbeige4.1-3b"]["recommendedFor"] == ["rlm"]
    assert by_id["nanbeige4.1-3b"]["defaultQuant"] == "Q8_0"
    (embedded,) = by_id[EMBEDDED]["quants"]
    assert embedded["present"] and embedded["sizeBytes"] == 98_362_432 and embedded["sizeExact"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["models", "pull", "gpt-5"], "unknown model 'gpt-5'; known: qwen3-30b-a3b-2507, "),
        (["models", "pull", "qwen3-0.6b", "--quant", "Q9"], "has no quant 'Q9'; known: Q8_0"),
    ],
)
def test_pull_bad_input_exits_2_in_one_line(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(args) == 2
    assert_one_error_line(capsys.readouterr().err, words)


def test_pull_over_10_gb_needs_yes_without_a_terminal(
    hub: FakeHubServer,
    monkeypatch: pytest.MonkeyPatch,
    nanobot_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(sys, "stdin", open("/dev/null"))  # noqa: SIM115 (closed by pytest)
    assert cli.main(["models", "pull", "qwen3-30b-a3b-2507", "--quant", "Q4_K_M"]) == 2
    assert_one_error_line(
        capsys.readouterr().err, "is a 18.6 GB download; pass --yes to download it without asking"
    )
    assert hub.seen == []


@pytest.mark.usefixtures("copy_on_hub")
def test_pull_a_real_gguf_resumes_after_a_dropped_connection(
    hub: FakeHubServer,
    monkeypatch: pytest.MonkeyPatch,
    embedded_model: Path,
    nanobot_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dest = nanobot_home / "models" / COPY_ID / "SmolLM2-copy.Q4_1.gguf"
    hub.drop_after = 40_000_000
    # The pull retries a dropped transfer by itself; with no retries left it keeps the .part.
    original = dl.download

    async def one_attempt(*args, **kwargs):  # type: ignore[no-untyped-def]
        return await original(*args, **{**kwargs, "retries": 0})

    monkeypatch.setattr(dl, "download", one_attempt)
    assert cli.main(["models", "pull", COPY_ID]) == 1
    assert_one_error_line(capsys.readouterr().err, "interrupted after", "run again to resume")
    assert not dest.exists() and part_path(dest).stat().st_size == 40_000_000
    assert catalog.present_quants(catalog.get(COPY_ID), nanobot_home / "models") == []

    assert cli.main(["models", "pull", COPY_ID]) == 0
    assert hub.ranges() == ["bytes=40000000-"]
    assert sha256_of(dest) == sha256_of(embedded_model)
    assert files_under(nanobot_home / "models") == [f"{COPY_ID}/SmolLM2-copy.Q4_1.gguf"]
    assert capsys.readouterr().out == f"downloaded {COPY_ID} Q4_1: {dest} (98.4 MB)\n"

    assert cli.main(["models", "pull", COPY_ID]) == 0
    assert "is already present" in capsys.readouterr().out


def test_pull_offline_is_one_clear_line(
    nanobot_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    result = nanobot(nanobot_home, "models", "pull", "qwen3-0.6b", "--quant", "Q4_K_M")
    assert result.returncode == 1
    assert_one_error_line(
        result.stderr, "cannot reach 127.0.0.1: ", "; check the connection or set HF_ENDPOINT"
    )


@pytest.mark.model
def test_setup_offline_leaves_a_working_config_on_the_embedded_model(
    nanobot_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nanobot_home.mkdir()
    config_path = nanobot_home / "config.json"
    config_path.write_text('{"ui": {"theme": "nord"}}\n')
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    result = nanobot(nanobot_home, "setup", "--yes", "--tier", "potato", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "tier  potato (chosen; detected " in out or "tier  potato (detected)" in out
    assert "cannot reach 127.0.0.1: " in out
    assert "test   main+rlm+memory: SmolLM2-135M-Instruct answered " in out
    assert f"replacing {config_path}:" in out and '-{"ui": {"theme": "nord"}}' in out
    assert "note: main, rlm, memory run on the embedded model" in out
    config, exists = load_config(config_path)
    assert exists and config.ui.theme == "nord"
    assert {config.local.slot(n).model for n in ("main", "rlm", "memory")} == {EMBEDDED}


@pytest.mark.model
@pytest.mark.usefixtures("copy_on_hub")
def test_setup_yes_json_downloads_tests_and_writes(
    fake_machine: None,
    hub: FakeHubServer,
    monkeypatch: pytest.MonkeyPatch,
    embedded_model: Path,
    nanobot_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    picks = {"main": COPY_ID, "rlm": COPY_ID, "memory": EMBEDDED}
    monkeypatch.setattr(catalog, "recommended_models", lambda tier: dict(picks))

    assert cli.main(["setup", "--yes", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["tier"] == "hybrid"
    assert data["downloads"] == [
        {
            "model": COPY_ID,
            "quant": "Q4_1",
            "ok": True,
            "path": str(nanobot_home / "models" / COPY_ID / "SmolLM2-copy.Q4_1.gguf"),
        }
    ]
    assert {name: slot["model"] for name, slot in data["slots"].items()} == picks
    tests = sorted((t["slots"], t["ok"]) for t in data["serverTests"])
    assert tests == [(["main", "rlm"], True), (["memory"], True)]
    assert data["config"] == {
        "path": str(nanobot_home / "config.json"),
        "replaced": False,
        "diff": "",
    }
    config, _ = load_config(nanobot_home / "config.json")
    assert (config.local.main.model, config.local.main.quant) == (COPY_ID, "Q4_1")
    assert config.local.memory.model == EMBEDDED


@pytest.mark.model
def test_setup_falls_back_when_a_server_fails_its_test(
    fake_machine: None,
    monkeypatch: pytest.MonkeyPatch,
    embedded_model: Path,
    nanobot_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Memory's model is on disk but cut short: its server cannot load it, so the slot
    moves to the embedded model and the test runs again before anything is written."""
    fake_download(nanobot_home / "models", "qwen3-0.6b", "Q8_0", embedded_model, size=5_000_000)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # offline otherwise
    assert cli.main(["setup", "--yes", "--tier", "potato"]) == 0
    out = capsys.readouterr().out
    assert "memory Qwen3-0.6B Q8_0, 5.0 MB (present)" in out
    assert "test   memory: Qwen3-0.6B failed: " in out
    assert "memory: the embedded model instead; testing again" in out
    assert "test   main+rlm+memory: SmolLM2-135M-Instruct answered " in out
    config, _ = load_config(nanobot_home / "config.json")
    assert config.local.memory.model == EMBEDDED


@pytest.mark.model
@pytest.mark.timeout(300)  # two servers tested: slow only when other jobs share the cores
@pytest.mark.usefixtures("copy_on_hub")
def test_setup_yes_keeps_a_slots_own_model_file(
    fake_machine: None,
    monkeypatch: pytest.MonkeyPatch,
    embedded_model: Path,
    nanobot_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """main runs the user's own GGUF (`path`): setup keeps it, says so, and fills only the
    other slots from the catalog (downloaded from the FAKE hub)."""
    # rlm and memory share one server: two servers to test, as in the other setup tests.
    picks = {"main": COPY_ID, "rlm": COPY_ID, "memory": COPY_ID}
    monkeypatch.setattr(catalog, "recommended_models", lambda tier: dict(picks))
    mine = tmp_path / "my models" / "mine.gguf"
    mine.parent.mkdir()
    mine.write_bytes(embedded_model.read_bytes())
    nanobot_home.mkdir()
    config_path = nanobot_home / "config.json"
    config_path.write_text(json.dumps({"local": {"main": {"path": str(mine)}}}))
    assert cli.main(["setup", "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"main   your own model file, kept: {mine}" in out
    config, _ = load_config(config_path)
    assert config.local.main.path == mine and config.local.main.model is None
    assert config.local.rlm.model == COPY_ID and config.local.memory.model == COPY_ID


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["setup"], "setup asks questions and needs a terminal; pass --yes"),
        (["setup", "--json"], "setup --json asks no questions: add --yes"),
    ],
)
def test_setup_without_yes_and_without_a_terminal(
    args: list[str], words: str, nanobot_home: Path
) -> None:
    result = nanobot(nanobot_home, *args)
    assert result.returncode == 2
    assert_one_error_line(result.stderr, words)
    assert not (nanobot_home / "config.json").exists()


def test_help_stays_light_and_the_setup_engine_never_imports_textual() -> None:
    code = (
        "import sys\n"
        "from nanobot_tui.cli import main as cli\n"
        "cli.build_parser()\n"
        "heavy = ['textual', 'httpx', 'nanobot_tui.models.download', 'nanobot_tui.setup.plan']\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "import nanobot_tui.models.download, nanobot_tui.setup.plan, nanobot_tui.cli.setup\n"
        "print(loaded, any(m == 'textual' or m.startswith('textual.') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] False"
