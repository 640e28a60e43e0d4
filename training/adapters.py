"""What trains: LoRA or DoRA adapters on the backbones, the new parameters in full, and NEFTune noise.

Following the paper: the pre-trained vision encoder and language model are adapted through low-rank
adapters (peft; DoRA as an option) on their linear layers, while the parameters that did not exist
before Idefics2 are trained fully: the connector (modality projection + perceiver resampler), and the
embedding and LM-head rows of the added tokens. Those rows train as small separate blocks beside the
frozen vocabulary matrices (`training.new_tokens`), so the matrices get neither gradients nor
optimizer state. `method: none` trains every parameter instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import PreTrainedModel

from training.config import AdapterConfig
from training.model import Idefics2ForConditionalGeneration
from training.new_tokens import EMBEDDING, HEAD, decouple_new_rows, merge_new_rows

VISION_TARGETS = r"model\.vision_model\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc1|mlp\.fc2)"
TEXT_TARGETS = r"model\.text_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
VOCABULARY_MATRICES = (f"{EMBEDDING}.weight", f"{HEAD}.weight")
ADAPTER_NAME = "default"


@dataclass
class TrainableSetup:
    """What `apply_adapters` did: the names that train, and the added tokens whose rows train apart."""

    trainable: list[str]
    new_token_ids: list[int] = field(default_factory=list)

    def summary(self, model: nn.Module) -> str:
        params = dict(model.named_parameters())
        total = sum(p.numel() for p in params.values())
        trained = sum(params[name].numel() for name in self.trainable)
        return f"{trained:,} trainable of {total:,} parameters ({100 * trained / total:.2f}%)" + (
            f", incl. {len(self.new_token_ids)} new token rows" if self.new_token_ids else ""
        )


def target_regex(config: AdapterConfig) -> str | None:
    if config.target_modules:
        return config.target_modules
    parts = [pattern for enabled, pattern in ((config.vision, VISION_TARGETS), (config.text, TEXT_TARGETS)) if enabled]
    return "|".join(f"(?:{part})" for part in parts) or None


def lora_config(config: AdapterConfig) -> LoraConfig:
    # peft annotates lora_alpha as int, yet scales by lora_alpha / r and takes any number
    return LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,  # type: ignore[arg-type]
        lora_dropout=config.dropout,
        target_modules=target_regex(config),
        use_dora=config.method == "dora",
        init_lora_weights="gaussian" if config.init == "gaussian" else True,
        bias="none",
    )


def apply_adapters(model: nn.Module, config: AdapterConfig, new_token_ids: list[int]) -> TrainableSetup:
    """Inject adapters (unless `method: none`) and set `requires_grad` on what trains. Call after `.to(device)`."""
    if config.method == "none":
        for param in model.parameters():
            param.requires_grad_(True)
        return TrainableSetup([name for name, _ in model.named_parameters()])
    model.requires_grad_(False)
    if target_regex(config):
        inject_adapter_in_model(lora_config(config), model, adapter_name=ADAPTER_NAME)
    for name, param in model.named_parameters():
        if any(name == prefix or name.startswith(prefix + ".") for prefix in config.train_fully):
            param.requires_grad_(True)
        elif "lora_" in name:
            param.requires_grad_(True)
    new_ids = sorted(new_token_ids) if config.train_new_tokens else []
    if new_ids:  # matrices not trained fully get their new rows apart
        frozen = [_frozen(model, name) for name in VOCABULARY_MATRICES]
        decouple_new_rows(model, new_ids, *frozen)
        new_ids = new_ids if any(frozen) else []
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    return TrainableSetup(trainable, new_ids)


def _frozen(model: nn.Module, name: str) -> bool:
    try:
        return not model.get_parameter(name).requires_grad
    except AttributeError:  # a model without this matrix
        return False


def keep_trainable_in_float32(model: nn.Module) -> None:
    """Trainable parameters in float32 (AdamW master weights) while frozen weights keep their dtype.

    For bf16 backbones: the adapters, connector and new token rows would lose small updates in
    bf16. Forward passes then need bf16 autocast to mix the two.
    """
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every LoRA/DoRA adapter into its base layer and put the plain layer back in its place, and
    write the new tokens' rows back into the vocabulary matrices."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    merge_new_rows(model)
    return model


def has_adapters(model: nn.Module) -> bool:
    return any(isinstance(module, LoraLayer) for module in model.modules())


def set_neftune(model: nn.Module, alpha: float) -> None:
    """NEFTune noise, uniform in +-alpha/sqrt(length * width), added in training mode only.

    Our model adds it to the merged embeddings (image positions included, as the Idefics2 authors
    did). Other models get the transformers Trainer's hook on the token embeddings.
    """
    if isinstance(model, Idefics2ForConditionalGeneration):
        model.neftune_alpha = alpha or None
        return
    if not alpha:
        return
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"NEFTune needs potion's or a transformers model, got a {type(model).__name__}")

    def add_noise(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        magnitude = alpha / math.sqrt(output.shape[1] * output.shape[2])
        return output + torch.empty_like(output).uniform_(-magnitude, magnitude)

    model.get_input_embeddings().register_forward_hook(add_noise)
