"""Starting (or joining) Ray, and sizing model actor pools so they never take every CPU."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@contextmanager
def ray_runtime(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Join `address` (a running cluster) or start a local Ray; reuse one already started in this process."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(
        address=address,
        num_cpus=None if address else num_cpus,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class ActorPlan:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float

    @property
    def torch_threads(self) -> int:
        return max(1, int(self.cpus_per_actor))


def plan_model_actors(actors: int | None = None, cpus_per_actor: float | None = None) -> ActorPlan:
    """One actor per GPU when the cluster has GPUs; else CPU actors that leave one CPU for the other stages."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    if gpus:
        return ActorPlan(actors or gpus, cpus_per_actor or 1, 1)
    per_actor = cpus_per_actor or max(1, cpus - 1)
    count = actors or max(1, int((cpus - 1) // per_actor))
    if count * per_actor >= cpus and cpus > 1:
        raise ValueError(f"{count} actors x {per_actor} CPUs would take all {cpus} CPUs; leave one for the other stages")
    return ActorPlan(count, per_actor, 0)
