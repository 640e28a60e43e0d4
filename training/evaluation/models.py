"""The model under evaluation: a potion training run or checkpoint (adapters merged on the fly), a
`train export` folder, or any transformers Idefics2 checkpoint; run by potion's model or, with
`implementation="transformers"`, by transformers' reference class on the same weights.

Both implementations get identical inputs (potion's processor, which reproduces `Idefics2Processor`)
and decode greedily with the same stop rule, so their numbers can be compared side by side.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationMixin

from curation.errors import UserError
from curation.storage import StoragePath
from training import checkpoint as ckpt
from training.config import ImageConfig, ModelConfig
from training.factory import DTYPES, image_seq_len, load_tokenizer
from training.model import Idefics2ForConditionalGeneration, model_config

if TYPE_CHECKING:
    from transformers import Idefics2ForConditionalGeneration as Reference

IMPLEMENTATIONS = ("potion", "transformers")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")

# (inputs, max_new_tokens, eos ids, pad id, stop) -> new token ids (batch, n)
GenerateFn = Callable[[dict[str, torch.Tensor], int, list[int], int, Callable[[torch.Tensor], torch.Tensor]], torch.Tensor]


@dataclass
class EvalModel:
    generate: GenerateFn
    tokenizer: Any
    images: ImageConfig
    image_seq_len: int
    device: torch.device
    description: str


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def potion_generate(model: Idefics2ForConditionalGeneration) -> GenerateFn:
    def generate(inputs, max_new_tokens, eos_ids, pad_id, stop):
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=pad_id, stop=stop)
        return out[:, inputs["input_ids"].shape[1] :]

    return generate


def transformers_generate(model: GenerationMixin) -> GenerateFn:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Stop(StoppingCriteria):
        def __init__(self, prompt_length: int, stop) -> None:
            self.prompt_length, self.stop = prompt_length, stop

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
            return self.stop(input_ids[:, self.prompt_length :]).to(input_ids.device)

    def generate(inputs, max_new_tokens, eos_ids, pad_id, stop):
        length = inputs["input_ids"].shape[1]
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=eos_ids,
            pad_token_id=pad_id,
            stopping_criteria=StoppingCriteriaList([Stop(length, stop)]),
        )
        return out[:, length:]

    return generate


def generate_fn(model: torch.nn.Module, implementation: str) -> GenerateFn:
    """Greedy decoding by the model's own `generate`: potion's, or transformers' for its reference class."""
    if implementation == "potion" and isinstance(model, Idefics2ForConditionalGeneration):
        return potion_generate(model)
    if implementation == "transformers" and isinstance(model, GenerationMixin):
        return transformers_generate(model)
    kind = type(model)
    raise UserError(f"implementation {implementation} cannot run this model ({kind.__module__}.{kind.__name__})")


def _reference_from(model: torch.nn.Module) -> Reference:
    """transformers' Idefics2 holding the same weights as a (merged) potion model."""
    from transformers import Idefics2ForConditionalGeneration as Reference

    reference = Reference(model_config(model))
    reference.load_state_dict(model.state_dict(), strict=True)
    return reference


def checkpoint_image_settings(directory: Path) -> ImageConfig:
    """Resize and splitting settings saved with a Hugging Face checkpoint's processor (defaults otherwise)."""
    for name in PROCESSOR_FILES:
        path = directory / name
        if path.exists():
            values = json.loads(path.read_text())
            values = values.get("image_processor", values)
            size = values.get("size") or {}
            return ImageConfig(
                longest_edge=size.get("longest_edge", 980),
                shortest_edge=size.get("shortest_edge", 378),
                image_splitting=bool(values.get("do_image_splitting", False)),
            )
    return ImageConfig()


def _training_checkpoint(path: Path) -> StoragePath | None:
    if (path / "state.json").exists():
        return path
    if (path / ckpt.CHECKPOINTS).is_dir():
        latest = ckpt.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"{path}: no complete checkpoint under {path / ckpt.CHECKPOINTS}")
        return latest
    return None


def load_eval_model(source: str | Path, implementation: str = "potion", device: str = "auto", dtype: str = "float32") -> EvalModel:
    """The model named by `source` (a training run or checkpoint folder, an export folder, a Hub id), in eval mode."""
    if implementation not in IMPLEMENTATIONS:
        raise UserError(f"--implementation must be one of {IMPLEMENTATIONS}")
    target = pick_device(device)
    checkpoint = _training_checkpoint(Path(source))
    if checkpoint is not None:
        from training.export import merged_model

        model, tokenizer, config = merged_model(checkpoint)
        images = config.images
        if implementation == "transformers":
            model = _reference_from(model)
        description = f"{checkpoint} (training checkpoint, adapters merged)"
    else:
        tokenizer = load_tokenizer(ModelConfig(checkpoint=str(source)))
        if implementation == "transformers":
            from transformers import Idefics2ForConditionalGeneration as Reference

            model = Reference.from_pretrained(str(source), dtype=DTYPES[dtype], attn_implementation="sdpa")
        else:
            model = Idefics2ForConditionalGeneration.from_idefics2_checkpoint(source, dtype=DTYPES[dtype])
        directory = Path(source) if Path(source).is_dir() else None
        images = checkpoint_image_settings(directory) if directory else ImageConfig()
        description = str(source)
    model = model.to(target, DTYPES[dtype]).eval()
    return EvalModel(
        generate_fn(model, implementation),
        tokenizer,
        images,
        image_seq_len(model),
        target,
        f"{description} [{implementation}, {dtype}, {target}]",
    )
