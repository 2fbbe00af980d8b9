"""What distillation does to one real-work recipe: p of `fstrings` (old-style `%` and
`str.format` strings to f-strings, truth: flynt's edit) before and after a LoRA adapter,
and what that p means for k_min and for the cost of a million-step run.

1. The corpus: a vendored copy of the `.py` files of this venv's site-packages that hold
   at least one function the recipe wants (flynt changes it) of at most `--max-chars`
   characters (code prompts are long; training and the A/B cap tokens). Its steps are
   the code domain's (engine/work/domain.py, what `nanobot process --recipe fstrings`
   runs): the recipe's prompt (strategy, module, class, signature, the function, the
   instruction), the reply parsed strictly and red-flagged by the recipe, the truth
   flynt's edit, answers compared canonically (`recipes.canonical`, the vote's key).
2. The split by file (a hash of the path): functions of `--fresh-fraction` of the files
   are never trained on; `--train` training examples from the others and `--fresh`
   fresh functions, both drawn seeded.
3. The training examples are the reference's edits: "truth" examples, the form the store
   keeps. The 135M model's own process runs of this recipe are right too rarely (p = 0
   here) to have stored any verified work to learn from.
4. The adapter (train.py, `--train-threads` torch threads, `--epochs`, `--max-tokens`
   per example), written as a llama.cpp adapter GGUF.
5. The A/B test (ab_test.py): one server with the adapter loaded, base (scale 0) against
   adapter (scale 1), interleaved, greedy, on the fresh functions (and `--train-check`
   training ones, to show what it learned); judged by the recipe: a reply is right when
   the code domain's strict parser accepts it and its canonical form is flynt's.
6. The projections, as benchmarks/distill_gain.py makes them (k_min for a 1,048,575-step
   run at 95 % whole-run success, expected samples; None where p <= 0.5).

    python -m benchmarks.distill_recipe [--train 100] [--fresh 80] [--epochs 2]
        [--max-chars 450] [--max-tokens 512] [--train-check 20]
        [--threads 1] [--train-threads 1] [--base-dir DIR] [--home DIR] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from benchmarks.distill_gain import (
    Distilled,
    Trainer,
    ab_summary,
    adapter_report,
    base_dir_for,
    say,
    serving,
    table,
    train_progress,
    training_report,
    workbench,
)
from benchmarks.learning_curve import nanobot_home

if TYPE_CHECKING:
    from nanobot_tui.engine.learning.distill.ab_test import ABResult, Judge
    from nanobot_tui.engine.learning.distill.dataset import TrainingExample
    from nanobot_tui.engine.voting.domains import Step
    from nanobot_tui.engine.work.domain import CodeDomain

STEP_TYPE = "code:fstrings"
RECIPE = "fstrings"


# --- the corpus ----------------------------------------------------------------------------


def site_packages() -> Path:
    import flynt

    return Path(flynt.__file__).resolve().parent.parent


def vendor_corpus(source: Path, target: Path, max_chars: int) -> int:
    """Copy into `target` the `.py` files under `source` that hold a function the recipe
    wants of at most `max_chars` characters (their relative paths kept); how many."""
    from nanobot_tui.engine.work.codebase import function_sites
    from nanobot_tui.engine.work.recipes import get_recipe

    recipe = get_recipe(RECIPE)
    copied = 0
    for path in sorted(source.rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "%" not in text and ".format" not in text:
            continue
        rel = path.relative_to(source)
        try:
            sites = function_sites(rel.as_posix(), text)
        except (SyntaxError, ValueError):
            continue
        if any(len(s.source) <= max_chars and _wanted(recipe, s) for s in sites):
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_text(text, encoding="utf-8")
            copied += 1
    return copied


def _wanted(recipe: Any, site: Any) -> bool:
    try:
        return bool(recipe.wants(site))
    except (SyntaxError, ValueError, RecursionError):
        return False


def is_fresh_file(path: str, fraction: float) -> bool:
    """Whether a file's functions are held out (never trained on): its path's hash."""
    digest = hashlib.sha256(path.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def answer_text(code: str) -> str:
    """A reply the recipe reads: the edited function, dedented, in one ```python block."""
    return f"```python\n{code}```"


def example_of(domain: CodeDomain, step: Step, source: str) -> TrainingExample:
    from nanobot_tui.engine.learning.distill.dataset import TrainingExample
    from nanobot_tui.engine.work import pysource

    answer = answer_text(pysource.reindent(domain.truth(step), ""))
    return TrainingExample(domain.messages(step), answer, "truth", source, 0.0)


def split(
    domain: CodeDomain, args: argparse.Namespace
) -> tuple[list[Step], list[Step], dict[str, int]]:
    """(training steps, fresh steps, counts): short functions with a reference, split
    by file, drawn seeded."""
    short = [s for s in domain.steps() if len(s.input.source) <= args.max_chars]
    train = [s for s in short if not is_fresh_file(s.input.path, args.fresh_fraction)]
    fresh = [s for s in short if is_fresh_file(s.input.path, args.fresh_fraction)]
    rng = random.Random(args.seed)
    rng.shuffle(train)
    rng.shuffle(fresh)
    counts = {
        "functions": domain.total_steps(),
        "short": len(short),
        "train_pool": len(train),
        "fresh_pool": len(fresh),
    }
    return train[: args.train], fresh[: args.fresh], counts


def recipe_judge(domain: CodeDomain, steps: dict[str, Step]) -> Judge:
    """Right when the strict parser (with the recipe's red flags) accepts the reply for
    the example's own function and it is canonically flynt's edit."""
    from nanobot_tui.engine.learning.examples import last_user_text
    from nanobot_tui.engine.voting.domains import ParseError

    def judge(reply: str, example: TrainingExample) -> bool:
        step = steps[last_user_text(example.messages)]
        try:
            return domain.key(domain.parse_strict(reply, step)) == domain.key(domain.truth(step))
        except (ParseError, ValueError):
            return False

    return judge


# --- the whole -----------------------------------------------------------------------------


async def main_async(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from nanobot_tui.engine.learning.distill import train as training
    from nanobot_tui.engine.learning.distill.ab_test import ab_test
    from nanobot_tui.engine.learning.distill.dataset import (
        DatasetCounts,
        TrainingSet,
        write_dataset,
    )
    from nanobot_tui.engine.voting.domains.registry import DOMAINS
    from nanobot_tui.engine.work.domain import CodeDomain

    corpus = home / "corpus"
    started = time.perf_counter()
    if corpus.is_dir():  # a kept home's corpus (--home): the same files again
        files = sum(1 for _ in corpus.rglob("*.py"))
    else:
        files = vendor_corpus(site_packages(), corpus, args.max_chars)
    domain = DOMAINS["code"].build({"root": str(corpus), "recipe": RECIPE})
    assert isinstance(domain, CodeDomain)
    train_steps, fresh_steps, counts = split(domain, args)
    say(f"corpus: {files} files, {counts}, {time.perf_counter() - started:.0f} s")
    report: dict[str, Any] = {"corpus": {"files": files, **counts}}

    train = [example_of(domain, s, "reference") for s in train_steps]
    fresh = [example_of(domain, s, "fresh") for s in fresh_steps]
    check = train[: args.train_check]
    model = workbench(args).slots["rlm"].path
    base_dir = await base_dir_for(args, model)
    job_dir = training.job_folder(STEP_TYPE)
    counts_ = DatasetCounts(0, 0, 0, 0, len(train), len(fresh))
    training_set = TrainingSet(STEP_TYPE, train, fresh, counts_)
    write_dataset(training_set, job_dir)
    config = training.TrainConfig(
        job_dir=job_dir, base_gguf=model, base_dir=base_dir, epochs=args.epochs,
        threads=args.train_threads, seed=args.seed, max_tokens=args.max_tokens,
    )  # fmt: skip
    trainer = cast(Trainer, training.train_lora)
    t0 = time.perf_counter()
    result = await asyncio.to_thread(trainer, config, train, progress=train_progress(30.0))
    distilled = Distilled(training_set, result, time.perf_counter() - t0)
    adapter = result.adapter
    if adapter is None:
        raise SystemExit(f"distill_recipe: training stopped at step {result.steps}")

    steps = {}
    for step in [*train_steps, *fresh_steps]:
        from nanobot_tui.engine.learning.examples import last_user_text

        steps[last_user_text(domain.messages(step))] = step
    judge = recipe_judge(domain, steps)

    tests: dict[str, ABResult] = {}
    async with serving(args)(adapter.path) as (client, adapter_id):
        for name, items in (("fresh", fresh), ("train", check)):
            if items:
                say(f"A/B on {len(items)} {name} functions")
                t1 = time.perf_counter()
                tests[name] = await ab_test(
                    client, adapter_id, items, judge,
                    progress=lambda d, n: say(f"  {d}/{n}") if d % 10 == 0 else None,
                )  # fmt: skip
                say(f"A/B {name}: {tests[name].describe()} ({time.perf_counter() - t1:.0f} s)")
    report.update(
        {
            "step_type": STEP_TYPE,
            "dataset": {"train": len(train), "fresh": len(fresh), "train_check": len(check)},
            "training": {
                **training_report(distilled),
                "epochs": args.epochs,
                "threads": args.train_threads,
                "max_tokens": args.max_tokens,
            },
            "adapter": adapter_report(distilled),
            "run_steps": 1_048_575,
            "run_target": 0.95,
            "ab": {name: ab_summary(ab) for name, ab in tests.items()},
            "model": str(model),
        }
    )
    return report


def recipe_table(report: dict[str, Any]) -> str:
    corpus = report["corpus"]
    head = [
        f"corpus: {corpus['files']} vendored site-packages files, {corpus['functions']} "
        f"functions flynt changes, {corpus['short']} short; pools: {corpus['train_pool']} "
        f"train, {corpus['fresh_pool']} fresh (split by file)"
    ]
    rest = table({**report, "work": {}}).split("\n")[1:]  # its first line is the word-case run's
    return "\n".join([*head, *rest])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--train", type=int, default=100, help="training examples")
    p.add_argument("--fresh", type=int, default=80, help="fresh functions in the A/B")
    p.add_argument("--train-check", type=int, default=20,
                   help="training functions also A/B tested (what it learned)")  # fmt: skip
    p.add_argument("--fresh-fraction", type=float, default=0.35,
                   help="share of the files held out")  # fmt: skip
    p.add_argument("--max-chars", type=int, default=450, help="longest function used")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per training example")
    p.add_argument("--epochs", type=int, default=2, help="training epochs")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="the model server's threads")
    p.add_argument("--train-threads", type=int, default=1, help="torch threads")
    p.add_argument("--base-dir", help="a base checkpoint train.py made before (reused)")
    p.add_argument("--home", help="keep the NANOBOT_HOME here (not deleted)")
    p.add_argument("--json", action="store_true", help="the report as one JSON line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if min(args.train, args.fresh, args.epochs) < 1:
        parser().error("--train, --fresh and --epochs must be at least 1")
    from nanobot_tui.engine.learning.distill.train import require_learn_extra

    require_learn_extra()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="distill-recipe-"))
    started = time.perf_counter()
    try:
        with nanobot_home(home):
            report = asyncio.run(main_async(args, home))
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report) if args.json else recipe_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
