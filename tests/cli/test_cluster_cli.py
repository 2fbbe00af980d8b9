"""`nanobot cluster` on a real Ray: `up` and `join` start two nodes on this machine (each
with its own NANOBOT_HOME and port block), `status --json` lists them, `run --cluster`
puts the cluster's address in the run's spec, `down` stops each node's own processes and
no other; and the one-line errors (Ray missing, no cluster at an address)."""

from __future__ import annotations

import argparse
import io
import json
import random
import socket
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from nanobot_tui.cli import cluster as cli_cluster
from nanobot_tui.cli import main as cli
from nanobot_tui.cli.run import run_spec
from nanobot_tui.errors import UsageError
from nanobot_tui.models import catalog
from nanobot_tui.models.catalog import CatalogModel
from tests.cli.test_cli import assert_one_error_line, nanobot
from tests.conftest import free_port
from tests.setup_fakes import COPY_ID, copy_on_hub, hub

__all__ = ["copy_on_hub", "hub"]  # fixtures

pytestmark = pytest.mark.timeout(300)


def free_block(size: int) -> int:
    """The first of `size` consecutive ports that nothing listens on now."""
    for _ in range(200):
        base = random.randrange(20000, 40000 - size)
        try:
            for port in range(base, base + size):
                with socket.socket() as sock:
                    sock.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free block of ports")


def ray_pids(temp_dir: str) -> list[int]:
    return list(cli_cluster.node_processes(temp_dir))


def parsed(*argv: str) -> argparse.Namespace:
    return cli.build_parser(argv[0]).parse_args(list(argv))


def test_up_join_status_pull_run_spec_and_down_on_a_real_ray(
    tmp_path: Path, copy_on_hub: CatalogModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """copy_on_hub: a catalog entry whose file (the embedded GGUF) a local stand-in for
    Hugging Face serves; HF_ENDPOINT points there, and the nodes inherit it."""
    head_home, other_home = tmp_path / "head", tmp_path / "other"
    port = free_block(1)
    head_ports, other_ports = free_block(16), free_block(16)
    homes = (head_home, other_home)
    up = nanobot(
        head_home, "cluster", "up", "--port", str(port), "--node-ports", str(head_ports),
        "--worker-ports", "4", "--num-cpus", "1", "--json", timeout=180,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    head = json.loads(up.stdout.splitlines()[-1])
    try:
        assert head["role"] == "head" and head["address"].endswith(f":{port}")
        assert head["dashboard"] is None  # off unless asked
        # Every port the node opens, as a firewall rule names them.
        services = sorted([(port, str(port)), (head_ports, f"{head_ports}-{head_ports + 5}")])
        workers = f"{head_ports + 10}-{head_ports + 13}"
        assert head["port_ranges"] == ", ".join([*(text for _, text in services), workers])
        assert ray_pids(head["temp_dir"])
        again = nanobot(head_home, "cluster", "up", "--port", str(free_port()))
        assert again.returncode == 2
        assert_one_error_line(again.stderr, "already a nanobot cluster node", "cluster down")

        join = nanobot(
            other_home, "cluster", "join", head["address"], "--node-ports", str(other_ports),
            "--worker-ports", "4", "--num-cpus", "1", "--json", timeout=180,
        )  # fmt: skip
        assert join.returncode == 0, join.stderr
        other = json.loads(join.stdout.splitlines()[-1])
        assert other["role"] == "worker" and other["address"] == head["address"]

        status = nanobot(head_home, "cluster", "status", "--json", timeout=120)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["address"] == head["address"]
        alive = [node for node in report["nodes"] if node["alive"]]
        assert len(alive) == 2
        assert [node["head"] for node in alive] == [True, False]
        assert all(node["nanobot"] and node["cpus"] == 1 for node in alive)
        assert report["hosts"] == []  # no run has put model hosts on it yet

        # `pull` fetches the model on every node, into that node's own models folder.
        monkeypatch.setenv("NANOBOT_HOME", str(head_home))
        quant = copy_on_hub.quants[0]
        files = [catalog.model_file(copy_on_hub, quant, home / "models") for home in homes]
        code, out, err = run_main_out("cluster", "pull", COPY_ID, "--json")
        assert code == 0, err
        pulled = json.loads(out.splitlines()[0])
        assert sorted(row["path"] for row in pulled["nodes"]) == sorted(map(str, files))
        assert [row["state"] for row in pulled["nodes"]] == ["downloaded", "downloaded"]
        assert all(path.stat().st_size == quant.size_bytes for path in files)
        code, out, err = run_main_out("cluster", "pull", COPY_ID)
        assert code == 0, err
        assert out.count(": present: ") == 2 and "is on all 2 node(s)" in out

        # `run --cluster` (auto: the cluster this machine's node is in) reaches the spec.
        args = parsed("run", "wordcase", "--words", "3", "--cluster")
        assert run_spec(args, 2).cluster == head["address"]

        # `down` on the joined node stops its processes only: the head still answers.
        down = nanobot(other_home, "cluster", "down")
        assert down.returncode == 0, down.stderr
        assert "stopped this node" in down.stdout
        assert not ray_pids(other["temp_dir"])
        assert ray_pids(head["temp_dir"])
        status = nanobot(head_home, "cluster", "status", "--json", timeout=120)
        assert status.returncode == 0, status.stderr
        assert sum(node["alive"] for node in json.loads(status.stdout)["nodes"]) == 1
    finally:
        nanobot(other_home, "cluster", "down")
        down = nanobot(head_home, "cluster", "down")
    assert down.returncode == 0, down.stderr
    assert "stopped this head" in down.stdout
    assert not ray_pids(head["temp_dir"])
    after = nanobot(head_home, "cluster", "down")
    assert after.stdout.strip() == "this machine is not a nanobot cluster node"


def test_run_cluster_takes_an_address_and_refuses_what_cannot_work() -> None:
    args = parsed("run", "wordcase", "--cluster", "10.0.0.5:6379")
    assert run_spec(args, 3).cluster == "10.0.0.5:6379"
    assert run_spec(parsed("run", "wordcase"), 3).cluster is None
    with pytest.raises(UsageError, match="use --sampler local"):
        run_spec(parsed("run", "wordcase", "--sampler", "simulated:0.9", "--cluster"), 3)
    with pytest.raises(UsageError, match="in no nanobot cluster"):
        run_spec(parsed("run", "wordcase", "--cluster"), 3)  # this home joined none
    with pytest.raises(UsageError, match="HOST:PORT"):
        run_spec(parsed("run", "wordcase", "--cluster", "wordcase"), 3)


def test_process_cluster_reaches_the_process_spec(tmp_path: Path) -> None:
    from nanobot_tui.cli.process import _run_options
    from nanobot_tui.engine.work.process import prepare

    code = tmp_path / "code"
    code.mkdir()
    (code / "m.py").write_text("def f(name):\n    return 'hi %s' % name\n")
    args = parsed("process", "use f-strings", "--on", str(code), "--cluster", "10.0.0.5:6379")
    plan = prepare("use f-strings", code, "fstrings", **_run_options(args))
    assert plan.spec.cluster == "10.0.0.5:6379"
    assert plan.spec.sampler == "local:rlm"


def run_main_out(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def run_main(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err):
        code = cli.main(list(argv))
    return code, err.getvalue()


def test_without_ray_every_action_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    for argv in (
        ("cluster", "up", "--port", str(free_port())),
        ("cluster", "status", "--address", "127.0.0.1:6379"),
        ("cluster", "pull", "smollm2-135m-instruct", "--address", "127.0.0.1:6379"),
    ):
        code, err = run_main(*argv)
        assert code == 1, argv
        assert_one_error_line(err, "the cluster needs Ray: pip install 'nanobot-tui[cluster]'")


def test_status_at_an_address_where_nothing_listens_is_one_line() -> None:
    address = f"127.0.0.1:{free_port()}"
    code, err = run_main("cluster", "status", "--address", address)
    assert code == 1
    assert_one_error_line(err, f"no Ray cluster answers at {address}")
    code, err = run_main("cluster", "status")  # this home joined no cluster
    assert code == 2
    assert_one_error_line(err, "this machine is in no nanobot cluster")
