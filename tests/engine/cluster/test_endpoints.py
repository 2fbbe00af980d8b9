"""OpenAI-compatible endpoints the user already runs join the pool by URL (no Ray needed):
a live one (the session's real embedded server) comes up with its slots read from /slots,
one where nothing listens stays down and says why, and a request sent to a member that
went away is sent again to the live one, which answers it."""

from __future__ import annotations

import pytest

from nanobot_tui.engine.cluster.pool import Endpoint, HostPool
from nanobot_tui.engine.cluster.pool_client import PoolClient
from nanobot_tui.engine.llm.chat_client import ChatClient
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.llm.results import StreamDone, TextDelta
from tests.conftest import free_port

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]


async def test_endpoints_by_url_join_and_a_lost_one_is_routed_around(llama_server: str) -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    pool = HostPool(None, endpoints=[Endpoint(llama_server), Endpoint(gone)], refresh_interval=0)
    await pool.start()
    try:
        live, dead = pool.members
        assert live.up and live.slots == 4  # the fixture's --parallel 4, read from /slots
        assert not dead.up and dead.down == "unreachable"
        client = PoolClient(pool)
        assert isinstance(client, ChatClient)

        request = ChatRequest(
            [{"role": "user", "content": "Say OK."}], temperature=0.0, max_tokens=4, seed=5
        )
        first = await client.chat(request)
        assert first.choices and first.usage.completion_tokens > 0

        # The dead member looked up when the request was routed: it is sent again.
        dead.down = ""
        pool._affinity["p"] = dead
        again = await pool.chat(request, affinity="p")
        assert again.content == first.content  # same body, same seed: the same answer
        assert not dead.up and dead.lost == 1 and pool.resent == 1
        assert dead.sent == 1 and live.sent == 2

        events = [event async for event in client.stream_chat(request)]
        assert isinstance(events[-1], StreamDone)
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == first.content
    finally:
        await pool.close()
