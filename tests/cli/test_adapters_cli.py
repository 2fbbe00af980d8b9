"""The adapter registry (the `adapters` table of stats.db) and `nanobot adapters`: a
record round-trips, promoting one turns off the step type's earlier one, only promoted
adapters with a file are served (in id order, which the workbench loads), and the
commands list, turn off, promote again (only what an A/B test backed) and remove (the
file too), with one line for an unknown id. No model server is started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanobot_tui.cli.main import main
from nanobot_tui.config import Config, LocalConfig, SlotConfig
from nanobot_tui.engine.serving.adapter_registry import (
    AdapterRegistry,
    UnknownAdapter,
    registry_path,
    served_adapters,
)
from nanobot_tui.engine.serving.workbench import Workbench

MODEL = "/models/base.gguf"
BETTER = {
    "p_base": 0.4, "base_ci": [0.2, 0.6], "p_adapter": 0.9, "adapter_ci": [0.7, 0.97],
    "diff": 0.5, "diff_ci": [0.25, 0.7], "n": 20, "verdict": "better",
}  # fmt: skip
NOT_BETTER = {**BETTER, "p_adapter": 0.45, "diff": 0.05, "diff_ci": [-0.2, 0.3],
              "verdict": "not better"}  # fmt: skip


def add(registry: AdapterRegistry, tmp_path: Path, name: str, step_type: str = "wordcase",
        model: str = MODEL) -> int:  # fmt: skip
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 60)
    record = registry.add(
        model=model, slot="rlm", step_type=step_type, path=path, size_bytes=64,
        train_examples=40, heldout=10, trained_s=12.5, note="3 epochs",
    )  # fmt: skip
    return record.id


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_record_round_trips_and_one_adapter_per_step_type_is_promoted(tmp_path: Path) -> None:
    with AdapterRegistry() as registry:
        first = add(registry, tmp_path, "a")
        record = registry.get(first)
        assert (record.model, record.slot, record.step_type) == (MODEL, "rlm", "wordcase")
        assert (record.train_examples, record.heldout, record.bytes) == (40, 10, 64)
        assert (record.status, record.ab, record.verdict) == ("candidate", None, None)
        assert record.trained_s == 12.5 and record.note == "3 epochs"

        record = registry.update(first, status="promoted", ab=BETTER)
        assert (record.status, record.verdict, record.ab) == ("promoted", "better", BETTER)
        assert registry.promoted(MODEL, "wordcase") == record

        second = add(registry, tmp_path, "b")
        registry.update(second, status="promoted", ab=BETTER)
        assert registry.get(first).status == "off"
        assert registry.get(first).note == f"replaced by adapter {second}"
        assert registry.promoted(MODEL, "wordcase").id == second  # type: ignore[union-attr]

        other = add(registry, tmp_path, "c", step_type="micro:dates")
        assert [r.id for r in registry.list(step_type="micro:dates")] == [other]
        assert [r.id for r in registry.list(status="off")] == [first]

        live = registry.add_live(second, 7, 10)
        assert (live.live_right, live.live_n) == (7, 10)
        assert registry.add_live(second, 1, 5).live_n == 15

        gone = registry.remove(first)
        assert not gone.path.exists()
        with pytest.raises(UnknownAdapter, match=f"no adapter {first}"):
            registry.get(first)
    # Reopened: what was written is there.
    with AdapterRegistry() as registry:
        assert [r.id for r in registry.list()] == [second, other]


def test_only_promoted_adapters_with_a_file_are_served_in_id_order(tmp_path: Path) -> None:
    assert served_adapters(MODEL) == ()
    assert not registry_path().exists()  # asking created no stats.db
    with AdapterRegistry() as registry:
        ids = [add(registry, tmp_path, name, step_type=name) for name in ("a", "b", "c", "d")]
        for adapter_id in ids[:3]:
            registry.update(adapter_id, status="promoted", ab=BETTER)
        registry.get(ids[1]).path.unlink()  # promoted, but its file is gone
        add(registry, tmp_path, "e", model="/models/other.gguf")
        paths = [registry.get(i).path for i in ids]
    assert served_adapters(MODEL) == (paths[0], paths[2])


def test_a_workbench_server_loads_its_models_promoted_adapters_then_the_extra_ones(
    tmp_path: Path, embedded_model: Path
) -> None:
    slot = SlotConfig(model="smollm2-135m-instruct", context_size=2048)
    config = Config(local=LocalConfig(main=slot))
    with AdapterRegistry() as registry:
        promoted = add(registry, tmp_path, "promoted", model=str(embedded_model))
        registry.update(promoted, status="promoted", ab=BETTER)
        add(registry, tmp_path, "candidate", model=str(embedded_model))
        promoted_path = registry.get(promoted).path
    extra = tmp_path / "under-test.gguf"
    bench = Workbench(config, only_slots=("rlm",), extra_adapters={"rlm": [extra]})
    assert [spec.lora_adapters for spec in bench.specs] == [(promoted_path, extra)]
    assert Workbench(config).specs[0].lora_adapters == (promoted_path,)


def test_adapters_lists_them_as_text_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "adapters")
    assert (code, out.strip()) == (0, "no adapters (nanobot learn trains them)")
    assert not registry_path().exists()
    assert json.loads(run_cli(capsys, "adapters", "--json")[1]) == {"adapters": []}

    with AdapterRegistry() as registry:
        tested = add(registry, tmp_path, "a")
        registry.update(tested, status="promoted", ab=BETTER)
        untested = add(registry, tmp_path, "b", step_type="micro:dates")

    code, out, _ = run_cli(capsys, "adapters")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "STATUS", "STEP", "TYPE"]
    assert lines[1].split()[:3] == [str(tested), "promoted", "wordcase"]
    assert "40 + 10 held out" in lines[1]
    assert "p 0.40 -> 0.90 on 20 held out (diff [+0.25, +0.70]) better" in lines[1]
    assert lines[2].split()[:3] == [str(untested), "candidate", "micro:dates"]
    assert "not tested" in lines[2]

    data = json.loads(run_cli(capsys, "adapters", "--json")[1])
    first = data["adapters"][0]
    assert set(first) == {
        "id", "model", "slot", "step_type", "path", "bytes", "train_examples", "heldout",
        "status", "ab", "created", "trained_s", "note", "live",
    }  # fmt: skip
    assert (first["id"], first["status"], first["ab"], first["live"]) == (
        tested,
        "promoted",
        BETTER,
        {"right": 0, "n": 0},
    )
    assert data["adapters"][1]["ab"] is None


def test_off_on_and_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with AdapterRegistry() as registry:
        backed = add(registry, tmp_path, "a")
        registry.update(backed, status="promoted", ab=BETTER)
        unbacked = add(registry, tmp_path, "b", step_type="micro:dates")
        registry.update(unbacked, ab=NOT_BETTER)
        path = registry.get(unbacked).path

    code, out, _ = run_cli(capsys, "adapters", "off", str(backed))
    assert (code, out.strip()) == (0, f"adapter {backed} (wordcase) is off")
    code, out, _ = run_cli(capsys, "adapters", "on", str(backed), "--json")
    assert code == 0 and json.loads(out)["status"] == "promoted"

    # An A/B test that did not say better does not back `on`: one line, nothing changed.
    code, out, err = run_cli(capsys, "adapters", "on", str(unbacked))
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert f"adapter {unbacked}: its last A/B test said 'not better'" in err

    code, out, _ = run_cli(capsys, "adapters", "rm", str(unbacked))
    assert (code, out.strip()) == (0, f"adapter {unbacked} removed ({path} deleted)")
    assert not path.exists()
    with AdapterRegistry() as registry:
        assert [(r.id, r.status) for r in registry.list()] == [(backed, "promoted")]

    for action in ("off", "on", "rm"):
        code, out, err = run_cli(capsys, "adapters", action, "99")
        assert (code, out) == (2, "")
        assert err == "nanobot: no adapter 99 (nanobot adapters lists them)\n"


def test_an_unknown_id_without_any_adapters_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "adapters", "rm", "3")
    assert (code, out) == (2, "")
    assert err == "nanobot: no adapter 3 (no adapters yet: nanobot learn trains them)\n"
    assert not registry_path().exists()
