"""Joining a Ray cluster fails fast, on one line, when the address is wrong; lost nodes end a run on one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray import exceptions

from pipelines.errors import PipelineError
from pipelines.runtime import CONNECT_TIMEOUT_ENV, connect_timeout_s, dialled_address, lost_resources, plan_actors
from tests.pipelines.ray_cluster import free_ports

ROOT = Path(__file__).resolve().parents[2]


def curate_pdfs(tmp_path: Path, address: str, timeout_s: float) -> tuple[subprocess.CompletedProcess, float]:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.pdf").write_bytes(b"%PDF-1.4")
    env = {**os.environ, CONNECT_TIMEOUT_ENV: str(timeout_s), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    start = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pipelines.cli import main; sys.exit(main())",
            "pdfs",
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(tmp_path / "out"),
            "--ray-address",
            address,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done, time.monotonic() - start


def last_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_nothing_listening_fails_at_once_naming_the_address_ray_dials(tmp_path):
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    done, elapsed = curate_pdfs(tmp_path, address, timeout_s=60)
    line = last_line(done)
    target = dialled_address(address)  # this machine's address, where it has one besides loopback
    assert done.returncode == 2 and line.startswith(f"curate pdfs: error: cannot reach the Ray cluster at {target}")
    assert (f"(Ray's form of {address})" in line) == (target != address)
    assert elapsed < 30  # a refusal does not wait for the limit
    assert not (tmp_path / "out" / "shards").exists()


@pytest.mark.slow
def test_a_port_that_answers_but_is_no_ray_head_fails_within_the_limit(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never says a word
        silent.bind(("0.0.0.0", 0))
        silent.listen(16)
        done, elapsed = curate_pdfs(tmp_path, f"127.0.0.1:{silent.getsockname()[1]}", timeout_s=6)
    line = last_line(done)
    assert done.returncode == 2 and line.startswith("curate pdfs: error: ")
    assert "did not finish within 6 s" in line or "cannot join the Ray cluster" in line
    assert elapsed < 6 + 25  # the limit, plus starting Python and the handshake child


def test_no_address_means_a_local_ray_and_odd_addresses_are_one_line_errors(monkeypatch):
    assert dialled_address(None) is None and dialled_address("local") is None
    assert dialled_address("10.1.2.3:6380") == "10.1.2.3:6380"
    with pytest.raises(PipelineError, match="Ray Client addresses are not supported"):
        dialled_address("ray://head:10001")
    with pytest.raises(PipelineError, match="--ray-address not-an-address"):
        dialled_address("not-an-address")


def test_the_connect_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(CONNECT_TIMEOUT_ENV, raising=False)
    assert connect_timeout_s() == 60
    monkeypatch.setenv(CONNECT_TIMEOUT_ENV, "12.5")
    assert connect_timeout_s() == 12.5
    for bad in ("0", "-3", "soon", "inf"):
        monkeypatch.setenv(CONNECT_TIMEOUT_ENV, bad)
        with pytest.raises(PipelineError, match=CONNECT_TIMEOUT_ENV):
            connect_timeout_s()


def test_lost_nodes_workers_and_objects_are_told_apart_from_errors_of_our_code():
    assert lost_resources(exceptions.NodeDiedError("node gone"))
    assert lost_resources(exceptions.WorkerCrashedError())
    assert lost_resources(exceptions.ActorUnavailableError("connection reset", None))
    assert lost_resources(exceptions.RayActorError())
    assert not lost_resources(exceptions.RayActorError(actor_init_failed=True))  # our actor's __init__ raised
    assert not lost_resources(exceptions.RayTaskError("f", "Traceback ...", ValueError("ours")))
    assert not lost_resources(exceptions.GetTimeoutError())


def test_model_actors_are_sized_by_the_largest_node_not_the_cluster():
    one_machine = plan_actors([{"CPU": 2.0}])
    assert (one_machine.actors, one_machine.cpus_per_actor) == (1, 1)
    # Two 1-CPU workers (and a CPU-less head): an actor of 2 CPUs could never be placed.
    cluster = plan_actors([{"CPU": 0.0}, {"CPU": 1.0}, {"CPU": 1.0}])
    assert (cluster.actors, cluster.cpus_per_actor) == (1, 1)
    big = plan_actors([{"CPU": 32.0}] * 4, cpus_per_actor=8)
    assert (big.actors, big.cpus_per_actor) == (12, 8)  # three per node, one CPU per node left over
    assert plan_actors([{"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 2.0}]).actors == 4
    with pytest.raises(ValueError, match="no node has 16 CPUs"):
        plan_actors([{"CPU": 8.0}] * 4, cpus_per_actor=16)
