"""`train export`: a training checkpoint -> a Hugging Face Idefics2 checkpoint.

The base model is rebuilt as the run's config says, the checkpoint's trainable weights are loaded,
LoRA/DoRA adapters are merged into their layers, and the folder gets `config.json`,
`model.safetensors` (transformers' parameter names), and the tokenizer and processor files. It loads
with `transformers.Idefics2ForConditionalGeneration.from_pretrained` and `AutoProcessor.from_pretrained`.
The folder is written under a temporary name and renamed when complete; an output on object storage
is written locally and uploaded file by file, `config.json` last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

from cauldron.chat import CHAT_TEMPLATE
from curation.errors import UserError
from curation.storage import ObjectPath, StoragePath
from training import checkpoint as ckpt
from training.adapters import apply_adapters, merge_adapters
from training.config import TrainConfig, config_from_dict
from training.factory import DTYPES, build_model, image_seq_len, load_tokenizer, new_token_ids
from training.model import model_config


def find_checkpoint(run_dir: StoragePath | None, checkpoint: StoragePath | None) -> StoragePath:
    if checkpoint is not None:
        if not (checkpoint / "state.json").exists():
            raise FileNotFoundError(f"{checkpoint} is not a training checkpoint (no state.json)")
        return checkpoint
    if run_dir is None:
        raise UserError("pass a run folder or a checkpoint folder")
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        raise FileNotFoundError(f"no checkpoint under {run_dir / ckpt.CHECKPOINTS}")
    return latest


def merged_model(checkpoint: StoragePath) -> tuple[torch.nn.Module, object, TrainConfig]:
    """The run's model with the checkpoint's weights and adapters merged, on the CPU, in eval mode."""
    state = json.loads((checkpoint / "state.json").read_text())
    config = config_from_dict(state["config"])
    tokenizer = load_tokenizer(config.model)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, tokenizer)
    apply_adapters(model, config.adapters, new_token_ids(tokenizer))
    ckpt.load_trainable(model, checkpoint / "trainable.safetensors")
    merge_adapters(model)
    return model.eval(), tokenizer, config


def export(
    output: StoragePath,
    *,
    run_dir: StoragePath | None = None,
    checkpoint: StoragePath | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
) -> StoragePath:
    source = find_checkpoint(run_dir, checkpoint)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    model, tokenizer, config = merged_model(source)
    if dtype is not None:
        model.to(DTYPES[dtype])
    with _partial_folder(output) as partial:
        _write_folder(partial, model, tokenizer, config, dtype, source)
        _publish(partial, output)
    return output


def _write_folder(
    partial: Path, model: torch.nn.Module, tokenizer: object, config: TrainConfig, dtype: str | None, source: StoragePath
) -> None:
    from transformers import Idefics2ImageProcessor, Idefics2Processor

    idefics2_config = model_config(model)
    if dtype is not None:
        idefics2_config.dtype = dtype
    idefics2_config.save_pretrained(partial)
    weights = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    if idefics2_config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    save_file(weights, str(partial / "model.safetensors"), metadata={"format": "pt"})
    image_processor = Idefics2ImageProcessor(
        size={"longest_edge": config.images.longest_edge, "shortest_edge": config.images.shortest_edge},
        do_image_splitting=config.images.image_splitting,
    )
    Idefics2Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_seq_len(model), chat_template=CHAT_TEMPLATE
    ).save_pretrained(partial)
    (partial / "training_source.json").write_text(json.dumps({"checkpoint": str(source)}, indent=1))


@contextmanager
def _partial_folder(output: StoragePath) -> Iterator[Path]:
    """A local folder to write into: `<output>.partial` beside a local output, a scratch folder for an object."""
    if isinstance(output, ObjectPath):
        with tempfile.TemporaryDirectory(prefix="potion-export-") as scratch:
            yield Path(scratch)
        return
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    yield partial


def _publish(partial: Path, output: StoragePath) -> None:
    """Rename the finished folder into place; on object storage upload it file by file, `config.json`
    last (a folder without it does not load), after clearing what an earlier export left."""
    if not isinstance(output, ObjectPath):
        if output.exists():
            shutil.rmtree(output)
        os.replace(partial, output)
        return
    (output / "config.json").unlink(missing_ok=True)
    output.remove_tree()
    files = sorted(p for p in partial.rglob("*") if p.is_file())
    for path in sorted(files, key=lambda p: p.name == "config.json"):
        (output / str(path.relative_to(partial))).upload(path)
