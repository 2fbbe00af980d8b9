"""`nanobot learn`: without the `learn` extra it says in one line how to install it; with
nothing to learn it says so in one line (or JSON); a named step type with too few
examples and a resume with nothing stopped are one-line errors; training progress is
printed as lines (examples, epoch, loss, ETA), not one per step. No model is started:
the job itself is tested in tests/engine/learning/test_distill_job.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nanobot_tui.cli.learn import _Lines
from nanobot_tui.cli.main import main
from nanobot_tui.config import Config, LocalConfig, SlotConfig, save_config
from nanobot_tui.engine.learning.distill.job import JobEvent
from nanobot_tui.engine.learning.distill.train import (
    LEARN_EXTRA_HINT,
    Progress,
    learn_extra_available,
)
from nanobot_tui.engine.learning.examples import ExampleBank
from nanobot_tui.engine.learning.store import LearningStore, learned_path

needs_extra = pytest.mark.skipif(
    not learn_extra_available(), reason="the 'learn' extra (torch) is not installed"
)


@pytest.fixture
def config(nanobot_home: Path) -> None:
    slot = SlotConfig(model="smollm2-135m-instruct", context_size=2048)
    save_config(Config(local=LocalConfig(main=slot)))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_without_the_extra_learn_says_how_to_install_it(nanobot_home: Path) -> None:
    # A fresh interpreter where torch, transformers and peft cannot be imported.
    script = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'peft'):\n"
        "    sys.modules[name] = None\n"
        "from nanobot_tui.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for argv in (["learn"], ["learn", "--type", "wordcase", "--json"]):
        done = subprocess.run(
            [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("nanobot: training an adapter needs the optional 'learn'")
        assert LEARN_EXTRA_HINT in done.stderr
    assert not learned_path().exists()


@needs_extra
@pytest.mark.usefixtures("config")
def test_nothing_to_learn_is_one_line_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "learn")
    assert (code, err) == (0, "")
    assert out == f"nothing learned: no verified examples in {learned_path()}\n"

    with LearningStore() as store:
        for word in ("cat", "dog", "sun"):
            ExampleBank(store).add("shout", word, word.upper(), verified_by="truth",
                                   model="m", fingerprint="f")  # fmt: skip
    code, out, _ = run_cli(capsys, "learn", "--json")
    data = json.loads(out)
    assert code == 0
    assert set(data) == {"summary", "trained", "promoted", "stopped", "step_types"}
    assert (data["trained"], data["promoted"], data["stopped"]) == (0, 0, False)
    [item] = data["step_types"]
    assert (item["step_type"], item["status"], item["adapter_id"]) == ("shout", "skipped", None)
    assert data["summary"] == f"nothing learned: shout: {item['reason']}"


@needs_extra
@pytest.mark.usefixtures("config")
def test_a_named_type_with_too_few_examples_and_a_resume_of_nothing_are_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "learn", "--type", "shout")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert err.startswith("nanobot: step type 'shout': no verified examples")

    code, out, err = run_cli(capsys, "learn", "--resume")
    assert (code, out) == (2, "")
    assert err.startswith("nanobot: no stopped learning job to resume (in ")
    assert err.count("\n") == 1


def test_training_progress_is_a_line_per_epoch_not_per_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = _Lines()
    for step in range(1, 9):
        progress = Progress(20, (step - 1) // 4 + 1, 2, step, 8, 1.0 / step, step * 1.0, 8 - step)
        lines(JobEvent("wordcase", "train", progress.describe(), train=progress))
    lines(JobEvent("wordcase", "ab", "A/B 1/4", done=1, total=4))
    lines(JobEvent("wordcase", "ab", "A/B 2/4", done=2, total=4))
    lines(JobEvent("wordcase", "ab", "A/B 4/4", done=4, total=4))
    lines(JobEvent("wordcase", "done", "adapter 1 candidate"))
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "learn wordcase: epoch 1/2, step 1/8, loss 1.000, 20 examples, ETA 7 s",
        "learn wordcase: epoch 2/2, step 5/8, loss 0.200, 20 examples, ETA 3 s",
        "learn wordcase: epoch 2/2, step 8/8, loss 0.125, 20 examples, ETA 0 s",
        "learn wordcase: A/B 4/4",
        "learn wordcase: adapter 1 candidate",
    ]


def test_the_ab_test_says_what_it_runs_on_and_ab_steps_must_be_positive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = _Lines()
    lines(JobEvent("wordcase", "ab", "A/B on 120 fresh steps", total=120, on="fresh"))
    assert capsys.readouterr().err == "learn wordcase: A/B on 120 fresh steps\n"
    with pytest.raises(SystemExit) as exited:
        main(["learn", "--ab-steps", "0"])
    assert exited.value.code == 2
    assert "argument --ab-steps: must be at least 1, not 0" in capsys.readouterr().err
