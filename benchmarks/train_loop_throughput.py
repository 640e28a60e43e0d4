"""The `train` loop end to end on shards: data pipeline, packing, and the loop's step with either model.

Three measurements in one run, each a ratio against a baseline measured beside it:

1. data: batches/s of the shard loader alone (read, mix, decode, resize, tokenize, collate) with
   2 DataLoader workers against 0 (in the training process), and its rate against the step rate: the
   loader must outpace the step or the step waits.
2. packing: share of padded positions and real tokens per sequence, packed (`data.packing`) against
   one sample per sequence.
3. loop: tokens/s of the loop's optimizer step (`training.loop.optimizer_step`: token-weighted loss,
   DoRA adapters from `training.adapters`, new token rows trained apart, AdamW groups, clipping) with
   potion's model against transformers' `Idefics2ForConditionalGeneration` with the same adapters,
   same weights and same packed batches (both isolate the packed samples: potion through its attention
   plan, transformers through its packed position-id masks), timed round-robin so machine load falls
   on both alike. potion computes the loss chunk by chunk over target positions; transformers
   materialises the full logits. Memory: the activations autograd
   saves for backward in one step (any device), and on GPU the step's peak allocation over what was
   held before it. On GPU the step runs in bf16 autocast and MFU is reported (`training.metrics`).

    python benchmarks/train_loop_throughput.py                         # CPU, about 2 minutes on 2 cores
    python benchmarks/train_loop_throughput.py --device cuda --preset mid
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cauldron.sft_shards import row_to_sample  # noqa: E402
from curation.documents import InterleavedDocument  # noqa: E402
from curation.interleaved_format import document_to_sample  # noqa: E402
from curation.pairs.pair import Pair  # noqa: E402
from curation.pairs.samples import pair_sample  # noqa: E402
from curation.shards import PartitionShardWriter  # noqa: E402
from examples.assets import english_paragraphs  # noqa: E402
from examples.tiny_idefics2 import build_tiny_idefics2  # noqa: E402
from training.adapters import apply_adapters, keep_trainable_in_float32  # noqa: E402
from training.config import config_from_dict  # noqa: E402
from training.data import ShardLoader  # noqa: E402
from training.factory import build_model, load_tokenizer, new_token_ids  # noqa: E402
from training.loop import Distributed, Stepper, build_optimizer, optimizer_step, to_device  # noqa: E402
from training.metrics import FlopCounter, peak_flops  # noqa: E402
from training.processor import Processor  # noqa: E402

PRESETS: dict[str, dict[str, Any]] = {
    # model sizes, image resolution, batch and sequence lengths
    "small": dict(
        sizes=dict(text_hidden=256, text_layers=4, vision_hidden=128, vision_layers=4),
        longest=112,
        shortest=56,
        batch=4,
        seq=512,
        steps=4,
        rounds=3,
        checkpointing=False,
    ),
    "mid": dict(
        sizes=dict(text_hidden=2048, text_layers=16, vision_hidden=768, vision_layers=12),
        longest=378,
        shortest=378,
        batch=4,
        seq=2048,
        steps=6,
        rounds=3,
        checkpointing=True,
    ),
}


def png(rng: random.Random, size: tuple[int, int]) -> bytes:
    pixels = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(root: Path, count: int = 96) -> dict[str, Path]:
    """Interleaved documents, pairs and SFT conversations of varied lengths, written by the curation writers."""
    rng = random.Random(0)
    prose = english_paragraphs()
    writers = {kind: PartitionShardWriter(root / kind, kind, samples_per_shard=count // 4) for kind in ("interleaved", "pairs", "sft")}
    for i in range(count):
        texts: list[str | None] = []
        images: list[str | bytes | None] = []
        metadata: list[dict | None] = []
        for node in range(rng.randint(2, 6)):
            is_image = node % 2 == 0
            texts.append(None if is_image else " ".join(rng.sample(prose, 2)))
            images.append(png(rng, (rng.randint(60, 300), rng.randint(60, 300))) if is_image else None)
            metadata.append({"src": f"https://img.example/{i}/{node}"} if is_image else None)
        writers["interleaved"].write(document_to_sample(InterleavedDocument(f"doc{i}", texts, images, metadata, {})))
        caption = rng.choice(prose)[: rng.randint(40, 300)]
        writers["pairs"].write(pair_sample(Pair(f"pair{i}", png(rng, (200, 150)), caption, "alt"), image_format="png"))
        turns = [
            {"user": rng.choice(prose)[:120], "assistant": rng.choice(prose)[: rng.randint(20, 400)], "source": "bench"}
            for _ in range(rng.randint(1, 4))
        ]
        writers["sft"].write(row_to_sample(f"row{i}", {"images": [png(rng, (160, 120))], "texts": turns}))
    for writer in writers.values():
        writer.close()
    return {kind: root / kind for kind in writers}


def run_config(checkpoint: Path, shards: dict[str, Path], preset: dict, **data) -> dict:
    return {
        "model": {"checkpoint": str(checkpoint), "gradient_checkpointing": preset["checkpointing"]},
        "images": {"longest_edge": preset["longest"], "shortest_edge": preset["shortest"]},
        "data": {
            "batch_size": preset["batch"],
            "shuffle_buffer": 32,
            "sources": [
                {
                    "name": "obelics",
                    "kind": "interleaved",
                    "shards": [str(shards["interleaved"] / "*.tar")],
                    "weight": 0.5,
                    "max_seq_len": preset["seq"],
                },
                {"name": "pairs", "kind": "pairs", "shards": [str(shards["pairs"] / "*.tar")], "weight": 0.3, "max_seq_len": preset["seq"]},
                {"name": "sft", "kind": "sft", "shards": [str(shards["sft"] / "*.tar")], "weight": 0.2, "max_seq_len": preset["seq"]},
            ],
            **data,
        },
        "adapters": {"method": "dora", "r": 16, "alpha": 16},
        "train": {"output_dir": "unused"},
    }


def loader_rate(config, processor, batches: int) -> float:
    loader = ShardLoader(config, processor)
    next(loader)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches / (time.perf_counter() - start)


def padding_share(config, processor, batches: int) -> tuple[float, float]:
    loader = ShardLoader(config, processor)
    real = total = 0
    for _ in range(batches):
        batch = next(loader)
        real += batch["num_tokens"]
        total += batch["input_ids"].numel()
    return 1 - real / total, real / (batches * config.data.batch_size)


def saved_activations_mib(stepper: Stepper, batch: dict, target: float) -> float:
    """Bytes of the distinct tensors autograd keeps for backward in one step (parameters excluded): the
    activation memory of a step, measured the same way on any device."""
    model, device, amp = stepper.wrapped, stepper.device, stepper.amp
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        inputs = to_device(batch, device)
        with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
            loss = model(**inputs, num_items_in_batch=target, **stepper.model_kwargs).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    device = torch.device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = build_tiny_idefics2(
            root / "model", image_seq_len=64, longest_edge=preset["longest"], shortest_edge=preset["shortest"], **preset["sizes"]
        )
        shards = write_shards(root / "shards")
        config = config_from_dict(run_config(checkpoint, shards, preset))
        tokenizer = load_tokenizer(config.model)
        processor = Processor(tokenizer, 64, config.images)

        print(f"preset {args.preset} on {device}; batch {preset['batch']} x up to {preset['seq']} tokens")
        print("\n1. data pipeline (batches/s)")
        rates = {}
        for workers in (0, 2):
            config.data.num_workers = workers
            rates[workers] = loader_rate(config, processor, 12)
            print(f"   {workers} workers: {rates[workers]:6.2f} batches/s")
        print(f"   ratio 2 workers / 0: {rates[2] / rates[0]:.2f}x")
        config.data.num_workers = 0

        print("\n2. packing (share of padded positions, real tokens per sequence)")
        unpacked = padding_share(config, processor, 10)
        packed_config = config_from_dict(run_config(checkpoint, shards, preset, packing=True))
        packed = padding_share(packed_config, processor, 10)
        print(f"   one sample per sequence: {100 * unpacked[0]:5.1f}% padding, {unpacked[1]:7.1f} tokens/sequence")
        print(f"   packed:                  {100 * packed[0]:5.1f}% padding, {packed[1]:7.1f} tokens/sequence")
        print(f"   real tokens per sequence, packed / not: {packed[1] / unpacked[1]:.2f}x")

        print("\n3. loop step, DoRA r=16 (tokens/s, same batches, round-robin)")
        amp = torch.bfloat16 if device.type == "cuda" else None
        loader = ShardLoader(packed_config, processor)
        batches = [next(loader) for _ in range(preset["steps"])]
        models = {}
        for implementation in ("potion", "transformers"):
            config.model.implementation = implementation
            config.model.dtype = "bfloat16" if device.type == "cuda" else "float32"
            torch.manual_seed(0)
            model = build_model(config.model, tokenizer).to(device)
            apply_adapters(model, config.adapters, new_token_ids(tokenizer))
            if amp is not None:
                keep_trainable_in_float32(model)
            optimizer = build_optimizer(model, config, device)
            trainable: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
            models[implementation] = Stepper(model, optimizer, trainable, Distributed(), device, amp, 1.0)
        flops = FlopCounter(models["potion"].wrapped)
        step_flops = sum(flops.step_flops(b) for b in batches)
        tokens = sum(b["num_tokens"] for b in batches)
        targets = [float((b["labels"][:, 1:] != -100).sum()) for b in batches]
        peak = peak_flops(device)
        times: dict[str, list[float]] = {name: [] for name in models}
        memory = {}
        for round_index in range(preset["rounds"] + 1):  # round 0 warms up
            for name, stepper in models.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    held = torch.cuda.memory_allocated()
                start = time.perf_counter()
                for batch, target in zip(batches, targets):
                    optimizer_step(stepper, [batch], target)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    memory[name] = (torch.cuda.max_memory_allocated() - held) / 2**20
                if round_index:
                    times[name].append(time.perf_counter() - start)
        for name, stepper in models.items():
            seconds = statistics.median(times[name])
            activations = saved_activations_mib(stepper, batches[0], targets[0])
            line = f"   {name:<13} {tokens / seconds:10,.0f} tokens/s  saved activations {activations:7,.0f} MiB"
            if name in memory:
                line += f"  step peak over held {memory[name]:,.0f} MiB"
            if peak:
                line += f"  MFU {100 * step_flops / seconds / peak:.1f}%"
            print(line)
        ratio = statistics.median(times["transformers"]) / statistics.median(times["potion"])
        print(f"   ratio potion / transformers (tokens/s): {ratio:.2f}x")
        step_rate = preset["steps"] / statistics.median(times["potion"])
        print(f"   loader (0 workers) / step rate: {rates[0] / step_rate:.1f}x")


if __name__ == "__main__":
    main()
