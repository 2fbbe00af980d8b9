"""Training a LoRA adapter on the CPU, from a training set (dataset.py) to an adapter GGUF
that llama.cpp loads (adapter_gguf.py).

- The base: the slot's GGUF, dequantised once by transformers (`from_pretrained(...,
  gguf_file=...)`: ~1 minute for the embedded 135M model) and saved as a plain
  full-precision checkpoint under NANOBOT_HOME/distill/base/, which reloads in under a
  second.
- The adapter: peft LoRA, rank 8 on q_proj and v_proj by default, trained on 2 CPU
  threads with AdamW at a constant rate. Each example is its chat-formatted prompt (the
  tokenizer's own chat template, the one in the GGUF that llama.cpp applies too) followed
  by its answer; the loss is on the answer's tokens only.
- A job lives in its own folder: `checkpoint.pt` (the LoRA weights, the optimizer, the
  step) is saved every `checkpoint_every` steps and when a stop is asked for; a job
  started again with the same data and settings continues from it. Batches come in a
  fixed order per epoch (seeded), so a resumed job trains on what an unbroken one would.
- The result: the A/B matrices as numpy, written by `adapter_gguf.write_adapter`.

torch, transformers and peft are the optional `learn` extra, imported only here and only
when training starts: without them nanobot works as before and training says in one
line how to get them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import math
import os
import random
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nanobot_tui import atomic, paths
from nanobot_tui.engine.learning.distill.adapter_gguf import AdapterInfo, write_adapter
from nanobot_tui.engine.learning.distill.dataset import TrainingExample
from nanobot_tui.errors import NanobotError, UsageError

__all__ = [
    "LEARN_EXTRA_HINT",
    "LearnExtraMissing",
    "Progress",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "base_checkpoint",
    "job_folder",
    "learn_extra_available",
    "lora_weights",
    "require_learn_extra",
    "train_lora",
]

log = logging.getLogger(__name__)

LEARN_EXTRA_HINT = "pip install 'nanobot-tui[learn]'"
_EXTRA_MODULES = ("torch", "transformers", "peft")
_PEFT_PREFIX = "base_model.model."
_BASE_MARK = "nanobot-base.json"  # written last: a base folder without it is unfinished
_CHECKPOINT = "checkpoint.pt"
_ADAPTER = "adapter.gguf"
_IGNORE = -100  # labels the loss skips (prompt tokens, padding)


class LearnExtraMissing(UsageError):
    """Training needs torch, transformers and peft (the `learn` extra)."""


class TrainingError(NanobotError):
    """A training job that cannot go on; the message says which and why."""


def learn_extra_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in _EXTRA_MODULES)


def require_learn_extra() -> None:
    """LearnExtraMissing, in one line, unless torch, transformers and peft import."""
    missing = [name for name in _EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise LearnExtraMissing(
            f"training an adapter needs the optional 'learn' extra ({', '.join(missing)} "
            f"not installed): {LEARN_EXTRA_HINT}"
        )


def _libs() -> tuple[Any, Any, Any]:
    """torch, transformers and peft, quiet and offline (nothing is fetched from a hub)."""
    require_learn_extra()
    # Both are read when the libraries load, so they are set only while they import: the
    # servers this process starts later must not inherit them.
    import_env = {
        "HF_HUB_OFFLINE": "1",
        # OpenMP's threads spin while they wait for each other: beside a busy llama.cpp
        # server that made a training step ~8x slower here.
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    before = {name: os.environ.get(name) for name in import_env}
    os.environ.update({k: v for k, v in import_env.items() if before[k] is None})
    try:
        torch = importlib.import_module("torch")
        transformers = importlib.import_module("transformers")
        peft = importlib.import_module("peft")
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # peft asks transformers a deprecated question on every model it wraps.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
    return torch, transformers, peft


# --- the base checkpoint ------------------------------------------------------------------


def base_checkpoint(gguf_path: Path, folder: Path | None = None) -> Path:
    """A full-precision Hugging Face checkpoint of `gguf_path` (model and tokenizer),
    made once: NANOBOT_HOME/distill/base/<file stem>-<size>/ unless `folder` is given.
    TrainingError (naming the file) when transformers cannot read the GGUF."""
    if not gguf_path.is_file():
        raise TrainingError(f"base model {gguf_path}: no such file")
    size = gguf_path.stat().st_size
    target = folder or paths.home() / "distill" / "base" / f"{gguf_path.stem}-{size}"
    if (target / _BASE_MARK).is_file():
        return target
    torch, transformers, _ = _libs()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        where, name = str(gguf_path.parent), gguf_path.name
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(where, gguf_file=name)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                where, gguf_file=name, dtype=torch.float32
            )
        except (ValueError, OSError, KeyError, RuntimeError, NotImplementedError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainingError(
                f"base model {gguf_path}: transformers cannot load it ({first})"
            ) from None
        # Dequantised, the weights are plain float32: drop the GGUF quantizer so the saved
        # checkpoint loads as an ordinary model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        mark = {"gguf": str(gguf_path), "size": size, "made": time.time()}
        atomic.write_atomic(work / _BASE_MARK, json.dumps(mark), mode=0o644)
        if target.exists():  # an unfinished folder, or another process finished first
            if (target / _BASE_MARK).is_file():
                return target
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


# --- a training job -------------------------------------------------------------------------


def job_folder(step_type: str) -> Path:
    """Where the training job of a step type keeps its checkpoint and adapter:
    NANOBOT_HOME/distill/jobs/<readable type>-<hash> (a type may hold any character)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", step_type).strip("-.")[:40] or "type"
    digest = hashlib.sha256(step_type.encode()).hexdigest()[:8]
    return paths.home() / "distill" / "jobs" / f"{readable}-{digest}"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    job_dir: Path  # the checkpoint and the adapter go here
    base_gguf: Path  # the model the adapter is for (and whose names it uses)
    base_dir: Path | None = None  # its HF checkpoint; None: base_checkpoint(base_gguf)
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    epochs: int = 3
    batch_size: int = 4
    max_tokens: int = 256  # per example; a longer prompt loses its oldest tokens
    learning_rate: float = 1e-3
    threads: int = 2
    seed: int = 0
    checkpoint_every: int = 25  # steps

    def settings(self) -> dict[str, Any]:
        """What a checkpoint must agree with to be resumed."""
        keep = ("rank", "alpha", "targets", "epochs", "batch_size", "max_tokens")
        return {k: v for k, v in asdict(self).items() if k in keep} | {
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "base_gguf": str(self.base_gguf),
        }


@dataclass(frozen=True, slots=True)
class Progress:
    examples: int
    epoch: int  # 1-based
    epochs: int
    step: int  # steps done, 1-based, over all epochs
    steps: int
    loss: float  # of this step's batch
    elapsed_s: float  # this session's training time
    eta_s: float  # the rest, at this session's pace

    def describe(self) -> str:
        return (
            f"epoch {self.epoch}/{self.epochs}, step {self.step}/{self.steps}, "
            f"loss {self.loss:.3f}, {self.examples} examples, ETA {self.eta_s:.0f} s"
        )


@dataclass(frozen=True, slots=True)
class TrainResult:
    job_dir: Path
    examples: int
    steps: int  # done, over all sessions of the job
    total_steps: int
    stopped: bool  # a stop was asked for; the checkpoint holds the work so far
    resumed_from: int | None  # the checkpoint's step this session started from
    seconds: float  # this session's
    losses: list[float] = field(default_factory=list)  # per step, over all sessions
    adapter: AdapterInfo | None = None  # written when the job finished

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None


ProgressCallback = Callable[[Progress], None]


def _data_key(examples: Sequence[TrainingExample]) -> str:
    text = json.dumps([[e.messages, e.answer] for e in examples], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _encode(
    tokenizer: Any, example: TrainingExample, max_tokens: int
) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer, and labels that are the answer's ids alone."""
    prompt = tokenizer.apply_chat_template(
        example.messages, tokenize=False, add_generation_prompt=True
    )
    reply = {"role": "assistant", "content": example.answer}
    full = tokenizer.apply_chat_template([*example.messages, reply], tokenize=False)
    # The template's end of turn after the answer is learned too (the model must stop).
    tail = full[len(prompt) :] if full.startswith(prompt) else example.answer + tokenizer.eos_token
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(tail.rstrip("\n"), add_special_tokens=False)["input_ids"][:max_tokens]
    prompt_ids = prompt_ids[max(0, len(prompt_ids) + len(answer_ids) - max_tokens) :]
    return prompt_ids + answer_ids, [_IGNORE] * len(prompt_ids) + answer_ids


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _collate(torch: Any, encoded: list[tuple[list[int], list[int]]], pad_id: int) -> Any:
    width = max(len(ids) for ids, _ in encoded)
    ids = [row + [pad_id] * (width - len(row)) for row, _ in encoded]
    labels = [lab + [_IGNORE] * (width - len(lab)) for _, lab in encoded]
    mask = [[1] * len(row) + [0] * (width - len(row)) for row, _ in encoded]
    return (
        torch.tensor(ids, dtype=torch.long),
        torch.tensor(mask, dtype=torch.long),
        torch.tensor(labels, dtype=torch.long),
    )


def lora_weights(model: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The LoRA pairs of a peft model as float32 numpy, by HF module name
    ("model.layers.0.self_attn.q_proj"): A (rank, in) and B (out, rank), as
    `adapter_gguf.write_adapter` takes them."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or "default" not in lora_a:
            continue
        a = lora_a["default"].weight.detach().cpu().float().numpy()
        b = module.lora_B["default"].weight.detach().cpu().float().numpy()
        out[name.removeprefix(_PEFT_PREFIX)] = (np.ascontiguousarray(a), np.ascontiguousarray(b))
    return out


def train_lora(
    config: TrainConfig,
    examples: Sequence[TrainingExample],
    *,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> TrainResult:
    """Train (or go on training) the job's adapter on `examples`; see the module's
    docstring. `stop` is looked at before every step: once set, the work so far is saved
    and the result says `stopped`. LearnExtraMissing without the extra; TrainingError
    for a job that cannot start."""
    if not examples:
        raise TrainingError(f"training job {config.job_dir}: no examples to train on")
    torch, transformers, peft = _libs()
    base_dir = config.base_dir or base_checkpoint(config.base_gguf)
    config.job_dir.mkdir(parents=True, exist_ok=True)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(torch, transformers, peft, config, base_dir, examples, progress, stop)
    finally:
        torch.set_num_threads(threads_before)


def _train(
    torch: Any,
    transformers: Any,
    peft: Any,
    config: TrainConfig,
    base_dir: Path,
    examples: Sequence[TrainingExample],
    progress: ProgressCallback | None,
    stop: threading.Event | None,
) -> TrainResult:
    started = time.monotonic()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base_dir))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    torch.manual_seed(config.seed)  # LoRA's A starts random: the same for every session
    lora = peft.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        target_modules=list(config.targets),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = peft.get_peft_model(model, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    encoded = [_encode(tokenizer, e, config.max_tokens) for e in examples]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    per_epoch = math.ceil(len(encoded) / config.batch_size)
    total = per_epoch * config.epochs

    checkpoint = config.job_dir / _CHECKPOINT
    key = {"data": _data_key(examples), "settings": config.settings()}
    step = 0
    losses: list[float] = []
    resumed_from: int | None = None
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        if state.get("key") == json.dumps(key, sort_keys=True):
            peft.set_peft_model_state_dict(model, state["lora"])
            optimizer.load_state_dict(state["optimizer"])
            step = resumed_from = int(state["step"])
            losses = list(state["losses"])
        else:
            log.info(
                "%s: other data or settings than its checkpoint: starting over", config.job_dir
            )

    def save() -> None:
        state = {
            "key": json.dumps(key, sort_keys=True),
            "step": step,
            "losses": losses,
            "lora": peft.get_peft_model_state_dict(model),
            "optimizer": optimizer.state_dict(),
        }
        tmp = checkpoint.with_name(f".{_CHECKPOINT}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, checkpoint)

    model.train()
    session_start, session_steps, stopped = time.monotonic(), 0, False
    while step < total:
        if stop is not None and stop.is_set():
            stopped = True
            break
        epoch, index = divmod(step, per_epoch)
        batch = _batches(len(encoded), config.batch_size, config.seed, epoch)[index]
        ids, mask, labels = _collate(torch, [encoded[i] for i in batch], pad_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        session_steps += 1
        losses.append(float(loss.detach()))
        if step % config.checkpoint_every == 0 and step < total:
            save()
        if progress is not None:
            elapsed = time.monotonic() - session_start
            eta = elapsed / session_steps * (total - step)
            progress(
                Progress(len(encoded), epoch + 1, config.epochs, step, total, losses[-1],
                         elapsed, eta)
            )  # fmt: skip

    adapter = None
    if stopped:
        save()
    else:
        adapter = write_adapter(
            config.job_dir / _ADAPTER, config.base_gguf, lora_weights(model), alpha=config.alpha
        )
        checkpoint.unlink(missing_ok=True)
    return TrainResult(
        job_dir=config.job_dir,
        examples=len(encoded),
        steps=step,
        total_steps=total,
        stopped=stopped,
        resumed_from=resumed_from,
        seconds=time.monotonic() - started,
        losses=losses,
        adapter=adapter,
    )
