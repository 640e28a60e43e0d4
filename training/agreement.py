"""What the ranks of a run agree on before the first step: that a local `train.output_dir` is one
folder for all of them, and which checkpoint they resume from.

Nodes need not share a disk. A local output folder is where every rank writes its checkpoint files
and rank 0 renames the finished folder, so it must be the same folder on every rank: rank 0 writes a
marker with a fresh random name there and every rank must see it. The checkpoint to resume from is
chosen by rank 0 alone (`train.resume: auto` looks at what rank 0 sees) and sent to the others as a
step number (a tensor, not a pickle); every rank must then find that checkpoint complete, with its own
rank file when the world size is unchanged. A run never starts in an output folder holding
checkpoints after its start step (another run's, or those of a branch abandoned by resuming from an
older checkpoint): it would publish over them and prune the wrong ones. A problem on any rank stops every rank with the same
one-line error, naming the rank, instead of leaving the others waiting in a collective.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from curation.errors import UserError
from curation.storage import StoragePath, storage_path
from training import checkpoint as ckpt
from training.config import TrainConfig

if TYPE_CHECKING:
    from training.loop import Distributed

NO_CHECKPOINT = -1


def broadcast_text(text: str, source: int, device: torch.device) -> str:
    """`text` of rank `source` on every rank, as UTF-8 bytes in tensors (every rank calls it)."""
    data = torch.tensor(list(text.encode()), dtype=torch.uint8, device=device)
    length = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(length, source)
    if dist.get_rank() != source:
        data = torch.zeros(int(length), dtype=torch.uint8, device=device)
    dist.broadcast(data, source)
    return bytes(data.cpu().tolist()).decode()


def raise_together(problem: str | None, parallel: Distributed, device: torch.device) -> None:
    """Every rank raises the UserError of the lowest rank that has a `problem`, or none does (every
    rank calls it)."""
    if not parallel.enabled:
        if problem is not None:
            raise UserError(problem)
        return
    failing = torch.zeros(parallel.world, dtype=torch.int64, device=device)
    failing[parallel.rank] = problem is not None
    dist.all_reduce(failing)
    ranks = failing.nonzero().flatten().tolist()
    if ranks:
        raise UserError(broadcast_text(problem or "", ranks[0], device))


def broadcast_number(value: int, parallel: Distributed, device: torch.device) -> int:
    """Rank 0's `value` on every rank."""
    if not parallel.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(tensor, 0)
    return int(tensor.item())


def check_shared_output_dir(output_dir: StoragePath, parallel: Distributed, device: torch.device) -> None:
    """A local output folder must be one folder for every rank (object storage always is)."""
    if not parallel.enabled or not isinstance(output_dir, Path):
        return
    token = broadcast_number(random.SystemRandom().getrandbits(62), parallel, device)
    marker = output_dir / f".shared-check-{token}"
    if parallel.main:
        output_dir.mkdir(parents=True, exist_ok=True)
        marker.touch()
    dist.barrier()
    problem = None
    if not marker.exists():
        problem = (
            f"train.output_dir {output_dir} on rank {parallel.rank} is not the folder rank 0 writes to (a node-local "
            "disk?): every rank writes checkpoint files there; use an object store URL (s3://...) or a shared folder"
        )
    try:
        raise_together(problem, parallel, device)
    finally:
        if parallel.main:
            marker.unlink()


def resolve_resume(config: TrainConfig, output_dir: StoragePath) -> StoragePath | None:
    """The checkpoint `train.resume` names in this process's view: none, the latest complete one in
    the output folder (auto), or the given folder."""
    choice = config.train.resume
    if choice == "never":
        return None
    if choice == "auto":
        return ckpt.latest_checkpoint(output_dir)
    path = storage_path(choice)
    if not (path / "state.json").exists():
        raise UserError(f"train.resume: {path} is not a checkpoint folder (no state.json)")
    return path


def checkpoint_step(path: StoragePath) -> int:
    return int(json.loads((path / "state.json").read_text())["step"])


def agree_on_resume(config: TrainConfig, output_dir: StoragePath, parallel: Distributed, device: torch.device) -> StoragePath | None:
    """The checkpoint every rank resumes from, as rank 0 resolves it (every rank calls it)."""
    chosen, problem = None, None
    if parallel.main:
        try:
            chosen = resolve_resume(config, output_dir)
            problem = later_checkpoints(output_dir, 0 if chosen is None else checkpoint_step(chosen))
        except UserError as error:
            problem = str(error)
    raise_together(problem, parallel, device)
    step = broadcast_number(NO_CHECKPOINT if chosen is None else checkpoint_step(chosen), parallel, device)
    if step == NO_CHECKPOINT:
        return None
    path = ckpt.checkpoint_dir(output_dir, step) if config.train.resume == "auto" else storage_path(config.train.resume)
    raise_together(missing_on_this_rank(path, step, parallel), parallel, device)
    return path


def later_checkpoints(output_dir: StoragePath, start: int) -> str | None:
    """Why a run starting at step `start` cannot write into `output_dir`: checkpoints after `start`
    there belong to another run (or an abandoned branch of this one). This run would publish its own
    steps over some of them, pruning would keep the newest of both, and `train.resume: auto` would
    later pick theirs; None if there are none."""
    later = [path.name for path in ckpt.list_checkpoints(output_dir) if ckpt.step_of(path) > start]
    if not later:
        return None
    return (
        f"train.output_dir {output_dir} holds checkpoints after step {start}, where this run starts ({', '.join(later)}): "
        "move them out of its checkpoints folder, or use another train.output_dir"
    )


def missing_on_this_rank(path: StoragePath, step: int, parallel: Distributed) -> str | None:
    """Why this rank cannot resume from rank 0's choice, the checkpoint of `step` at `path`; None if it can."""
    where = f"rank {parallel.rank} cannot resume from {path}, which rank 0 chose"
    if not (path / "state.json").exists():
        return f"{where}: it has no state.json here; every rank must see the same train.output_dir (a shared folder or an object store URL)"
    state = json.loads((path / "state.json").read_text())
    if state["step"] != step:
        return f"{where}: its state.json is of step {state['step']} here, of step {step} on rank 0"
    if state.get("world_size") == parallel.world and not (path / f"rank-{parallel.rank}.json").exists():
        return f"{where}: rank-{parallel.rank}.json is missing, so this rank's data position and RNG states are lost"
    return None
