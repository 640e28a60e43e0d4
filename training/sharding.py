"""FSDP2: parameters, gradients and optimizer state sharded over the ranks (`train.parallelism: fsdp`).

For full fine-tuning of models that do not fit one GPU. Each vision encoder layer, the connector and
each decoder layer is its own FSDP unit (gathered just before it runs, freed after), the root holds
the rest (embeddings, LM head, norms). On a GPU with bf16 autocast the gathered parameters are bf16
and gradients are reduced in float32; the optimizer steps on float32 shards.

Checkpoints keep the format of unsharded runs: every rank takes part in gathering the full trainable
parameters and optimizer state, rank 0 receives them on the CPU and writes them (so a run may resume
with another world size or without FSDP); on resume rank 0 reads them and broadcasts each shard.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    ValueType,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from training.model import Idefics2ForConditionalGeneration

GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
SCATTER = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)


def shard_units(model: Idefics2ForConditionalGeneration) -> list[nn.Module]:
    """The modules that become FSDP units below the root, in forward order."""
    inner = model.model
    return [*inner.vision_model.encoder.layers, inner.connector, *inner.text_model.layers]


def shard_model(model: Idefics2ForConditionalGeneration, amp: torch.dtype | None) -> nn.Module:
    """Shard `model` in place (each unit, then the root); build the optimizer afterwards."""
    policy = MixedPrecisionPolicy(param_dtype=amp, reduce_dtype=torch.float32) if amp else MixedPrecisionPolicy()
    for unit in shard_units(model):
        fully_shard(unit, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a collective), any other tensor as is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def gather_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full trainable parameters on rank 0's CPU ({} on other ranks); every rank must call it."""
    state = get_model_state_dict(model, options=GATHER)
    tensors = {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}
    if len(tensors) != len(state):
        raise TypeError("the gathered model state holds values other than tensors")
    return tensors


def gather_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Full optimizer state keyed by parameter name on rank 0's CPU ({} elsewhere); every rank calls it."""
    return get_optimizer_state_dict(model, optimizer, options=GATHER)


def scatter_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, parameters: dict[str, torch.Tensor], optimizer_state: dict[str, Any]
) -> None:
    """Load rank 0's full parameters and optimizer state into every rank's shards (others pass {})."""
    full_state: dict[str, ValueType] = dict(parameters)  # the stub wants this exact dict type (dicts are invariant)
    set_model_state_dict(model, full_state, options=SCATTER)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=SCATTER)
