"""Two CPU processes on gloo: gradients are synchronised and each rank reads its own share of the data.

DDP runs without unused-parameter search, on data where a rank's micro-batch often has no image.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from training import checkpoint as ckpt
from training.config import config_from_dict

from .conftest import config_values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HANG_TIMEOUT_S = 90  # a collective some rank never joins fails after this, instead of gloo's 30 minutes


def worker(rank: int, world: int, port: int, values: dict, report: str) -> None:
    import os
    from datetime import timedelta

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=HANG_TIMEOUT_S))  # `train` joins this group
    from torch.distributed.tensor import DTensor

    from training.loop import train

    result = train(config_from_dict(values))
    assert result.model is not None
    # FSDP: this rank's shards (the process group is gone, so no gathering)
    params = {
        name: param.to_local() if isinstance(param, DTensor) else param.detach()
        for name, param in result.model.named_parameters()
        if param.requires_grad
    }
    digest = float(sum((param.double() * (i + 1)).sum() for i, param in enumerate(params.values())))
    Path(report, f"rank-{rank}.json").write_text(json.dumps({"losses": result.losses, "digest": digest, "records": result.records}))


def run_ranks(values: dict, report: Path, world: int = 2) -> list[dict]:
    mp.spawn(worker, args=(world, free_port(), values, str(report)), nprocs=world, join=True)
    return [json.loads((report / f"rank-{rank}.json").read_text()) for rank in range(world)]


def with_text_only_source(values: dict, shards: dict[str, Path]) -> dict:
    """Single-sample micro-batches, half of them conversations without images."""
    values["data"]["batch_size"] = 1
    values["data"]["sources"] = [
        {"name": "pairs", "kind": "pairs", "shards": [str(shards["pairs"] / "*.tar")], "max_seq_len": 64},
        {"name": "text", "kind": "sft", "shards": [str(shards["text"] / "*.tar")], "max_seq_len": 64},
    ]
    return values


@pytest.mark.slow  # two processes, a few steps
def test_two_gloo_processes_train_in_sync(tiny_checkpoint, shard_dirs, tmp_path):
    values = with_text_only_source(
        config_values(tiny_checkpoint, shard_dirs, tmp_path / "run", train={"steps": 4, "save_every": 2}), shard_dirs
    )
    reports = run_ranks(values, tmp_path)
    images = [[record["images"] for record in report["records"]] for report in reports]
    assert images[0] == images[1] and 1 in images[0]  # a step where one rank had its image and one had none
    assert reports[0]["digest"] == pytest.approx(reports[1]["digest"], rel=1e-12)  # identical weights
    assert reports[0]["losses"] == reports[1]["losses"]  # the loss is averaged over both ranks
    assert len(reports[0]["losses"]) == 4

    latest = ckpt.latest_checkpoint(tmp_path / "run")
    assert latest is not None
    positions = [json.loads((latest / f"rank-{rank}.json").read_text())["data"] for rank in range(2)]
    assert [p["world_size"] for p in positions] == [2, 2]
    assert positions[0]["workers"] != positions[1]["workers"]  # each rank has its own reader state
    assert json.loads((latest / "state.json").read_text())["world_size"] == 2
