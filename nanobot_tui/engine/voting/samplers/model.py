"""The real sampler: a domain's step asked of a model behind an OpenAI-compatible server.

`LLMSampler.sample(step, temperatures)` draws one answer per temperature, all at once,
and turns each reply into a `Sample`: parsed strictly, or red-flagged and discarded:

- `too_long`  more completion tokens than the cap (requests ask for cap + 1 tokens, so
              an answer that runs past the cap is seen as such, and costs one token more);
- `truncated` the server stopped it (finish_reason "length") under the cap, e.g. when a
              slot's context filled up;
- `parse`     the domain's strict parser refused it;
- `error`     the request failed (an `LLMError`); `text` holds the error line.

One bad sample never raises: it comes back red-flagged with the others.

Batching. Samples at the same temperature go out as ONE request with `n` choices; the
different temperatures of a round (0 for the first vote, 0.1 for the rest) go out as
concurrent requests. Measured with this sampler on the embedded SmolLM2-135M server
(4 slots, 2 shared CPU cores), word-case steps with the few-shot prefix in the slots'
prompt cache, 40 steps each, interleaved, median wall time per round:

    round              real answers (~6 tokens)       33-token answers (ignore_eos)
    [0, .1, .1]        n: 136 ms, separate: 161 ms    n: 631 ms, separate: 711 ms
    [.1, .1, .1, .1]   n: 144 ms, separate: 207 ms    n: 675 ms, separate: 692 ms

(16-30 % less wall time at the answer lengths voting sees; 2-11 % at longer answers,
where decoding dominates). With a 1,530-token prompt NOT in the cache the gap is wide:
4 samples of 8 tokens took 16.0 s as separate requests (every slot evaluates the prompt)
against 4.2 s with n = 4 (evaluated once, then shared). llama.cpp gives the n choices
seeds seed, seed + 1, ..., so a step's request seeds are spaced by the number of choices
and no two samples of a step share a seed.

Seeds are a function of the sampler's seed, the step's index and how many samples that
step drew before, not of the order requests go out: a step gets the same samples whatever
other steps are voted beside it, after a resume, or on another host of a cluster pool.

The price of n > 1 on llama.cpp: `usage` then reports choice 0 only, so such requests ask
for `logprobs` (top 1), whose per-token list gives every choice its exact token count
(2-5 % slower; included in the figures above). Endpoints that refuse `n` or logprobs,
send fewer choices, or send no logprobs make the sampler fall back to one request per
sample from then on; a server that caps `n` (llama.cpp: at its number of slots) gets
requests split to that size.

Few-shot examples. `shots` (optional) gives a step's worked examples as (user, assistant)
text pairs; they go into every request for the step as user/assistant turns just before
its last user message (data in the conversation, never a system instruction). The
sampler knows nothing of where they come from (the learning layer's examples, for one).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.llm.errors import LLMError, RequestError
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult
from nanobot_tui.engine.voting.domains import Domain, ParseError, Step
from nanobot_tui.engine.voting.samples import (
    DEFAULT_TOKEN_CAP,
    RED_ERROR,
    RED_PARSE,
    RED_TOO_LONG,
    RED_TRUNCATED,
    Sample,
)

__all__ = ["LLMSampler", "Shots", "with_shots"]

# A step's few-shot examples: (user text, assistant text) pairs, in prompt order.
Shots = Callable[[Step], Sequence[tuple[str, str]]]

log = logging.getLogger(__name__)

_SEED_SPACE = 1 << 31
# Steps whose sample counts are kept: far more than are ever voted at once.
_STEPS_REMEMBERED = 4096
_LOGPROBS = {"logprobs": True, "top_logprobs": 1}
# A refusal that is about n (or the logprobs that come with it), not the prompt.
_N_FIELD = re.compile(r"(?<![\w])'?n'?(?![\w])|logprobs", re.IGNORECASE)
_N_LIMIT = re.compile(r"<=\s*(\d+)")


def _model_from_name(name: str) -> str:
    """'local rlm: SmolLM2-135M-Instruct' -> 'SmolLM2-135M-Instruct'."""
    _, sep, tail = name.partition(": ")
    return tail.strip() if sep and tail.strip() else name


def with_shots(
    messages: Sequence[Mapping[str, str]], shots: Sequence[tuple[str, str]]
) -> list[Mapping[str, str]]:
    """`messages` with the example pairs as user/assistant turns inserted, in order, just
    before the last user message (unchanged when there are no shots or no user message)."""
    last_user = next(
        (i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None
    )
    if not shots or last_user is None:
        return list(messages)
    turns: list[Mapping[str, str]] = []
    for user, assistant in shots:
        turns += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return [*messages[:last_user], *turns, *messages[last_user:]]


class LLMSampler:
    """Samples a domain's steps from one model endpoint. `name` says what it is
    ("local rlm: SmolLM2-135M-Instruct"); `model` (default: the part of the name after
    ': ') is what calibrations are filed under. `seed` makes the per-request seeds
    reproducible (None: fresh ones). `batch=False` sends one request per sample. `extra`
    is merged into every request body (llama.cpp's `ignore_eos`, Qwen3's
    `chat_template_kwargs`, a LoRA adapter's scales; it may gain fields later). `shots`
    gives each step's few-shot examples (see the module's docstring); it is called once
    per `sample` call and may be set later."""

    simulated = False

    def __init__(
        self,
        client: ChatClient,
        domain: Domain,
        *,
        name: str,
        token_cap: int = DEFAULT_TOKEN_CAP,
        seed: int | None = None,
        model: str | None = None,
        batch: bool = True,
        extra: Mapping[str, Any] | None = None,
        shots: Shots | None = None,
    ) -> None:
        if token_cap < 1:
            raise ValueError(f"token_cap must be >= 1, got {token_cap}")
        self.client = client
        self.domain = domain
        self.name = name
        self.model = model or _model_from_name(name)
        self.token_cap = token_cap
        self.batch = batch
        self.extra = dict(extra or {})
        self.shots = shots
        self.max_n: int | None = None  # learned when a server refuses a larger n
        self._base_seed = random.Random(seed).randrange(_SEED_SPACE)
        # Samples drawn per step index, for the steps used most recently: a step being
        # voted is used every round, so it stays; one long done is forgotten (bounded).
        self._drawn: OrderedDict[int, int] = OrderedDict()

    @property
    def _extra_n(self) -> dict[str, Any]:
        # Built per request: `extra` may gain fields after construction (a LoRA's scales).
        return {**self.extra, **_LOGPROBS}

    def __repr__(self) -> str:
        return f"LLMSampler(name={self.name!r}, token_cap={self.token_cap}, batch={self.batch})"

    def cap_for(self, step: Step) -> int:
        """The token cap of `step`'s replies: the sampler's, or less where the domain
        sizes each step (a code step's reply is its own function, not the longest one)."""
        step_cap = getattr(self.domain, "step_token_cap", None)
        return min(self.token_cap, step_cap(step)) if step_cap is not None else self.token_cap

    def _seeds(self, step: Step, count: int) -> int:
        """The seed of a request for `count` choices of `step` (the choices use seed,
        seed + 1, ...): the step's own block starts at a hash of the sampler's seed and
        the step's index, and its requests take consecutive seeds from there."""
        drawn = self._drawn.pop(step.index, 0)
        self._drawn[step.index] = drawn + count
        if len(self._drawn) > _STEPS_REMEMBERED:
            self._drawn.popitem(last=False)
        key = f"{self._base_seed}:{step.index}".encode()
        start = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
        return (start + drawn) % _SEED_SPACE

    async def sample(
        self, step: Step, temperatures: list[float], paraphrase: int = 0
    ) -> list[Sample]:
        """One sample per temperature, in the order given, all requested concurrently."""
        if not temperatures:
            return []
        messages: Sequence[Mapping[str, str]] = self.domain.messages(step, paraphrase)
        if self.shots is not None:
            messages = with_shots(messages, self.shots(step))
        groups: dict[float, list[int]] = {}
        for i, t in enumerate(temperatures):
            groups.setdefault(t, []).append(i)
        jobs: list[tuple[float, list[int]]] = []
        for t, idx in groups.items():
            size = (self.max_n or len(idx)) if self.batch else 1
            jobs += [(t, idx[j : j + size]) for j in range(0, len(idx), size)]
        batches = await asyncio.gather(*(self._draw(step, messages, t, len(ix)) for t, ix in jobs))
        by_index: dict[int, Sample] = {}
        for (_, ix), samples in zip(jobs, batches, strict=True):
            by_index.update(zip(ix, samples, strict=True))
        return [by_index[i] for i in range(len(temperatures))]

    async def _draw(
        self, step: Step, messages: Sequence[Mapping[str, str]], t: float, n: int
    ) -> list[Sample]:
        """`n` samples at temperature t from one request (n > 1: `n` choices); never
        raises an LLMError, falls back to smaller requests where the server wants it."""
        max_tokens = self.cap_for(step) + 1
        start = time.perf_counter()
        try:
            result = await self.client.chat(
                ChatRequest(
                    messages,
                    temperature=t,
                    max_tokens=max_tokens,
                    seed=self._seeds(step, n),
                    n=n if n > 1 else None,
                    extra=self._extra_n if n > 1 else (self.extra or None),
                )
            )
        except RequestError as exc:
            if n > 1 and exc.status in (400, 422) and _N_FIELD.search(exc.server_message):
                return await self._split(step, messages, t, n, exc)
            return [self._error(exc, t, time.perf_counter() - start)] * n
        except LLMError as exc:
            return [self._error(exc, t, time.perf_counter() - start)] * n
        if n == 1:
            choice = result.choices[0] if result.choices else None
            if choice is None:
                return [self._error("the server sent no choices", t, result.latency_s)]
            tokens = result.usage.completion_tokens
            return [self._judge(step, choice.content, choice.finish_reason, tokens, result, t, 0)]
        return await self._judge_many(step, messages, result, t, n)

    async def _split(
        self,
        step: Step,
        messages: Sequence[Mapping[str, str]],
        t: float,
        n: int,
        exc: RequestError,
    ) -> list[Sample]:
        """The server refused `n` choices (or their logprobs): learn its limit (llama.cpp
        says 'Value must be between 1 <= value <= 4') or give up batching, and draw the
        samples again."""
        m = _N_LIMIT.search(exc.server_message)
        limit = int(m.group(1)) if m else 1
        if 1 < limit < n:
            self.max_n = limit
        else:
            self.batch = False
            limit = 1
        log.debug("%s: n=%d refused (%s); requests of %d from now on", self.name, n, exc, limit)
        parts = [min(limit, n - j) for j in range(0, n, limit)]
        drawn = await asyncio.gather(*(self._draw(step, messages, t, size) for size in parts))
        return [s for batch in drawn for s in batch]

    async def _judge_many(
        self,
        step: Step,
        messages: Sequence[Mapping[str, str]],
        result: ChatResult,
        t: float,
        n: int,
    ) -> list[Sample]:
        raw_choices = result.raw.get("choices") or []
        by_index = {c.get("index", i): c for i, c in enumerate(raw_choices)}
        out: list[Sample] = []
        exact = True
        for pos, choice in enumerate(result.choices[:n]):
            raw = by_index.get(choice.index) or {}
            tokens = _logprob_tokens(raw)
            if tokens is None:
                exact = False
                tokens = _estimate_tokens(choice.content, choice.finish_reason, self.cap_for(step))
            out.append(
                self._judge(step, choice.content, choice.finish_reason, tokens, result, t, pos)
            )
        if not exact:
            log.debug("%s: no per-choice logprobs; one request per sample from now on", self.name)
            self.batch = False
        missing = n - len(out)
        if missing > 0:  # an endpoint that ignores n: draw the rest one by one
            self.batch = False
            more = await asyncio.gather(*(self._draw(step, messages, t, 1) for _ in range(missing)))
            out += [batch[0] for batch in more]
        return out

    def _judge(
        self,
        step: Step,
        text: str,
        finish_reason: str | None,
        tokens: int,
        result: ChatResult,
        t: float,
        position: int,
    ) -> Sample:
        """A reply as a Sample: red-flagged (too long, truncated, unparsable) or parsed
        strictly against its own step. Prompt tokens are counted once per request, on its
        first sample."""
        prompt = result.usage.prompt_tokens if position == 0 else 0
        flag = None
        if tokens > self.cap_for(step):
            flag = RED_TOO_LONG
        elif finish_reason == "length":
            flag = RED_TRUNCATED
        else:
            domain = self.domain
            try:
                answer = domain.parse_strict(text, step)
            except ParseError:
                flag = RED_PARSE
            else:
                return Sample(
                    answer, domain.key(answer), None, text, tokens, prompt, result.latency_s, t
                )
        return Sample(None, None, flag, text, tokens, prompt, result.latency_s, t)

    def _error(self, exc: BaseException | str, t: float, latency: float) -> Sample:
        line = str(exc)
        log.debug("%s: sample failed: %s", self.name, line)
        return Sample(None, None, RED_ERROR, line, 0, 0, latency, t)


def _logprob_tokens(raw_choice: Mapping[str, Any]) -> int | None:
    """The choice's completion tokens, from its per-token logprobs (EOS included, as in
    `usage`); None when the endpoint sent none."""
    logprobs = raw_choice.get("logprobs")
    if not isinstance(logprobs, Mapping):
        return None
    content = logprobs.get("content")
    return len(content) if isinstance(content, list) else None


def _estimate_tokens(text: str, finish_reason: str | None, cap: int) -> int:
    """Used only for an endpoint without per-choice counts, once (batching is then
    switched off): a stopped-at-length answer used all cap + 1 tokens; any other is
    put at 4 characters a token, kept under the cap (it did stop by itself)."""
    if finish_reason == "length":
        return cap + 1
    return min(cap, max(1, math.ceil(len(text) / 4)))
