"""The added tokens' rows, trained as small blocks beside frozen vocabulary matrices.

Idefics2 adds three tokens to Mistral's vocabulary. Their embedding rows and LM-head rows must train,
the other 32,000 of each matrix must not move. Training the whole matrices behind a gradient mask
would give them full-size gradients and AdamW moments (about 262M float32 values for Mistral-7B) to
move six rows. Instead, as m4's decoupled embedding and linear layers did, each matrix stays frozen
and a (new tokens x width) parameter, `new_rows`, supplies those tokens' rows:

- `NewTokenEmbedding`: looks a token up in the frozen table, then takes a new token's vector from
  `new_rows` instead;
- `NewTokenHead`: computes the logits with the frozen matrix, then overwrites the new tokens' columns
  with `hidden @ new_rows.T`.

The frozen matrix keeps its name (`weight`), so the base checkpoint's tensor is used as is and only
`new_rows` is trained, optimised and checkpointed. `merge_new_rows` writes the rows back into the
matrices and restores plain `nn.Embedding` / `nn.Linear` layers (for export). With tied embeddings the
head shares the embedding's `new_rows`.
"""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from curation.errors import UserError

EMBEDDING = "model.text_model.embed_tokens"
HEAD = "lm_head"

Layer = TypeVar("Layer", bound=nn.Module)


def _initial_rows(weight: torch.Tensor, ids: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(weight.detach()[ids].clone())


class NewTokenEmbedding(nn.Module):
    """An embedding whose `new_ids` rows come from the trainable `new_rows`; `weight` stays frozen."""

    weight: torch.Tensor  # the base layer's frozen Parameter
    new_rows: nn.Parameter
    new_ids: torch.Tensor  # buffers
    slots: torch.Tensor

    def __init__(self, base: nn.Embedding, new_ids: list[int]) -> None:
        super().__init__()
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.padding_idx = base.padding_idx
        ids = torch.tensor(sorted(new_ids), device=base.weight.device)
        slots = torch.full((base.weight.shape[0],), -1, dtype=torch.long, device=base.weight.device)
        slots[ids] = torch.arange(len(ids), device=base.weight.device)
        self.register_buffer("new_ids", ids, persistent=False)
        self.register_buffer("slots", slots, persistent=False)  # token id -> its row in new_rows, or -1
        self.new_rows = _initial_rows(base.weight, ids)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeds = F.embedding(input_ids, self.weight, self.padding_idx)
        slot = self.slots[input_ids]
        new = F.embedding(slot.clamp(min=0), self.new_rows).to(embeds.dtype)
        return torch.where((slot >= 0)[..., None], new, embeds)

    def merged(self) -> nn.Embedding:
        with torch.no_grad():
            self.weight[self.new_ids] = self.new_rows.to(self.weight.dtype)
        rows, width = self.weight.shape
        with torch.device("meta"):
            embedding = nn.Embedding(rows, width, padding_idx=self.padding_idx)
        embedding.weight = self.weight
        return embedding


class NewTokenHead(nn.Module):
    """A bias-free LM head whose `new_ids` logits come from the trainable `new_rows`; `weight` stays frozen."""

    weight: torch.Tensor  # the base layer's frozen Parameter
    new_rows: nn.Parameter
    new_ids: torch.Tensor  # a buffer

    def __init__(self, base: nn.Linear, new_ids: list[int], shared_rows: nn.Parameter | None = None) -> None:
        super().__init__()
        if base.bias is not None:
            raise ValueError("new-token rows need a bias-free LM head")
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.register_buffer("new_ids", torch.tensor(sorted(new_ids), device=base.weight.device), persistent=False)
        self.new_rows = shared_rows if shared_rows is not None else _initial_rows(base.weight, self.new_ids)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden, self.weight)
        # in place: the matmul keeps its inputs for backward, not its output
        return logits.index_copy_(-1, self.new_ids, F.linear(hidden, self.new_rows).to(logits.dtype))

    def merged(self) -> nn.Linear:
        with torch.no_grad():
            self.weight[self.new_ids] = self.new_rows.to(self.weight.dtype)
        with torch.device("meta"):
            linear = nn.Linear(self.weight.shape[1], self.weight.shape[0], bias=False)
        linear.weight = self.weight
        return linear


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _plain(model: nn.Module, name: str, kind: type[Layer]) -> Layer:
    module = model.get_submodule(name)
    if type(module) is not kind:
        raise UserError(
            f"adapters.train_new_tokens needs a plain {kind.__name__} at {name}, found "
            f"{type(module).__name__}; leave it out of the adapter targets or train it fully"
        )
    return module


def decouple_new_rows(model: nn.Module, new_ids: list[int], embedding: bool, head: bool) -> None:
    """Swap the embedding and/or the LM head for their new-token versions (their matrices then freeze)."""
    shared = None
    if embedding:
        module = NewTokenEmbedding(_plain(model, EMBEDDING, nn.Embedding), new_ids)
        if head and module.weight is model.get_submodule(HEAD).weight:  # tied: one matrix, one set of rows
            shared = module.new_rows
        _replace(model, EMBEDDING, module)
    if head:
        _replace(model, HEAD, NewTokenHead(_plain(model, HEAD, nn.Linear), new_ids, shared))


def merge_new_rows(model: nn.Module) -> None:
    """Write trained rows back into the vocabulary matrices and restore the plain layers."""
    for name, module in list(model.named_modules()):
        if isinstance(module, (NewTokenEmbedding, NewTokenHead)):
            _replace(model, name, module.merged())
