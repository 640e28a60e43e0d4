"""Starting (or joining) Ray, and sizing model actor pools so they never take every CPU.

Joining a cluster (`--ray-address`, or `RAY_ADDRESS`) never hangs. Left alone, `ray.init` retries an
address it cannot reach for over ten minutes, and it first rewrites a loopback address (127.0.0.1,
localhost) into this machine's own address, so a head bound to loopback only is dialled where it does
not listen. Instead, within `POTION_RAY_CONNECT_TIMEOUT_S` (default 60) seconds:

1. probe: one TCP connection to the address Ray will really dial; a refusal fails at once;
2. handshake: `ray.init` in a child process killed at the deadline, with Ray's own connect timeouts
   cut below it (a port that answers but is no Ray head, a driver host without a raylet, a version
   mismatch: whatever stalls, the deadline holds);
3. join in this process with a single GCS attempt, the handshake having just succeeded.

Each failure is one line (PipelineError) naming the address as given and as dialled. During the run, the
loss of a node, worker, actor or object (a raylet stopped, a machine gone) also ends the run with one
line: finished partitions keep their manifests, so running the same command again resumes.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from curation.errors import UserError
from pipelines.errors import PipelineError

CONNECT_TIMEOUT_ENV = "POTION_RAY_CONNECT_TIMEOUT_S"
DEFAULT_CONNECT_TIMEOUT_S = 60.0

# Run in the handshake child: its last stdout line is "ok" or the error, on one line.
_HANDSHAKE = """
import logging, sys
import ray
try:
    ray.init(address=sys.argv[1], include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    ray.shutdown()
    print("ok")
except Exception as error:
    lines = str(error).strip().splitlines() or [""]
    print(f"{type(error).__name__}: {lines[0]}")
"""


def connect_timeout_s() -> float:
    raw = os.environ.get(CONNECT_TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_CONNECT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < math.inf:
        raise PipelineError(f"{CONNECT_TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


@contextmanager
def ray_runtime(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Join `address` (a running cluster) or start a local Ray; reuse one already started in this process."""
    import ray

    if ray.is_initialized():
        yield
        return
    # Token auth is off unless the user turned it on; set here, not at import, so importing has no side
    # effects. The handshake child and Ray's workers inherit it.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    target = dialled_address(address or os.environ.get("RAY_ADDRESS"))
    if target is None:
        _init_ray("local", num_cpus)
    else:
        join_cluster(address or os.environ["RAY_ADDRESS"], target, connect_timeout_s())
    try:
        yield
    except ray.exceptions.RayError as error:
        if not lost_resources(error):
            raise
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise PipelineError(
            f"lost a Ray node, worker or object during the run ({type(error).__name__}: {first_line}); "
            "finished partitions are kept: run the same command again to resume"
        ) from error
    finally:
        ray.shutdown()


def _init_ray(address: str, num_cpus: int | None = None) -> None:
    """`ray.init`, quietly: no dashboard, errors only, workers' output not echoed to the driver."""
    import ray

    ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)


def dialled_address(address: str | None) -> str | None:
    """The host:port Ray will dial for `address`; None: start Ray locally. Ray rewrites loopback hosts.

    No address means a local Ray, never (as `ray.init()` would have it) the last cluster `ray start`
    left on this machine.
    """
    from ray._private.services import canonicalize_bootstrap_address

    if not address or address == "local":
        return None
    if address.startswith("ray://"):
        raise PipelineError(
            f"--ray-address {address}: Ray Client addresses are not supported; run on a cluster "
            "node and give the head's GCS address, host:port (port 6379 by default)"
        )
    try:
        return canonicalize_bootstrap_address(address)
    except (ValueError, ConnectionError, OSError) as error:  # a bad format, or "auto" with no cluster running
        raise PipelineError(f"--ray-address {address}: {error}") from None


def join_cluster(address: str, target: str, timeout_s: float) -> None:

    shown = target if target == address else f"{target} (Ray's form of {address})"
    probe(target, shown, timeout_s)
    handshake(target, shown, timeout_s)
    with _environment(RAY_gcs_server_port_wait_time_s="1"):  # one GCS attempt: the handshake just got through
        try:
            _init_ray(target)
        except ConnectionError as error:
            raise PipelineError(f"cannot join the Ray cluster at {shown}: {error}") from None


def probe(target: str, shown: str, timeout_s: float) -> None:
    """One TCP connection to the GCS port, bounded by `timeout_s`."""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else error.strerror or str(error)
    raise PipelineError(
        f"cannot reach the Ray cluster at {shown}: {reason} ({CONNECT_TIMEOUT_ENV}={timeout_s:g}); is the head "
        "running, is this its GCS port (6379 by default) and is it open from this machine?"
    )


def handshake(target: str, shown: str, timeout_s: float) -> None:
    """`ray.init(target)` in a child process that is killed at the deadline."""
    cut = str(max(1, int(timeout_s / 2)))  # Ray's own limits, below ours, so Ray's message usually wins
    env = {
        **os.environ,
        "RAY_gcs_server_port_wait_time_s": "1",
        "RAY_py_gcs_connect_timeout_s": cut,
        "RAY_gcs_rpc_server_connect_timeout_s": cut,
        "RAY_gcs_server_request_timeout_seconds": cut,
    }
    try:
        child = subprocess.run(
            [sys.executable, "-c", _HANDSHAKE, target], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise PipelineError(
            f"joining the Ray cluster at {shown} did not finish within {timeout_s:g} s: the port answers but no "
            f"Ray head completed the handshake (the dashboard's port 8265 instead of the GCS port 6379?); "
            f"raise {CONNECT_TIMEOUT_ENV} if the cluster is only slow"
        ) from None
    lines = child.stdout.strip().splitlines()
    if not lines or lines[-1] != "ok":
        detail = lines[-1] if lines else f"exit status {child.returncode}"
        raise PipelineError(f"cannot join the Ray cluster at {shown}: {detail}")


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def lost_resources(error: BaseException) -> bool:
    """True for Ray's errors about lost nodes, workers, actors or objects; False for errors of our own code."""
    from ray import exceptions

    if isinstance(error, exceptions.RayActorError):
        return not error.actor_init_failed  # an exception in the actor's __init__ is ours
    return isinstance(
        error,
        (
            exceptions.NodeDiedError,
            exceptions.WorkerCrashedError,
            exceptions.LocalRayletDiedError,
            exceptions.ObjectLostError,
            exceptions.OutOfMemoryError,
        ),
    )


@dataclass(frozen=True)
class ActorPlan:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float

    @property
    def torch_threads(self) -> int:
        return max(1, int(self.cpus_per_actor))


def plan_model_actors(actors: int | None = None, cpus_per_actor: float | None = None) -> ActorPlan:
    """`plan_actors` over the nodes of the running Ray that are alive now."""
    import ray

    return plan_actors([node["Resources"] for node in ray.nodes() if node.get("Alive")], actors, cpus_per_actor)


def plan_actors(nodes: list[dict[str, float]], actors: int | None = None, cpus_per_actor: float | None = None) -> ActorPlan:
    """One actor per GPU when the cluster has GPUs; else CPU actors that leave one CPU per node for the
    other stages.

    An actor lives on one node, so it is sized by the largest node, never by the cluster's total: an
    actor asking for more CPUs than any node has would wait forever for a place to run.
    """
    gpus = int(sum(node.get("GPU", 0) for node in nodes))
    if gpus:
        return ActorPlan(actors or gpus, cpus_per_actor or 1, 1)
    node_cpus = [int(node.get("CPU", 0)) for node in nodes if node.get("CPU", 0) >= 1] or [1]
    largest = max(node_cpus)
    per_actor = cpus_per_actor or max(1, largest - 1)
    if per_actor > largest:
        raise UserError(f"no node has {per_actor} CPUs for a model actor (the largest has {largest})")
    count = actors or max(1, sum(int((cpus - 1) // per_actor) for cpus in node_cpus))
    total = sum(node_cpus)
    if count * per_actor >= total and total > 1:
        raise UserError(f"{count} actors x {per_actor} CPUs would take all {total} CPUs; leave one for the other stages")
    return ActorPlan(count, per_actor, 0)
