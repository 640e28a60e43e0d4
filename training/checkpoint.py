"""Training checkpoints: safetensors and JSON only, written atomically, enough to resume exactly.

    <output_dir>/checkpoints/step-00000100/
        trainable.safetensors     every parameter that trains (adapters, connector, new token rows)
        optimizer.safetensors     AdamW moments per parameter, keyed `<parameter name>/<state key>`
        optimizer.json            parameter groups (hyper-parameters and parameter names)
        state.json                step, schedule, config and its fingerprint, metrics so far
        rank-<r>.json             that rank's data position and Python / NumPy RNG states
        rank-<r>.safetensors      that rank's torch CPU (and CUDA) RNG states

Every file is written into `step-XXXXXXXX.partial/`, which rank 0 renames once all ranks are done
(a single atomic rename), so a checkpoint folder without `.partial` is always complete. Object storage
(`train.output_dir: s3://...`) has no folder rename: there every file is uploaded whole into the final
folder, rank files first, and rank 0 uploads `state.json` last, once all ranks are done; a checkpoint
folder counts only when its `state.json` is there. The frozen
base weights are not stored: resume reloads them from the configured checkpoint or backbones. Under
FSDP the same files hold the full (gathered) tensors, see `training.sharding`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load, load_file, save_file
from torch import nn

from curation.atomic import atomic_path
from curation.errors import UserError
from curation.storage import ObjectPath, StoragePath, remove_tree
from training import sharding

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def checkpoint_dir(output_dir: StoragePath, step: int) -> StoragePath:
    return output_dir / CHECKPOINTS / f"step-{step:08d}"


def list_checkpoints(output_dir: StoragePath) -> list[StoragePath]:
    """Complete checkpoints, oldest first (on object storage: those with their `state.json`)."""
    folder = output_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    if isinstance(folder, ObjectPath):
        return sorted(path for path in folder.iterdir() if _STEP_DIR.match(path.name) and (path / "state.json").exists())
    return sorted(path for path in folder.iterdir() if path.is_dir() and _STEP_DIR.match(path.name))


def step_of(checkpoint: StoragePath) -> int:
    """The step of a checkpoint folder listed by `list_checkpoints` (read from its name)."""
    matched = _STEP_DIR.match(checkpoint.name)
    if matched is None:
        raise ValueError(f"{checkpoint} is not a step-XXXXXXXX folder")
    return int(matched.group(1))


def latest_checkpoint(output_dir: StoragePath) -> StoragePath | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def _write_json(path: StoragePath, value: Any) -> None:
    with atomic_path(path) if isinstance(path, ObjectPath) else _in_place(path) as local:
        local.write_text(json.dumps(value, indent=1, sort_keys=True))


def _save_tensors(path: StoragePath, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) if isinstance(path, ObjectPath) else _in_place(path) as local:
        save_file(tensors, str(local), metadata=metadata)


def load_tensors(path: StoragePath) -> dict[str, torch.Tensor]:
    """A safetensors file, local (memory-mapped) or an object (read whole)."""
    return load(path.read_bytes()) if isinstance(path, ObjectPath) else load_file(str(path))


@contextmanager
def _in_place(path: Path) -> Iterator[Path]:
    """A local checkpoint file is written where it goes: its folder is still `.partial`."""
    yield path


# ---------------------------------------------------------------------------------------------------
# Parameters and optimizer state
# ---------------------------------------------------------------------------------------------------


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.detach().cpu().contiguous() for name, param in model.named_parameters() if param.requires_grad}


def check_trainable_names(model: nn.Module, saved: set[str]) -> None:
    expected = {name for name, param in model.named_parameters() if param.requires_grad}
    if saved != expected:
        missing, unexpected = sorted(expected - saved), sorted(saved - expected)
        raise UserError(
            f"checkpoint parameters do not match the model's trainable set: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} (was it saved with other model/adapters settings?)"
        )


def load_trainable(model: nn.Module, path: StoragePath) -> None:
    """Load `trainable.safetensors` into a model set up the same way; every trainable name must match."""
    tensors = load_tensors(path)
    check_trainable_names(model, set(tensors))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)


def named_optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, Any]:
    """The optimizer's state dict keyed by parameter name (the form of FSDP's full optimizer state);
    `names` maps id(parameter) -> parameter name."""
    state = optimizer.state_dict()
    index_to_name = {}
    groups = []
    for group, saved in zip(optimizer.param_groups, state["param_groups"], strict=True):
        for param, index in zip(group["params"], saved["params"], strict=True):
            index_to_name[index] = names[id(param)]
        groups.append({**{k: v for k, v in saved.items() if k != "params"}, "params": [names[id(p)] for p in group["params"]]})
    return {"state": {index_to_name[index]: values for index, values in state["state"].items()}, "param_groups": groups}


def optimizer_files(named: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors keyed `<parameter name>/<state key>`, JSON of groups and scalars) for a named state."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for name, values in named["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{name}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(name, {})[key] = value
    return tensors, {"param_groups": named["param_groups"], "scalars": scalars}


def named_state_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        name, _, field = key.rpartition("/")
        state.setdefault(name, {})[field] = tensor
    for name, values in meta["scalars"].items():
        state.setdefault(name, {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def check_groups(optimizer: torch.optim.Optimizer, names: dict[int, str], meta: dict) -> None:
    if [g["params"] for g in meta["param_groups"]] != [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]:
        raise UserError("optimizer parameter groups differ from the checkpoint's")


def load_named_optimizer_state(optimizer: torch.optim.Optimizer, names: dict[int, str], named: dict[str, Any]) -> None:
    index_of = {}
    current = optimizer.state_dict()
    for group, saved in zip(optimizer.param_groups, current["param_groups"], strict=True):
        for param, index in zip(group["params"], saved["params"], strict=True):
            index_of[names[id(param)]] = index
    groups = [
        {**{k: v for k, v in saved.items() if k != "params"}, "params": cur["params"]}
        for saved, cur in zip(named["param_groups"], current["param_groups"], strict=True)
    ]
    state = {index_of[name]: values for name, values in named["state"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def gather_training_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, names: dict[int, str], main: bool
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(trainable parameters, named optimizer state), full and on the CPU on the main rank. Every rank
    calls it: under FSDP gathering is a collective; otherwise the other ranks get ({}, {})."""
    if sharding.is_sharded(model):
        return sharding.gather_parameters(model), sharding.gather_optimizer(model, optimizer)
    if not main:
        return {}, {}
    return trainable_state(model), named_optimizer_state(optimizer, names)


# ---------------------------------------------------------------------------------------------------
# RNG states
# ---------------------------------------------------------------------------------------------------


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["torch_cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state()
    if not isinstance(numpy_state, tuple):  # a dict when the global generator is not the legacy MT19937
        raise TypeError("numpy's global random generator has no legacy (tuple) state")
    kind, keys, pos, has_gauss, cached = numpy_state
    return tensors, {"python": [version, list(internal), gauss], "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def set_rng_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(tensors["torch_cuda"]))
    version, internal, gauss = values["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = values["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------------------------------------------
# Whole checkpoints
# ---------------------------------------------------------------------------------------------------


@dataclass
class Resumed:
    path: StoragePath
    state: dict[str, Any]  # state.json
    data_position: dict[str, Any] | None  # this rank's


def partial_dir(output_dir: StoragePath, step: int) -> StoragePath:
    """Where a checkpoint is written: `step-XXXXXXXX.partial/`, or on object storage the final folder
    (complete once its `state.json` is there)."""
    final = checkpoint_dir(output_dir, step)
    return final if isinstance(final, ObjectPath) else final.with_name(final.name + ".partial")


def write_rank_files(folder: StoragePath, rank: int, data_position: dict[str, Any]) -> None:
    """This rank's data position and RNG states (every rank calls this)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors, values = rng_state()
    _save_tensors(folder / f"rank-{rank}.safetensors", tensors)
    _write_json(folder / f"rank-{rank}.json", {"data": data_position, "rng": values})


def write_shared_files(
    folder: StoragePath, parameters: dict[str, torch.Tensor], optimizer_named: dict[str, Any], state: dict[str, Any]
) -> None:
    """Parameters, optimizer and run state, from `gather_training_state` (rank 0 only, after every rank
    wrote its files); `state.json` last."""
    folder.mkdir(parents=True, exist_ok=True)
    _save_tensors(folder / "trainable.safetensors", parameters, metadata={"format": "pt"})
    tensors, meta = optimizer_files(optimizer_named)
    _save_tensors(folder / "optimizer.safetensors", tensors)
    _write_json(folder / "optimizer.json", meta)
    _write_json(folder / "state.json", state)


def discard(folder: StoragePath) -> None:
    """Remove a checkpoint folder; on object storage its `state.json` goes first, so what is left of it
    while the rest goes never counts as complete."""
    if isinstance(folder, ObjectPath):
        (folder / "state.json").unlink(missing_ok=True)
    remove_tree(folder)


def publish(output_dir: StoragePath, step: int, keep: int) -> StoragePath:
    """Rename the finished partial folder into place (object storage: already there) and prune old
    checkpoints (rank 0 only)."""
    final = checkpoint_dir(output_dir, step)
    if isinstance(final, Path):
        if final.exists():
            shutil.rmtree(final)
        os.replace(final.with_name(final.name + ".partial"), final)
    for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        discard(old)
    return final


def read_checkpoint(path: StoragePath, rank: int) -> Resumed:
    state = json.loads((path / "state.json").read_text())
    rank_file = path / f"rank-{rank}.json"
    data_position = None
    if rank_file.exists():
        values = json.loads(rank_file.read_text())
        data_position = values["data"]
        set_rng_state(load_tensors(path / f"rank-{rank}.safetensors"), values["rng"])
    return Resumed(path, state, data_position)


def restore_training(
    path: StoragePath, model: nn.Module, optimizer: torch.optim.Optimizer, names: dict[int, str], main: bool = True
) -> None:
    """Trainable weights and optimizer state from a checkpoint. Under FSDP every rank calls it and
    rank 0 (`main`) reads the tensors and broadcasts them; otherwise every rank reads them."""
    meta = json.loads((path / "optimizer.json").read_text())
    check_groups(optimizer, names, meta)
    if not sharding.is_sharded(model):
        load_trainable(model, path / "trainable.safetensors")
        # the optimizer moves moments to their parameters' device itself (and keeps `step` where it wants it)
        load_named_optimizer_state(optimizer, names, named_state_from_files(load_tensors(path / "optimizer.safetensors"), meta))
        return
    parameters, optimizer_named = {}, {}
    if main:
        parameters = load_tensors(path / "trainable.safetensors")
        check_trainable_names(model, set(parameters))
        optimizer_named = named_state_from_files(load_tensors(path / "optimizer.safetensors"), meta)
    sharding.scatter_state(model, optimizer, parameters, optimizer_named)
