"""What ranks agree on before training. Two gloo processes, each with its own view of the output
folder (as nodes without a shared disk have): rank 0's choice of checkpoint is every rank's, and a
rank that cannot follow it, or that does not see rank 0's folder, stops every rank with one line
naming it. And no run starts below checkpoints already in its output folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from curation.errors import UserError
from training import checkpoint as ckpt
from training.agreement import agree_on_resume
from training.config import TrainConfig
from training.loop import Distributed

from .test_ddp import HANG_TIMEOUT_S, free_port


def fake_checkpoint(output_dir: Path, step: int, ranks: tuple[int, ...] = (0, 1)) -> None:
    """The files `agreement` reads: state.json and the rank files of a two-rank run."""
    folder = ckpt.checkpoint_dir(output_dir, step)
    assert isinstance(folder, Path)
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"step": step, "world_size": 2}))
    for rank in ranks:
        (folder / f"rank-{rank}.json").write_text("{}")


def worker(rank: int, port: int, scenarios: list[dict], report: str) -> None:
    import os
    from datetime import timedelta

    import torch.distributed as dist

    from curation.storage import storage_path
    from training.agreement import check_shared_output_dir

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=HANG_TIMEOUT_S))
    parallel, device = Distributed(rank, 2, rank), torch.device("cpu")
    outcomes: list[str | None] = []
    for scenario in scenarios:
        output_dir = storage_path(scenario["views"][rank])
        try:
            if scenario["check"] == "shared":
                check_shared_output_dir(output_dir, parallel, device)
                outcomes.append("ok")
            else:
                config = TrainConfig()
                config.train.resume = scenario["resume"]
                chosen = agree_on_resume(config, output_dir, parallel, device)
                outcomes.append(chosen.name if chosen is not None else None)
        except UserError as error:
            outcomes.append(f"error: {error}")
    dist.destroy_process_group()
    Path(report, f"rank-{rank}.json").write_text(json.dumps(outcomes))


@pytest.mark.slow  # two processes, seven agreements
def test_ranks_follow_rank_0_or_all_stop_naming_the_rank(tmp_path):
    nodes = [tmp_path / "node-0", tmp_path / "node-1"]
    views = {}
    # rank 0 listed before step 8 was published, rank 1 after: both resume from step 4
    views["late"] = [tmp_path / "late-0", tmp_path / "late-1"]
    fake_checkpoint(views["late"][0], 4)
    fake_checkpoint(views["late"][1], 4)
    fake_checkpoint(views["late"][1], 8)
    # rank 0 sees step 8, rank 1 does not
    views["unseen"] = [tmp_path / "unseen-0", tmp_path / "unseen-1"]
    fake_checkpoint(views["unseen"][0], 8)
    # rank 1 sees step 8 without its rank file
    views["no-rank-file"] = [tmp_path / "shared", tmp_path / "shared"]
    fake_checkpoint(views["no-rank-file"][0], 8, ranks=(0,))
    scenarios = [
        {"check": "shared", "views": [str(nodes[0]), str(nodes[0])]},
        {"check": "shared", "views": [str(path) for path in nodes]},
        {"check": "resume", "resume": "auto", "views": [str(path) for path in views["late"]]},
        {"check": "resume", "resume": "auto", "views": [str(path) for path in views["unseen"]]},
        {"check": "resume", "resume": "auto", "views": [str(path) for path in views["no-rank-file"]]},
        {"check": "resume", "resume": "never", "views": [str(path) for path in nodes]},
        {"check": "resume", "resume": str(tmp_path / "nowhere"), "views": [str(path) for path in nodes]},
    ]
    mp.spawn(worker, args=(free_port(), scenarios, str(tmp_path)), nprocs=2, join=True)
    outcomes = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert outcomes[0] == outcomes[1]  # every rank ends the same way
    shared, not_shared, late, unseen, no_rank_file, never, nowhere = outcomes[0]
    assert shared == "ok" and not list(nodes[0].iterdir())  # the marker is gone
    assert not_shared.startswith("error: train.output_dir") and "rank 1" in not_shared and "object store" in not_shared
    assert late == "step-00000004"
    assert unseen.startswith("error: rank 1 cannot resume") and "state.json" in unseen
    assert no_rank_file.startswith("error: rank 1 cannot resume") and "rank-1.json" in no_rank_file
    assert never is None
    assert nowhere.startswith("error: train.resume") and "nowhere" in nowhere


def test_a_run_does_not_start_below_checkpoints_already_in_its_output_folder(tmp_path):
    """Resuming from an older checkpoint, or starting afresh, where later checkpoints exist: pruning
    would keep theirs over this run's and `auto` would later resume from them, so the run refuses."""
    config = TrainConfig()
    config.train.output_dir = str(tmp_path / "run")
    for step in (4, 8):
        fake_checkpoint(tmp_path / "run", step)
    cpu = torch.device("cpu")
    config.train.resume = "auto"
    assert agree_on_resume(config, tmp_path / "run", Distributed(), cpu) == ckpt.checkpoint_dir(tmp_path / "run", 8)
    config.train.resume = str(ckpt.checkpoint_dir(tmp_path / "run", 4))
    with pytest.raises(UserError, match=r"after step 4, where this run starts \(step-00000008\)"):
        agree_on_resume(config, tmp_path / "run", Distributed(), cpu)
    config.train.resume = "never"
    with pytest.raises(UserError, match=r"after step 0, where this run starts \(step-00000004, step-00000008\)"):
        agree_on_resume(config, tmp_path / "run", Distributed(), cpu)
    # the older checkpoint continues in a new folder
    config.train.resume = str(ckpt.checkpoint_dir(tmp_path / "run", 4))
    assert agree_on_resume(config, tmp_path / "branch", Distributed(), cpu) == ckpt.checkpoint_dir(tmp_path / "run", 4)
