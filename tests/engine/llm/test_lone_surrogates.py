"""A provider whose JSON holds a lone UTF-16 surrogate escape ("\\ud800"), which parses
to a string no UTF-8 writer accepts (issue 12, item 14): the client hands on U+FFFD. The
provider is the FAKE OpenAI server (a real one cannot be made to send this)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nanobot_tui.engine.llm.openai import LLMClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import StreamDone, TextDelta
from tests.fake_cloud import FakeOpenAIServer, Script

SAID = "bad \ud800 half, good \U0001f600 pair"
SHOWN = "bad \ufffd half, good \U0001f600 pair"


class _Surrogates(FakeOpenAIServer):
    """FAKE: answers with a lone surrogate (json.dumps writes it as the escape \\ud800)."""

    def script(
        self, tools: Sequence[Any] | None, tool_names: list[str], results: list[str]
    ) -> Script:
        return Script(SAID)


async def test_streamed_and_whole_answers_carry_no_lone_surrogate() -> None:
    with _Surrogates(api_key="k", model="m") as fake:
        async with LLMClient(fake.base_url + "/v1", api_key="k", model="m") as client:
            request = ChatRequest([{"role": "user", "content": "hi"}])
            deltas, done = [], None
            async for event in client.stream_chat(request):
                if isinstance(event, TextDelta):
                    deltas.append(event.text)
                elif isinstance(event, StreamDone):
                    done = event
            assert "".join(deltas) == SHOWN
            assert done is not None and done.result.content == SHOWN
            whole = await client.chat(request)
            assert whole.content == SHOWN
            "".join(deltas).encode("utf-8")  # what stdout and a session file do
