"""The cluster pool's parts that need neither Ray nor a model: the run spec's cluster field,
the one-line answer when Ray is missing, how the pool picks a host, the request body a host
receives, and a host's answer turned into the client's result or error."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from nanobot_tui.engine.cluster import ray_runtime
from nanobot_tui.engine.cluster.host_actor import HostSpec, _completion_tokens
from nanobot_tui.engine.cluster.pool import (
    URL,
    HostPool,
    Member,
    _HostLost,
    _result,
    plan_hosts,
    request_body,
)
from nanobot_tui.engine.cluster.pool_client import affinity_key
from nanobot_tui.engine.cluster.ray_runtime import ClusterError
from nanobot_tui.engine.llm.errors import RequestError, ServerError
from nanobot_tui.engine.llm.request import ChatRequest
from nanobot_tui.engine.runs.spec import RunSpec, SpecError
from nanobot_tui.engine.serving.slots import ServerSpec
from nanobot_tui.engine.voting.ahead_by_k import VoteConfig


def run_spec(**kw: object) -> RunSpec:
    args: dict[str, object] = {
        "domain": "wordcase",
        "params": {"words": 3},
        "sampler": "local:rlm",
        "vote": VoteConfig(k=2),
    }
    return RunSpec(**{**args, **kw})  # type: ignore[arg-type]


def test_the_cluster_field_round_trips_and_old_specs_read_none() -> None:
    spec = run_spec(cluster="10.0.0.5:6379")
    assert RunSpec.from_dict(spec.to_dict()).cluster == "10.0.0.5:6379"
    assert "on cluster 10.0.0.5:6379" in spec.describe()
    old = spec.to_dict()
    del old["cluster"]
    assert RunSpec.from_dict(old).cluster is None


@pytest.mark.parametrize("kw", [{"sampler": "simulated:0.9"}, {"cluster": " "}])
def test_a_cluster_needs_a_model_sampler_and_an_address(kw: dict[str, str]) -> None:
    with pytest.raises(SpecError) as caught:
        run_spec(**{"cluster": "auto", **kw})
    assert "\n" not in str(caught.value) and "cluster" in str(caught.value)


def test_without_ray_cluster_use_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_runtime, "ray_available", lambda: False)
    with pytest.raises(ClusterError) as caught:
        ray_runtime.connect("auto")
    assert str(caught.value) == ray_runtime.INSTALL_HINT
    assert "pip install" in str(caught.value) and "\n" not in str(caught.value)


def member(name: str, slots: int, in_flight: int = 0, sent: int = 0, down: str = "") -> Member:
    return Member(name, URL, slots, in_flight=in_flight, sent=sent, down=down)


def pool_of(*members: Member) -> HostPool:
    pool = HostPool(None)
    for m in members:
        pool._add(m)
    return pool


def test_a_prompt_stays_on_its_host_while_that_host_has_free_slots() -> None:
    a, b = member("a", 2), member("b", 2)
    pool = pool_of(a, b)
    first = pool.pick("step-1", 1)
    assert first is a  # both idle: the first, sent fewest
    a.in_flight = 1
    assert pool.pick("step-1", 1) is a  # a slot left: the prompt's cache is there
    a.in_flight = 2
    assert pool.pick("step-1", 1) is b  # full: the least loaded takes it, and the key
    b.in_flight = 1
    a.in_flight = 0
    assert pool.pick("step-1", 1) is b


def test_the_least_loaded_host_relative_to_its_slots_is_picked() -> None:
    big, small = member("big", 4, in_flight=2), member("small", 1, in_flight=0)
    pool = pool_of(big, small)
    assert pool.pick(None, 1) is small  # 0/1 < 2/4
    small.in_flight = 1
    assert pool.pick(None, 1) is big  # 2/4 < 1/1
    big.in_flight, small.in_flight = 0, 0
    big.sent, small.sent = 5, 3
    assert pool.pick(None, 1) is small  # equal load: the one sent fewest


def test_a_down_host_is_never_picked_and_its_prompts_move() -> None:
    a, b = member("a", 2), member("b", 2)
    pool = pool_of(a, b)
    assert pool.pick("p", 1) is a
    pool._mark_down(a, "its node left the cluster")
    assert not a.up and a.lost == 1
    assert pool.pick("p", 1) is b
    pool._mark_down(b, "gone")
    assert pool.pick("p", 1) is None and not pool.healthy()


def test_the_body_a_host_receives_is_the_openai_body_in_plain_types() -> None:
    request = ChatRequest(
        ({"role": "user", "content": "hi"},),
        temperature=0.1,
        max_tokens=5,
        n=2,
        seed=7,
        stop=("\n",),
        extra={"logprobs": True},
    )
    body = request_body(request, "m")
    assert body == {
        "messages": [{"role": "user", "content": "hi"}],
        "model": "m",
        "temperature": 0.1,
        "max_tokens": 5,
        "n": 2,
        "seed": 7,
        "stop": ["\n"],
        "logprobs": True,
    }
    assert pickle.loads(pickle.dumps(body)) == body
    same = ChatRequest([{"role": "user", "content": "hi"}], temperature=0.9)
    other = ChatRequest([{"role": "user", "content": "ho"}])
    assert affinity_key(request) == affinity_key(same) != affinity_key(other)


def test_a_hosts_answer_becomes_the_clients_result_or_error() -> None:
    host = member("h", 1)
    answer = {
        "choices": [{"index": 0, "message": {"content": "X"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    result = _result(host, {"status": 200, "body": answer}, 0.5)
    assert result.content == "X" and result.usage.completion_tokens == 1
    with pytest.raises(RequestError) as refused:
        _result(host, {"status": 400, "message": "'n' must be <= 2", "type": "x"}, 0.1)
    assert refused.value.status == 400 and refused.value.server_message == "'n' must be <= 2"
    with pytest.raises(ServerError):
        _result(host, {"status": 500, "message": "boom"}, 0.1)
    for lost in ({"status": 0, "message": "RemoteProtocolError"}, {"status": 503}):
        with pytest.raises(_HostLost):  # no answer: the pool sends it elsewhere
            _result(host, lost, 0.1)


def test_several_choices_count_their_tokens_from_their_logprobs() -> None:
    def choice(tokens: int) -> dict[str, object]:
        return {"logprobs": {"content": [{}] * tokens}}

    answer = {"choices": [choice(3), choice(5)], "usage": {"completion_tokens": 3}}
    assert _completion_tokens(answer) == 8
    assert _completion_tokens({"choices": [{}], "usage": {"completion_tokens": 4}}) == 4


def test_each_node_finds_the_model_in_its_own_models_folder(tmp_path: Path) -> None:
    driver_models, node_models = tmp_path / "driver", tmp_path / "node"
    path = driver_models / "qwen" / "q.gguf"
    server = ServerSpec(path, "qwen", "Qwen", ("main",), 8192, 4, -1, kv_unified=True)
    spec = HostSpec.for_server("main", server, models_dir=driver_models)
    # Every slot a whole window of its own: the pool admits by slots, not KV cells.
    assert spec.server.context_size == server.window * 4 and not spec.server.kv_unified
    with pytest.raises(ClusterError) as caught:
        spec.model_on_node("abcd1234 (10.0.0.2)", node_models)
    line = str(caught.value)
    assert "abcd1234" in line and str(node_models / "qwen" / "q.gguf") in line
    assert "nanobot cluster pull qwen" in line
    (node_models / "qwen").mkdir(parents=True)
    (node_models / "qwen" / "q.gguf").write_bytes(b"GGUF")
    assert spec.model_on_node("abcd1234", node_models) == node_models / "qwen" / "q.gguf"


def test_one_host_per_gpu_or_per_cpu_node_with_its_share_of_the_cpus(tmp_path: Path) -> None:
    server = ServerSpec(tmp_path / "m.gguf", "custom", "m", ("rlm",), 4096, 2, -1)
    spec = HostSpec.for_server("rlm", server, models_dir=tmp_path)
    gpu_node = ray_runtime.NodeInfo("g" * 56, "10.0.0.1", True, 16, 2, True)
    cpu_node = ray_runtime.NodeInfo("c" * 56, "10.0.0.2", True, 6, 0, False)
    planned = plan_hosts([gpu_node, cpu_node], spec, per_gpu=True)
    assert [(h.name, h.gpu, h.threads) for h in planned] == [
        (f"nanobot-host:rlm:{'g' * 56}:gpu0", 0, 8),
        (f"nanobot-host:rlm:{'g' * 56}:gpu1", 1, 8),
        (f"nanobot-host:rlm:{'c' * 56}", None, 6),
    ]
    one_each = plan_hosts([gpu_node, cpu_node], spec, per_gpu=False)
    assert [(h.gpu, h.threads) for h in one_each] == [(None, 16), (None, 6)]
    fixed = HostSpec.for_server("rlm", server, models_dir=tmp_path, threads=3)
    assert {h.threads for h in plan_hosts([gpu_node, cpu_node], fixed, per_gpu=True)} == {3}


@pytest.mark.parametrize("address", ["127.0.0.1:9", "not-an-address"])
def test_a_cluster_address_where_nothing_listens_fails_at_once(address: str) -> None:
    if not ray_runtime.ray_available():
        pytest.skip("Ray is not installed (the [cluster] extra)")
    with pytest.raises(ClusterError) as caught:
        ray_runtime.connect(address)
    assert address in str(caught.value) and "\n" not in str(caught.value)
