"""LoRA training on the CPU (train.py) on the embedded SmolLM2-135M, dequantised from its
GGUF once per session: a few steps on 8 examples change the adapter and lower the loss;
the exported A/B pairs have the shapes the adapter writer takes and land in the GGUF as
it writes them; a stopped job resumes from its checkpoint and ends where an unbroken one
does; the loss covers the answer's tokens only. Without torch every import still works
and training says in one line how to get it. On the embedded llama.cpp host, an adapter
exported from peft changes the output exactly as it does in transformers (the q/k row
order is right), and one written without that order does not."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from nanobot_tui.engine.learning.distill.adapter_gguf import (
    read_adapter_info,
    read_adapter_tensors,
    read_base_model,
    write_adapter,
)
from nanobot_tui.engine.learning.distill.dataset import TrainingExample
from nanobot_tui.engine.learning.distill.train import (
    LEARN_EXTRA_HINT,
    LearnExtraMissing,
    Progress,
    TrainConfig,
    TrainingError,
    base_checkpoint,
    job_folder,
    learn_extra_available,
    lora_weights,
    train_lora,
)
from nanobot_tui.engine.serving.lora import lora_fields
from nanobot_tui.engine.serving.manager import ServerManager, resolve_runtime
from nanobot_tui.engine.serving.slots import ServerSpec
from nanobot_tui.engine.voting.domains.wordcase import VOCABULARY

needs_extra = pytest.mark.skipif(
    not learn_extra_available(), reason="the 'learn' extra (torch) is not installed"
)
WORDS = VOCABULARY[:8]
SYSTEM = "Rewrite the word in upper case. Reply with one line: answer = WORD"


def examples() -> list[TrainingExample]:
    # Short prompts keep each step to a fraction of a second on two cores.
    return [
        TrainingExample(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": word}],
            f"answer = {word.upper()}",
            "truth",
            "example",
            0.0,
        )
        for word in WORDS
    ]


@pytest.fixture(scope="session")
def base_dir(embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not learn_extra_available():
        pytest.skip("the 'learn' extra (torch) is not installed")
    return base_checkpoint(embedded_model, tmp_path_factory.mktemp("distill") / "base")


def config(job: Path, embedded_model: Path, base_dir: Path) -> TrainConfig:
    # One thread: the two cores of a test machine are shared with other work.
    return TrainConfig(
        job_dir=job, base_gguf=embedded_model, base_dir=base_dir, epochs=2, batch_size=4,
        max_tokens=64, threads=1,
    )  # fmt: skip


def test_without_the_extra_imports_work_and_training_says_how_to_get_it() -> None:
    # A fresh interpreter where torch, transformers and peft cannot be imported.
    script = (
        "import sys\n"
        "for name in ('torch', 'transformers', 'peft'):\n"
        "    sys.modules[name] = None\n"
        "import nanobot_tui.cli.main, nanobot_tui.engine.learning.distill.train as train\n"
        "import nanobot_tui.engine.learning.distill.dataset\n"
        "from pathlib import Path\n"
        "print(train.learn_extra_available())\n"
        "try:\n"
        "    train.base_checkpoint(Path(sys.argv[1]))\n"
        "except train.LearnExtraMissing as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, __file__],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    lines = out.stdout.splitlines()
    assert lines[0] == "False"
    assert len(lines) == 2 and LEARN_EXTRA_HINT in lines[1]
    assert "torch, transformers, peft not installed" in lines[1]
    assert issubclass(LearnExtraMissing, Exception)


def test_job_folders_are_per_step_type(nanobot_home: Path) -> None:
    first, other = job_folder("micro:dates"), job_folder("micro/dates")
    assert first.parent == nanobot_home / "distill" / "jobs"
    assert first != other and first.name.startswith("micro-dates-")


@needs_extra
@pytest.mark.timeout(300)
def test_the_base_checkpoint_is_plain_float32_and_made_once(
    base_dir: Path, embedded_model: Path
) -> None:
    saved = json.loads((base_dir / "config.json").read_text())
    assert saved["model_type"] == "llama"
    assert "quantization_config" not in saved
    assert (base_dir / "model.safetensors").is_file()
    marker = base_dir / "nanobot-base.json"
    before = marker.stat().st_mtime_ns
    assert base_checkpoint(embedded_model, base_dir) == base_dir
    assert marker.stat().st_mtime_ns == before


@needs_extra
def test_a_file_that_is_not_a_gguf_is_one_line_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_text("not a model")
    with pytest.raises(TrainingError) as caught:
        base_checkpoint(bad, tmp_path / "base")
    assert str(bad) in str(caught.value) and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == [bad]  # no half-made folder left behind


@needs_extra
@pytest.mark.timeout(300)
def test_the_loss_covers_the_answer_tokens_only(base_dir: Path) -> None:
    from transformers import AutoTokenizer

    from nanobot_tui.engine.learning.distill.train import _encode

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    example = examples()[0]
    ids, labels = _encode(tokenizer, example, 256)
    answer = tokenizer.decode([t for t in labels if t != -100])
    assert answer == f"answer = {WORDS[0].upper()}<|im_end|>"
    assert tokenizer.decode(ids).endswith(f"{WORDS[0]}<|im_end|>\n<|im_start|>assistant\n{answer}")
    # Cut to 12 tokens: the answer stays whole, the prompt loses its oldest tokens.
    short_ids, short_labels = _encode(tokenizer, example, 12)
    assert len(short_ids) == 12 and short_ids[-4:] == ids[-4:]
    assert [t for t in short_labels if t != -100] == [t for t in labels if t != -100]


@needs_extra
@pytest.mark.timeout(300)
def test_training_changes_the_adapter_and_exports_the_writers_shapes(
    tmp_path: Path, embedded_model: Path, base_dir: Path
) -> None:
    seen: list[Progress] = []
    result = train_lora(config(tmp_path / "job", embedded_model, base_dir), examples(),
                        progress=seen.append)  # fmt: skip
    assert not result.stopped and result.steps == result.total_steps == 4
    assert [p.step for p in seen] == [1, 2, 3, 4]
    assert [p.epoch for p in seen] == [1, 1, 2, 2]
    assert seen[-1].eta_s == 0 and all(p.examples == 8 for p in seen)
    # The second epoch sees the same examples after two updates: it fits them better.
    assert sum(result.losses[2:]) < sum(result.losses[:2])
    assert not (tmp_path / "job" / "checkpoint.pt").exists()

    base = read_base_model(embedded_model)
    info = result.adapter
    assert info is not None and info == read_adapter_info(tmp_path / "job" / "adapter.gguf")
    assert (info.rank, info.alpha, info.architecture) == (8, 16.0, "llama")
    assert len(info.tensors) == 2 * base.block_count
    pairs = read_adapter_tensors(info.path)
    q_a, q_b = pairs["blk.0.attn_q.weight"]
    v_a, v_b = pairs["blk.0.attn_v.weight"]
    assert q_a.shape == (8, 576) and q_b.shape == (576, 8)
    assert v_a.shape == (8, 576) and v_b.shape == (192, 8)
    # peft starts B at zero: trained, every B has moved.
    assert all(np.abs(b).max() > 0 for _, b in pairs.values())


@needs_extra
@pytest.mark.timeout(300)
def test_a_stopped_job_resumes_from_its_checkpoint_and_ends_like_an_unbroken_one(
    tmp_path: Path, embedded_model: Path, base_dir: Path
) -> None:
    stop = threading.Event()

    def stop_after_two(progress: Progress) -> None:
        if progress.step == 2:
            stop.set()

    job = tmp_path / "broken"
    first = train_lora(config(job, embedded_model, base_dir), examples(),
                       progress=stop_after_two, stop=stop)  # fmt: skip
    assert first.stopped and first.steps == 2 and first.adapter is None
    assert (job / "checkpoint.pt").is_file()

    steps: list[int] = []
    second = train_lora(config(job, embedded_model, base_dir), examples(),
                        progress=lambda p: steps.append(p.step))  # fmt: skip
    assert second.resumed_from == 2 and steps == [3, 4]
    assert second.losses[:2] == first.losses
    assert second.adapter is not None

    unbroken = train_lora(config(tmp_path / "unbroken", embedded_model, base_dir), examples())
    assert unbroken.resumed_from is None
    assert np.allclose(second.losses, unbroken.losses, rtol=1e-5)
    resumed, straight = (read_adapter_tensors(r.adapter.path) for r in (second, unbroken)
                         if r.adapter is not None)  # fmt: skip
    for name, (a, b) in straight.items():
        assert np.allclose(resumed[name][0], a, atol=1e-6)
        assert np.allclose(resumed[name][1], b, atol=1e-6)


@needs_extra
@pytest.mark.model
@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
async def test_llama_cpp_applies_an_exported_adapter_as_transformers_does(
    tmp_path: Path, embedded_model: Path, base_dir: Path
) -> None:
    import peft
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj"]  # q and k are the reordered ones
    config = peft.LoraConfig(r=8, lora_alpha=8, target_modules=targets, lora_dropout=0.0)
    model = peft.get_peft_model(model, config)
    # Strong enough to change the greedy answer, weak enough to keep it language.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, module in model.named_modules():
            if hasattr(module, "lora_B") and "default" in module.lora_B:
                for matrix in (module.lora_A["default"].weight, module.lora_B["default"].weight):
                    matrix.copy_(torch.randn(matrix.shape, generator=generator) * 0.08)

    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Name three colours."},
    ]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def greedy() -> str:
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=16, do_sample=False)
        return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))

    with_adapter = greedy()
    with model.disable_adapter():
        without = greedy()
    assert with_adapter != without

    weights = lora_weights(model)
    right = write_adapter(tmp_path / "right.gguf", embedded_model, weights, alpha=8.0).path

    # The same pairs named by their GGUF tensors: the writer takes them as already in
    # llama.cpp's row order, so q and k go in unreordered (a wrong adapter, the control).
    def gguf_name(module: str) -> str:
        found = re.fullmatch(r"model\.layers\.(\d+)\.self_attn\.([qkv])_proj", module)
        assert found is not None
        return f"blk.{found[1]}.attn_{found[2]}.weight"

    unordered = {gguf_name(module): pair for module, pair in weights.items()}
    wrong = write_adapter(tmp_path / "wrong.gguf", embedded_model, unordered, alpha=8.0).path

    spec = ServerSpec(
        model_path=embedded_model, model_id="smollm2-135m-instruct",
        display_name="SmolLM2-135M-Instruct", slots=("main",), context_size=1024, parallel=1,
        gpu_layers=0, size_bytes=embedded_model.stat().st_size, lora_adapters=(right, wrong),
    )  # fmt: skip
    runtime = resolve_runtime()
    async with (
        ServerManager([spec], runtime, threads=2) as manager,
        httpx.AsyncClient(timeout=120) as http,
    ):

        async def served(scales: dict[int, float]) -> str:
            body = {"messages": messages, "max_tokens": 16, "temperature": 0.0,
                    **lora_fields(scales)}  # fmt: skip
            url = f"{manager.url('main')}/v1/chat/completions"
            reply = await http.post(url, json=body, headers=manager.auth_headers)
            return str(reply.json()["choices"][0]["message"]["content"])

        assert await served({0: 0.0, 1: 0.0}) == without
        assert await served({0: 1.0, 1: 0.0}) == with_adapter
        assert await served({0: 0.0, 1: 1.0}) != with_adapter
