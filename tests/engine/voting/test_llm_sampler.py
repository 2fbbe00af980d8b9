"""LLMSampler against the real embedded llama.cpp server (SmolLM2-135M, 4 slots).

Every red flag is produced by the real server: a tiny token cap (too_long), a strict
parser that refuses the model's format (parse), a prompt that fills the slot's context
(truncated), a closed port (error). Only the fallback for an endpoint that ignores `n`
uses an `httpx.MockTransport` fake, and says so in its name.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import httpx
import pytest

from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import ChatResult
from nanobot_tui.engine.voting.domains import ParseError, Step
from nanobot_tui.engine.voting.domains.wordcase import WordCase
from nanobot_tui.engine.voting.samplers.model import LLMSampler
from nanobot_tui.engine.voting.samples import RED_ERROR, RED_PARSE, RED_TOO_LONG, RED_TRUNCATED
from tests.conftest import free_port

NAME = "local main: SmolLM2-135M-Instruct"
T = TypeVar("T")


class Essay:
    """A test domain whose answer is free text: any reply parses; `prompt` is the ask."""

    name = "essay"

    def __init__(self, prompt: str = "Write a long story about a dragon.") -> None:
        self.prompt = prompt

    def messages(self, step: Step, paraphrase: int = 0) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}]

    def parse_strict(self, text: str, step: Step | None = None) -> str:
        return text

    def key(self, answer: str) -> str:
        return answer


class LowerCaseWords(WordCase):
    """Asks the word-case question but wants `answer: word` in lower case: the model
    follows the prompt's examples, so its replies fail this strict parser."""

    def parse_strict(self, text: str, step: Step | None = None) -> str:
        if not text.startswith("answer: ") or not text[8:].islower():
            raise ParseError(f"not 'answer: word': {text[:40]!r}")
        return text[8:]


@pytest.fixture
async def llm(llama_server: str) -> AsyncIterator[LLMClient]:
    async with LLMClient(llama_server) as client:
        yield client


async def test_samples_are_parsed_in_order_with_text_tokens_latency_and_temperature(
    llm: LLMClient,
) -> None:
    domain = WordCase(["cat"])
    sampler = LLMSampler(llm, domain, name=NAME, seed=1)
    assert sampler.simulated is False
    assert sampler.model == "SmolLM2-135M-Instruct"
    temps = [0.0, 0.1, 0.1]
    samples = await sampler.sample(Step(0, "cat"), temps)
    assert [s.temperature for s in samples] == temps
    for s in samples:
        assert s.text.strip()
        assert 0 < s.completion_tokens <= 12
        assert s.latency_s > 0
        if s.red_flag is None:
            assert s.answer == domain.parse_strict(s.text)
            assert s.key == domain.key(s.answer)
        else:
            assert s.red_flag == RED_PARSE and s.answer is None and s.key is None
    # The two 0.1 samples came from one request: its prompt is counted once.
    assert samples[0].prompt_tokens > 0 and samples[1].prompt_tokens > 0
    assert samples[2].prompt_tokens == 0
    assert await sampler.sample(Step(0, "cat"), []) == []


async def test_too_long_when_the_answer_runs_past_the_cap(llm: LLMClient) -> None:
    sampler = LLMSampler(llm, WordCase(["window"]), name=NAME, token_cap=3)
    samples = await sampler.sample(Step(0, "window"), [0.0, 0.1])
    assert [s.red_flag for s in samples] == [RED_TOO_LONG, RED_TOO_LONG]
    # Asked for cap + 1 tokens: exactly one past the cap, the text kept as it came.
    assert [s.completion_tokens for s in samples] == [4, 4]
    assert all(s.text.startswith("answer") and s.answer is None for s in samples)


async def test_parse_when_the_strict_parser_refuses_the_answer(llm: LLMClient) -> None:
    sampler = LLMSampler(llm, LowerCaseWords(["dog"]), name=NAME)
    samples = await sampler.sample(Step(0, "dog"), [0.0, 0.1, 0.1])
    assert [s.red_flag for s in samples] == [RED_PARSE] * 3
    assert all(s.text and s.completion_tokens > 0 and s.key is None for s in samples)


async def test_truncated_when_the_server_stops_under_the_cap(llm: LLMClient) -> None:
    # A prompt that leaves ~30 tokens of the slot's 2,048 (8,192 over 4 slots), and no
    # end-of-text: the server stops with finish_reason "length" long before the cap.
    domain = Essay(" ".join(["cat"] * 1980) + "\nWrite a long story.")
    sampler = LLMSampler(llm, domain, name=NAME, extra={"ignore_eos": True})
    (sample,) = await sampler.sample(Step(0, None), [0.1])
    assert sample.red_flag == RED_TRUNCATED
    assert 0 < sample.completion_tokens < sampler.token_cap
    assert sample.text


async def test_error_on_a_closed_port_never_raises() -> None:
    async with LLMClient(f"http://127.0.0.1:{free_port()}", retries=0) as dead:
        sampler = LLMSampler(dead, WordCase(["cat"]), name="local main: nothing")
        samples = await sampler.sample(Step(0, "cat"), [0.0, 0.1, 0.1])
    assert [s.red_flag for s in samples] == [RED_ERROR] * 3
    assert all("cannot connect" in s.text and s.answer is None for s in samples)


BUSY = "llamacpp:n_busy_slots_per_decode"  # the mean over the server's life
DECODES = "llamacpp:n_decode_total"


async def busy_slots_per_decode(llm: LLMClient, work: Awaitable[T]) -> tuple[T, float]:
    """Await `work`; return its result and how many slots the server's decode calls held
    on average meanwhile, from its own counters (/metrics): 1.0 for requests that took
    turns, the parallel slot count for ones that were decoded together."""
    before = await llm.metrics()
    result = await work
    after = await llm.metrics()
    decodes = after[DECODES] - before[DECODES]
    busy = after[BUSY] * after[DECODES] - before[BUSY] * before[DECODES]
    assert decodes > 0
    return result, busy / decodes


async def test_samples_are_in_flight_together_on_the_server_slots(llm: LLMClient) -> None:
    """Four samples occupy four slots at once, whether sent as one request with n = 4 or
    as four requests: the server decodes them together (one sample alone holds one)."""
    step = Step(0, None)
    for batch in (True, False):
        sampler = LLMSampler(
            llm, Essay(), name=NAME, token_cap=40, batch=batch, extra={"ignore_eos": True}
        )
        samples, four = await busy_slots_per_decode(llm, sampler.sample(step, [0.8] * 4))
        _, one = await busy_slots_per_decode(llm, sampler.sample(step, [0.8]))
        assert four >= 3, f"{four:.2f} slots busy per decode for 4 samples"
        assert one < 1.5, f"{one:.2f} slots busy per decode for 1 sample"
        assert [s.completion_tokens for s in samples] == [41] * 4  # exact per choice
        assert len({s.text for s in samples}) == 4  # per-sample seeds: no two alike


class Recorder(LLMClient):
    """The real client, noting every request's n and seed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[float | None, int, int | None]] = []

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.calls.append((request.temperature, request.n or 1, request.seed))
        return await super().chat(request)


async def test_seeds_never_overlap_and_n_is_split_at_the_servers_limit(
    llama_server: str,
) -> None:
    async with Recorder(llama_server) as rec:
        sampler = LLMSampler(rec, WordCase(["sun"]), name=NAME, seed=5)
        samples = await sampler.sample(Step(0, "sun"), [0.0] + [0.1] * 6)
        assert len(samples) == 7 and all(s.red_flag != RED_ERROR for s in samples)
        assert sampler.max_n == 4  # llama.cpp: n <= its parallel slots, learned from the 400
        await sampler.sample(Step(0, "sun"), [0.1] * 3)
    # Each request's choices use seed, seed + 1, ...: the seed blocks never overlap.
    used: list[int] = []
    for _, n, seed in rec.calls:
        assert seed is not None
        used += range(seed, seed + n)
    assert len(used) == len(set(used))
    # The same seed gives the same seeds again: reproducible requests.
    async with Recorder(llama_server) as rec2:
        again = LLMSampler(rec2, WordCase(["sun"]), name=NAME, seed=5)
        await again.sample(Step(0, "sun"), [0.0] + [0.1] * 6)
    assert rec2.calls[:2] == rec.calls[:2]


async def test_fake_endpoint_that_ignores_n_falls_back_to_one_request_per_sample() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        return httpx.Response(
            200,
            json={
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "answer = CAT"},
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
            },
        )

    async with LLMClient("http://fake", transport=httpx.MockTransport(handler)) as fake:
        sampler = LLMSampler(fake, WordCase(["cat"]), name="fake endpoint")
        samples = await sampler.sample(Step(0, "cat"), [0.1, 0.1, 0.1])
    assert [s.answer for s in samples] == ["CAT"] * 3
    assert sampler.batch is False
    assert [b.get("n") for b in bodies] == [3, None, None]


async def test_a_prompt_over_the_context_is_an_error_and_keeps_batching(llm: LLMClient) -> None:
    domain = Essay(" ".join(["cat"] * 2200))  # more than a slot's 2,048 tokens
    sampler = LLMSampler(llm, domain, name=NAME)
    samples = await sampler.sample(Step(0, None), [0.0, 0.1, 0.1])
    assert [s.red_flag for s in samples] == [RED_ERROR] * 3
    assert all("context" in s.text for s in samples)
    assert sampler.batch is True  # the refusal was about the prompt, not about n


async def test_fake_endpoint_refusing_logprobs_falls_back_to_single_requests() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("logprobs"):
            return httpx.Response(400, json={"error": {"message": "logprobs not supported"}})
        return httpx.Response(
            200,
            json={
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"content": "answer = CAT"}}
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
            },
        )

    async with LLMClient("http://fake", transport=httpx.MockTransport(handler)) as fake:
        sampler = LLMSampler(fake, WordCase(["cat"]), name="fake endpoint")
        samples = await sampler.sample(Step(0, "cat"), [0.1, 0.1])
        assert [(s.answer, s.completion_tokens) for s in samples] == [("CAT", 5)] * 2
        assert sampler.batch is False


async def test_a_steps_seeds_do_not_depend_on_the_other_steps_beside_it() -> None:
    """The same step draws the same seeds whether it is sampled alone, after other steps
    or interleaved with them (concurrent steps, a resumed run, a cluster pool's hosts)."""
    seeds: list[tuple[str, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        word = body["messages"][-1]["content"]
        seeds.append((word, body["seed"]))
        choice = {"index": 0, "finish_reason": "stop", "message": {"content": "answer = X"}}
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        return httpx.Response(200, json={"choices": [choice], "usage": usage})

    async def drawn(order: list[Step]) -> dict[str, list[int]]:
        seeds.clear()
        async with LLMClient("http://fake", transport=httpx.MockTransport(handler)) as fake:
            sampler = LLMSampler(fake, WordCase(["sun", "moon", "star"]), name="fake", seed=7)
            for step in order:
                await sampler.sample(step, [0.1])
        by_word: dict[str, list[int]] = {}
        for text, seed in seeds:
            word = next(w for w in ("sun", "moon", "star") if w in text)
            by_word.setdefault(word, []).append(seed)
        return by_word

    sun, moon, star = Step(0, "sun"), Step(1, "moon"), Step(2, "star")
    alone = await drawn([sun, sun, sun])
    mixed = await drawn([moon, sun, star, sun, moon, sun])
    assert mixed["sun"] == alone["sun"]
    assert len(set(alone["sun"])) == 3  # one step's samples never share a seed
    assert mixed["moon"][0] != mixed["sun"][0]
