"""The training loop: one function, `train(config)`, for one process or many under `torchrun`.

A step takes `grad_accum` micro-batches from the rank's shard loader and weighs every target token of
the global batch equally: each micro-batch's summed loss is divided by the global target count
(summed over micro-batches and ranks; DDP or FSDP then averages gradients over ranks). Then gradients
are clipped, AdamW steps (no weight decay on biases, norms, latents, new token rows and vocabulary
matrices), and the learning rate follows warmup + cosine / linear / constant decay.

Several processes either replicate the model (DDP) or shard it (FSDP2, `training.sharding`). Both
need every trainable parameter in every step's graph: potion's model then runs its image path on a
blank patch for a batch without images (weighted 0), so DDP needs no unused-parameter search.

Determinism: the base seed builds the model and its adapters identically on every rank; after that
each rank runs on seed + rank (dropout, NEFTune). Data streams are seeded separately (see
`training.data`). A resumed run restores trainable weights, optimizer moments, step, RNG states and
the data position, and continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.distributed.fsdp import FSDPModule

from cauldron.chat import IGNORE_INDEX
from curation.atomic import atomic_open
from curation.errors import UserError
from curation.storage import StoragePath, storage_path
from training import checkpoint as ckpt
from training import sharding
from training.adapters import VOCABULARY_MATRICES, TrainableSetup, apply_adapters, keep_trainable_in_float32, set_neftune
from training.agreement import agree_on_resume, check_shared_output_dir
from training.config import ScheduleConfig, TrainConfig
from training.data import ShardLoader
from training.evaluation.during_training import TrainingEvaluation
from training.factory import build_model, image_seq_len, load_tokenizer, new_token_ids
from training.metrics import FlopCounter, peak_flops
from training.model import Idefics2ForConditionalGeneration
from training.processor import Processor, normalise_pixels
from training.reporting import PLOT_FILE, Reporter, loss_summary, plot_losses

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "labels", "pixel_values", "pixel_attention_mask")


# ---------------------------------------------------------------------------------------------------
# Processes, devices, seeds
# ---------------------------------------------------------------------------------------------------


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()


def setup_distributed() -> Distributed:
    """Join the process group `torchrun` describes (NCCL on GPUs, gloo on CPUs); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    state = Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return state


def pick_device(name: str, parallel: Distributed) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        torch.cuda.set_device(parallel.local_rank)
        return torch.device("cuda", parallel.local_rank)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------
# Optimizer and schedule
# ---------------------------------------------------------------------------------------------------


def decays(name: str, param: torch.Tensor) -> bool:
    """Weight decay only on matrices; not on biases, norms, perceiver latents, new token rows or the
    vocabulary matrices (embeddings)."""
    return (
        param.dim() >= 2
        and name not in VOCABULARY_MATRICES
        and not name.endswith("new_rows")
        and "latents" not in name
        and "norm" not in name
    )


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    groups = [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": config.optimizer.weight_decay},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    options = config.optimizer
    return torch.optim.AdamW(groups, lr=options.lr, betas=options.betas, eps=options.eps, fused=device.type == "cuda")


class Schedule:
    """Learning-rate factor for optimizer step `step` (0-based): linear warmup, then decay to `min_lr_ratio`."""

    def __init__(self, config: ScheduleConfig, total_steps: int) -> None:
        self.config = config
        self.total = total_steps

    def factor(self, step: int) -> float:
        warmup, floor = self.config.warmup_steps, self.config.min_lr_ratio
        if step < warmup:
            return (step + 1) / warmup
        if self.config.kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, self.total - warmup))
        if self.config.kind == "linear":
            return floor + (1 - floor) * (1 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    output_dir: StoragePath
    step: int  # optimizer steps done, in total
    records: list[dict[str, Any]] = field(default_factory=list)  # this run's logged steps (rank 0)
    checkpoint: StoragePath | None = None
    model: nn.Module | None = None  # the trained model (adapters unmerged), on its device

    @property
    def losses(self) -> list[float]:
        return [record["loss"] for record in self.records]


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    precision = config.train.precision
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and device.type == "cuda") else None


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The model's inputs on the device, uint8 pixels normalised there.

    Packed batches go without `attention_mask`: their padding sits at row ends, where causal attention
    keeps it from every real token, and transformers' Idefics2 isolates packed samples only without one.
    """
    inputs = {key: batch[key].to(device, non_blocking=True) if batch.get(key) is not None else None for key in MODEL_INPUTS}
    if inputs["position_ids"] is not None:
        inputs["attention_mask"] = None
    pixels, pixel_mask = inputs["pixel_values"], inputs["pixel_attention_mask"]
    if pixels is not None:
        if pixel_mask is None:
            raise ValueError("a batch with pixel_values needs their pixel_attention_mask")
        inputs["pixel_values"] = normalise_pixels(pixels, pixel_mask)
    return inputs


@dataclass
class Stepper:
    """What every optimizer step uses: the model as wrapped for the processes, its optimizer and trainable
    parameters, where and in what precision it runs, and the clipping norm."""

    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    trainable: list[torch.Tensor]
    parallel: Distributed
    device: torch.device
    amp: torch.dtype | None
    grad_clip: float

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return loss_only_kwargs(unwrap(self.wrapped))


def loss_only_kwargs(model: nn.Module) -> dict[str, Any]:
    """potion's model computes the loss chunk by chunk over target positions and returns no logits."""
    return {"return_logits": False} if isinstance(model, Idefics2ForConditionalGeneration) else {}


def unwrap(wrapped: nn.Module) -> nn.Module:
    return wrapped.module if isinstance(wrapped, nn.parallel.DistributedDataParallel) else wrapped


def gradient_sync(wrapped: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Reduce this backward's gradients over the ranks only when `enabled` (the last micro-batch)."""
    if isinstance(wrapped, FSDPModule):  # sharded
        wrapped.set_requires_gradient_sync(enabled)
    elif isinstance(wrapped, nn.parallel.DistributedDataParallel) and not enabled:
        return wrapped.no_sync()
    return contextlib.nullcontext()


def optimizer_step(stepper: Stepper, micro: list[dict[str, Any]], global_targets: float) -> tuple[float, float]:
    """Forward and backward every micro-batch (gradients synchronised on the last), clip, step.

    Returns this rank's share of the loss (summed target losses / global targets x world) and the
    gradient norm before clipping.
    """
    device = stepper.device
    per_rank_targets = max(1.0, global_targets) / stepper.parallel.world
    loss_sum = torch.zeros((), device=device)
    for index, batch in enumerate(micro):
        with gradient_sync(stepper.wrapped, index == len(micro) - 1):
            with torch.autocast(device.type, dtype=stepper.amp) if stepper.amp else contextlib.nullcontext():
                output = stepper.wrapped(**to_device(batch, device), num_items_in_batch=per_rank_targets, **stepper.model_kwargs)
            output.loss.backward()
        loss_sum += output.loss.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(stepper.trainable, stepper.grad_clip or float("inf"))
    stepper.optimizer.step()
    stepper.optimizer.zero_grad(set_to_none=True)
    return float(loss_sum), float(sharding.full_value(grad_norm))


def parallelize(model: nn.Module, config: TrainConfig, parallel: Distributed, device: torch.device, amp: torch.dtype | None) -> nn.Module:
    """The model as the processes run it: itself, sharded by FSDP2, or replicated by DDP."""
    if not parallel.enabled:
        return model
    potion = model if isinstance(model, Idefics2ForConditionalGeneration) else None
    if potion is not None:  # uses every parameter on every batch
        potion.keep_image_path = True
    if config.train.parallelism == "fsdp":
        if potion is None:
            raise UserError("train.parallelism fsdp needs model.implementation potion")
        return sharding.shard_model(potion, amp)
    # transformers' model leaves its vision side unused on a batch without images
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=potion is None
    )


def train(config: TrainConfig) -> TrainResult:
    parallel = setup_distributed()
    try:
        return _train(config, parallel)
    finally:
        if parallel.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, parallel: Distributed) -> TrainResult:
    device = pick_device(config.train.device, parallel)
    output_dir = storage_path(config.train.output_dir)  # a local folder or an object-store URL
    check_shared_output_dir(output_dir, parallel, device)
    resume_from = agree_on_resume(config, output_dir, parallel, device)
    setup = set_up_model(config, parallel, device)
    model, optimizer = setup.model, setup.optimizer
    seed_everything(config.train.seed + parallel.rank)
    start = resume(config, resume_from, setup, parallel)
    if parallel.main:
        write_run_config(config, output_dir)
    loader = ShardLoader(config, setup.processor, parallel.rank, parallel.world, start.data_position, pin_memory=device.type == "cuda")
    flops = FlopCounter(model)
    peak = peak_flops(device, config.logging.peak_tflops)
    trainable: list[torch.Tensor] = [param for param in model.parameters() if param.requires_grad]
    stepper = Stepper(setup.wrapped, optimizer, trainable, parallel, device, setup.amp, config.optimizer.grad_clip)
    schedule = Schedule(config.schedule, config.train.steps)
    if parallel.main:
        print(describe_run(config, model, setup.adapters.summary(model), loader, parallel, device, setup.amp))
    reporter = Reporter(output_dir, config.logging.every, config.logging.tensorboard, start.step) if parallel.main else None
    evaluate = TrainingEvaluation(config, model, setup.processor, setup.tokenizer, parallel, device, setup.amp)
    records: list[dict[str, Any]] = []
    last_checkpoint = None
    totals = start.totals

    model.train()
    for step in range(start.step, config.train.steps):
        started = time.perf_counter()
        micro = [next(loader) for _ in range(config.train.grad_accum)]
        counts = count_step(micro, flops, parallel, device)
        lr = config.optimizer.lr * schedule.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum, grad_norm = optimizer_step(stepper, micro, counts.targets)
        (loss_total,) = parallel.sum([loss_sum], device)
        seconds = seconds_since(started, device)
        totals = {"tokens": totals["tokens"] + counts.tokens, "images": totals["images"] + counts.images}
        mfu = counts.flops / (seconds * peak * parallel.world) if peak else None
        record = step_record(step + 1, loss_total / parallel.world, lr, grad_norm, counts, seconds, mfu, totals, loader)
        records.append(record)
        if reporter is not None:
            reporter.log(record)
        done = step + 1
        if evaluate.due(done):
            evaluation = evaluate(done)
            if reporter is not None:
                reporter.log_eval(evaluation)
        if checkpoint_due(config, done):
            last_checkpoint = save_checkpoint(config, parallel, output_dir, done, model, optimizer, setup.names, loader, totals)
    if reporter is not None:  # the main process
        finish(reporter, config, loader, output_dir, last_checkpoint, parallel.world)
    return TrainResult(output_dir, config.train.steps, records, last_checkpoint, model)


@dataclass
class ModelSetup:
    """The tokenizer, the model with its adapters and processor, and the optimizer of a run."""

    tokenizer: Any
    model: nn.Module
    adapters: TrainableSetup
    amp: torch.dtype | None
    processor: Processor
    wrapped: nn.Module  # the model as the processes run it (`parallelize`)
    optimizer: torch.optim.Optimizer
    names: dict[int, str]  # id(parameter) -> name, for checkpoints


def set_up_model(config: TrainConfig, parallel: Distributed, device: torch.device) -> ModelSetup:
    """Model, adapters and optimizer from the base seed: identical on every rank."""
    seed_everything(config.train.seed)
    tokenizer = load_tokenizer(config.model)
    model = build_model(config.model, tokenizer).to(device)
    adapters = apply_adapters(model, config.adapters, new_token_ids(tokenizer))
    amp = autocast_dtype(config, device)
    if config.model.dtype != "float32":
        if amp is None:
            raise UserError(f"model.dtype {config.model.dtype} needs bf16 autocast: set train.precision to bf16 (or auto on a GPU)")
        keep_trainable_in_float32(model)
    set_neftune(model, config.train.neftune_alpha)
    processor = Processor(tokenizer, image_seq_len(model), config.images)
    wrapped = parallelize(model, config, parallel, device, amp)  # before the optimizer: FSDP swaps parameters
    optimizer = build_optimizer(model, config, device)
    names = {id(param): name for name, param in model.named_parameters()}
    return ModelSetup(tokenizer, model, adapters, amp, processor, wrapped, optimizer, names)


@dataclass
class StartPoint:
    """Where the loop starts: step 0 with nothing seen, or where a checkpoint left off."""

    step: int = 0
    data_position: dict[str, Any] | None = None  # this rank's loader position; None: the beginning
    totals: dict[str, float] = field(default_factory=lambda: {"tokens": 0.0, "images": 0.0})  # seen so far, all ranks


def resume(config: TrainConfig, resume_from: StoragePath | None, setup: ModelSetup, parallel: Distributed) -> StartPoint:
    """Restore the checkpoint the ranks agreed on (`training.agreement`), if any: trainable weights,
    optimizer moments, and this rank's RNG states and data position. Call after seeding the rank."""
    if resume_from is None:
        return StartPoint()
    resumed = ckpt.read_checkpoint(resume_from, parallel.rank)
    if resumed.state["fingerprint"] != config.fingerprint():
        raise UserError(f"{resume_from} was written with other model/adapters settings; use another train.output_dir")
    ckpt.restore_training(resume_from, setup.model, setup.optimizer, setup.names, parallel.main)
    start = StartPoint(resumed.state["step"], resumed.data_position, resumed.state.get("totals", StartPoint().totals))
    if parallel.main:
        print(f"resumed from {resume_from} at step {start.step}")
    return start


def write_run_config(config: TrainConfig, output_dir: StoragePath) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(output_dir / "config.yaml", "w") as handle:
        handle.write(yaml.safe_dump(_plain(config.to_dict()), sort_keys=False))


@dataclass
class StepCounts:
    """One step's micro-batches counted over all ranks."""

    targets: float  # tokens with a loss
    tokens: float
    images: float
    flops: float


def count_step(micro: list[dict[str, Any]], flops: FlopCounter, parallel: Distributed, device: torch.device) -> StepCounts:
    targets = sum(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) for batch in micro)
    counts = [
        targets,
        sum(b["num_tokens"] for b in micro),
        sum(b["num_images"] for b in micro),
        sum(flops.step_flops(b) for b in micro),
    ]
    return StepCounts(*parallel.sum(counts, device))


def seconds_since(started: float, device: torch.device) -> float:
    """Wall time since `started`, once the device has finished the step's queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def step_record(
    step: int,
    loss: float,
    lr: float,
    grad_norm: float,
    counts: StepCounts,
    seconds: float,
    mfu: float | None,
    totals: dict[str, float],
    loader: ShardLoader,
) -> dict[str, Any]:
    """The metrics line of optimizer step `step` (1-based)."""
    record = {
        "step": step,
        "loss": loss,
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens": int(counts.tokens),
        "target_tokens": int(counts.targets),
        "images": int(counts.images),
        "seconds": seconds,
        "tokens_per_s": counts.tokens / seconds,
        "images_per_s": counts.images / seconds,
        "mfu": mfu,
        "tokens_seen": int(totals["tokens"]),
    }
    if skipped := sum(loader.stats()["url_images_skipped"].values()):
        record["url_images_skipped"] = skipped  # this rank's, so far (sources with `url_images: skip`)
    return record


def checkpoint_due(config: TrainConfig, done: int) -> bool:
    """After the last step, and every `save_every` steps."""
    return done == config.train.steps or bool(config.train.save_every and done % config.train.save_every == 0)


def save_checkpoint(
    config: TrainConfig,
    parallel: Distributed,
    output_dir: StoragePath,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    names: dict[int, str],
    loader: ShardLoader,
    totals: dict[str, float],
) -> StoragePath:
    folder = ckpt.partial_dir(output_dir, step)
    if parallel.main and folder.exists():
        ckpt.discard(folder)  # left by an interrupted save
    parallel.barrier()
    ckpt.write_rank_files(folder, parallel.rank, loader.position())
    parameters, optimizer_named = ckpt.gather_training_state(model, optimizer, names, parallel.main)
    parallel.barrier()
    final = ckpt.checkpoint_dir(output_dir, step)
    if parallel.main:
        state = {
            "step": step,
            "fingerprint": config.fingerprint(),
            "config": _plain(config.to_dict()),
            "world_size": parallel.world,
            "totals": totals,
        }
        ckpt.write_shared_files(folder, parameters, optimizer_named, state)
        ckpt.publish(output_dir, step, config.train.keep_checkpoints)
    parallel.barrier()
    return final


def finish(
    reporter: Reporter, config: TrainConfig, loader: ShardLoader, output_dir: StoragePath, last_checkpoint: StoragePath | None, world: int
) -> None:
    reporter.close()
    print("\n" + loss_summary(reporter.records))
    stats = loader.stats()
    where = " (rank 0)" if world > 1 else ""
    print(f"samples used{where}: " + ", ".join(f"{name} {n}" for name, n in sorted(stats["taken"].items())))
    print(f"images used{where}: " + ", ".join(f"{name} {stats['images'][name]}" for name in sorted(stats["taken"])))
    if stats["dropped"]:
        print(f"samples skipped{where}: " + ", ".join(f"{why} {n}" for why, n in sorted(stats["dropped"].items())))
    if stats["images_left_out"]:
        print(
            f"images left out of used samples (source:reason){where}: "
            + ", ".join(f"{why} {n}" for why, n in sorted(stats["images_left_out"].items()))
        )
    if stats["shards_damaged"]:
        print(
            f"damaged shard readings, rest of the shard skipped{where}: "
            + ", ".join(f"{name} {n}" for name, n in sorted(stats["shards_damaged"].items()))
        )
    if stats["url_images_skipped"]:
        print(
            f"URL-only images left out (url_images: skip){where}: "
            + ", ".join(f"{name} {n}" for name, n in sorted(stats["url_images_skipped"].items()))
        )
    if config.logging.plot and reporter.records:
        print(f"loss plot: {plot_losses(reporter.records, output_dir / PLOT_FILE)}")
    print(f"metrics: {reporter.path}")
    if last_checkpoint is not None:
        print(f"checkpoint: {last_checkpoint}  (export: train export --run {output_dir} --output <folder>)")


def describe_run(
    config: TrainConfig,
    model: nn.Module,
    trainable: str,
    loader: ShardLoader,
    parallel: Distributed,
    device: torch.device,
    amp: torch.dtype | None,
) -> str:
    data = config.data
    per_step = data.batch_size * config.train.grad_accum * parallel.world
    lines = [
        f"model: {config.model.checkpoint or ' + '.join(config.model.backbones())} "
        f"({config.model.implementation}, {config.model.dtype}); {trainable}",
        f"adapters: {config.adapters.method}"
        + ("" if config.adapters.method == "none" else f" r={config.adapters.r} alpha={config.adapters.alpha}")
        + f"; NEFTune alpha {config.train.neftune_alpha or 'off'}",
        f"device: {device} x {parallel.world} process(es)"
        + (f" ({config.train.parallelism})" if parallel.enabled else "")
        + f", precision {'bf16 autocast' if amp else 'fp32'}",
        f"batch: {data.batch_size} x {config.train.grad_accum} accumulation x {parallel.world} = {per_step} "
        f"sequences/step, {config.train.steps} steps" + (", packed" if data.packing else ""),
        "sources:",
    ]
    for source in loader.sources:
        lines.append(
            f"  {source.config.name:<14} {source.config.kind:<12} {100 * source.share:5.1f}%  "
            f"{len(source.shards)} shard(s), max {source.config.max_seq_len} tokens"
        )
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    """Tuples as lists, for YAML/JSON."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
