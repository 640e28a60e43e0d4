"""Rank 0 working alone (benchmarks during training) for longer than the process group's timeout."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.evaluation.during_training import RankZeroWork
from training.loop import Distributed

from .test_ddp import free_port

GROUP_TIMEOUT_S = 2
RANK_ZERO_WORK_S = 5


def worker(rank: int, port: int, report: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=GROUP_TIMEOUT_S)
    )
    try:
        wait = RankZeroWork(Distributed(rank, 2, rank), minutes=1)
        if rank == 0:
            time.sleep(RANK_ZERO_WORK_S)  # a benchmark longer than the group's collective timeout
        wait.done()
        total = torch.tensor([float(rank + 1)])
        dist.all_reduce(total)  # the next training collective
        Path(report, f"rank-{rank}").write_text(str(float(total)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes importing the trainer
def test_other_ranks_outwait_the_collective_timeout_while_rank_zero_works(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"rank-{rank}").read_text() for rank in range(2)] == ["3.0", "3.0"]


def test_a_single_process_does_not_wait():
    RankZeroWork(Distributed(), minutes=1).done()  # no process group: nothing to join
