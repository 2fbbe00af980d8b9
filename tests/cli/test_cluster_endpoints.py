"""Servers the user already runs, joined to a cluster run's pool by URL: the config's
`cluster.endpoints`, checked as they load and shown by `nanobot cluster status` (no Ray
needed for either)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from nanobot_tui.cli.cluster import endpoint_states, format_report
from nanobot_tui.config import Config, ConfigError, load_config, save_config
from tests.conftest import free_port


def test_an_endpoint_that_is_not_a_url_is_refused_in_one_line(nanobot_home: Path) -> None:
    nanobot_home.mkdir(parents=True, exist_ok=True)
    (nanobot_home / "config.json").write_text(
        json.dumps({"cluster": {"endpoints": [{"url": "box2:8080"}]}}), encoding="utf-8"
    )
    with pytest.raises(ConfigError) as caught:
        load_config()
    message = str(caught.value)
    assert "\n" not in message and "cluster.endpoints" in message and "box2:8080" in message


@pytest.mark.model
def test_status_shows_each_endpoint_and_whether_it_answers(
    nanobot_home: Path, llama_server: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = Config.model_validate(
        {"cluster": {"endpoints": [{"url": llama_server + "/"}, {"url": dead, "apiKey": "k"}]}}
    )
    save_config(config)
    states = asyncio.run(endpoint_states())
    assert [(s["url"], s["state"]) for s in states] == [
        (llama_server, "ok"),
        (dead, "unreachable"),
    ]
    text = format_report({"address": "a:1", "nodes": [], "hosts": [], "endpoints": states})
    assert f"endpoint {dead}: unreachable" in text and "k" not in text.split(dead)[1]
