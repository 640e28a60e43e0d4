"""Evaluation during training (`eval.every`): validation loss on held-out shards, and optionally the
score of a small benchmark subset.

Validation loss is the token-weighted mean answer/text loss of each held-out source, over the same
samples every time: its shards read in order (no shuffling, no mixing), at most `eval.max_batches`
batches per rank. Under `torchrun` each rank reads its share (whole shards when there are enough,
else every n-th sample) and the sums are combined, so the number does not depend on the world size
when all samples are read. The ranks run their forwards in lockstep, as FSDP's gathers need: as many
as the rank with the most batches, a rank that has run out running a one-token filler batch whose
loss is not counted. The loss is computed as in training (potion's model: target positions only,
chunk by chunk, no full logits). Held-out samples that cannot be encoded are skipped, and so is the
rest of a damaged held-out shard (as in training); the record counts both per source, summed over
ranks (`val_skipped/<source>`: samples, plus one per damaged shard). Benchmarks run on rank 0 with the paper's protocol on the first
`eval.benchmark_limit` items. Results go to the metrics file (records with `"kind": "eval"`), the
console and TensorBoard when it is on.

While rank 0 runs benchmarks the other ranks wait at a barrier of their own (`RankZeroWork`), on a
gloo group whose timeout is `eval.benchmark_timeout_minutes`: waiting in the next training collective
instead would end the run once a benchmark outlasts the process group's timeout (NCCL's 10 minutes).
"""

from __future__ import annotations

import contextlib
import logging
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from cauldron.chat import IGNORE_INDEX
from curation.errors import SampleError
from curation.shards import iter_tar_samples
from curation.storage import StoragePath
from training.config import SourceConfig, TrainConfig
from training.data import SampleEncoder, Source, collate, resolve_shards
from training.factory import image_seq_len
from training.processor import Encoded, Processor

if TYPE_CHECKING:
    from training.evaluation.registry import Registry
    from training.loop import Distributed


log = logging.getLogger(__name__)


def _rank_samples(shards: list[StoragePath], rank: int, world: int, skipped: Counter[str]) -> Iterator[dict[str, Any]]:
    whole = len(shards) >= world
    index = 0
    for shard in shards[rank::world] if whole else shards:
        try:
            for sample in iter_tar_samples(shard):
                if whole or index % world == rank:
                    yield sample
                index += 1
        except tarfile.TarError as error:  # DamagedTarError and UnsafeTarError among them
            log.warning("held-out shard %s unreadable (%s); rest skipped", shard, error)
            skipped["damaged_shard"] += 1


def held_out_batches(
    config: TrainConfig, processor: Processor, source: SourceConfig, rank: int, world: int, skipped: Counter[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Collated batches of one held-out source for this rank; samples that cannot be encoded are skipped
    and counted in `skipped` per reason, and so are damaged shards (`damaged_shard`)."""
    skipped = Counter() if skipped is None else skipped
    shards = resolve_shards(source.shards)
    if not shards:
        raise FileNotFoundError(f"eval source {source.name!r}: no shard matches {source.shards}")
    encoder = SampleEncoder(config, processor)
    holder = Source(source, shards, 1.0)
    size = config.eval.batch_size or config.data.batch_size
    batch: list[Encoded] = []
    produced = 0
    for sample in _rank_samples(shards, rank, world, skipped):
        try:
            batch.append(encoder(holder, sample, 0)[0])
        except SampleError as error:
            skipped[error.reason] += 1
            continue
        if len(batch) == size:
            yield collate(batch, processor.pad_token_id)
            batch, produced = [], produced + 1
            if config.eval.max_batches and produced >= config.eval.max_batches:
                return
    if batch:
        yield collate(batch, processor.pad_token_id)


def filler_batch(processor: Processor) -> dict[str, Any]:
    """One padding token without a target: the forward a rank runs while others still have batches."""
    return collate([Encoded(torch.tensor([processor.pad_token_id]), torch.tensor([IGNORE_INDEX]))], processor.pad_token_id)


def in_lockstep(
    batches: Iterator[dict[str, Any]], filler: dict[str, Any], parallel: Distributed, device: torch.device
) -> Iterator[tuple[dict[str, Any], bool]]:
    """(batch, counted) until no rank has a batch left: every rank yields as many batches as the rank
    with the most, `filler` (not counted) once its own have run out."""
    while True:
        batch = next(batches, None)
        (remaining,) = parallel.sum([float(batch is not None)], device)
        if not remaining:
            return
        yield (batch, True) if batch is not None else (filler, False)


class RankZeroWork:
    """Work rank 0 does alone: `done()` holds the other ranks at a barrier whose timeout is `minutes`,
    not the process group's, until rank 0 arrives. Every rank must construct it (it creates a group)."""

    def __init__(self, parallel: Distributed, minutes: float) -> None:
        group = dist.new_group(backend="gloo", timeout=timedelta(minutes=minutes)) if parallel.enabled else None
        self.group = group if isinstance(group, dist.ProcessGroup) else None  # every rank is a member

    def done(self) -> None:
        if self.group is not None:
            dist.barrier(group=self.group)


class TrainingEvaluation:
    """Runs every `eval.every` steps (and at the last step) on the training model, then restores train mode."""

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        processor: Processor,
        tokenizer: Any,
        parallel: Distributed,
        device: torch.device,
        amp: torch.dtype | None,
    ) -> None:
        from training.evaluation.registry import load_registry

        self.config, self.model, self.processor, self.tokenizer = config, model, processor, tokenizer
        self.parallel, self.device, self.amp = parallel, device, amp
        self.registry = load_registry() if config.eval.benchmarks else None
        self.benchmarks_wait = RankZeroWork(parallel, config.eval.benchmark_timeout_minutes) if config.eval.benchmarks else None

    def due(self, step: int) -> bool:
        every = self.config.eval.every
        return bool(every) and (step % every == 0 or step == self.config.train.steps)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()

    def validation_losses(self) -> dict[str, float]:
        from training.loop import loss_only_kwargs, to_device

        record: dict[str, float] = {}
        totals = [0.0, 0.0]
        filler = filler_batch(self.processor)
        for source in self.config.eval.sources:
            loss_sum, targets = 0.0, 0.0
            skipped: Counter[str] = Counter()
            batches = held_out_batches(self.config, self.processor, source, self.parallel.rank, self.parallel.world, skipped)
            for batch, counted in in_lockstep(batches, filler, self.parallel, self.device):
                with self.autocast():
                    output = self.model(**to_device(batch, self.device), num_items_in_batch=1, **loss_only_kwargs(self.model))
                if counted:
                    loss_sum += float(output.loss)
                    targets += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            loss_sum, targets, dropped = self.parallel.sum([loss_sum, targets, sum(skipped.values())], self.device)
            record[f"val_loss/{source.name}"] = loss_sum / targets if targets else float("nan")
            record[f"val_skipped/{source.name}"] = int(dropped)
            totals = [totals[0] + loss_sum, totals[1] + targets]
        if self.config.eval.sources:
            record["val_loss"] = totals[0] / totals[1] if totals[1] else float("nan")
            record["val_targets"] = int(totals[1])
        return record

    def benchmark_scores(self, registry: Registry) -> dict[str, float | None]:
        from training.evaluation.models import EvalModel, generate_fn
        from training.evaluation.prompts import PromptSettings
        from training.evaluation.registry import benchmark_paths
        from training.evaluation.runner import BenchmarkRun, RunSettings

        generate = generate_fn(self.model, self.config.model.implementation)
        latents = image_seq_len(self.model)
        model = EvalModel(generate, self.tokenizer, self.config.images, latents, self.device, "training model")
        settings = RunSettings(
            batch_size=self.config.eval.batch_size or self.config.data.batch_size,
            limit=self.config.eval.benchmark_limit,
            prompt=PromptSettings(
                self.config.eval.benchmark_style, image_seq_len=latents, image_splitting=self.config.images.image_splitting
            ),
        )
        scores = {}
        for benchmark, path in benchmark_paths(self.config.eval.benchmarks, "eval.benchmarks", registry):
            with self.autocast():
                result = BenchmarkRun(model, registry.protocol, benchmark, path, settings).run(None)
            scores[f"bench/{benchmark.name}"] = result.score
        return scores

    def __call__(self, step: int) -> dict[str, Any]:
        started = time.perf_counter()
        self.model.eval()
        try:
            with torch.no_grad():
                record: dict[str, Any] = {"step": step, "kind": "eval", **self.validation_losses()}
                if self.registry is not None and self.parallel.main:
                    record.update(self.benchmark_scores(self.registry))
                if self.benchmarks_wait is not None:
                    self.benchmarks_wait.done()
        finally:
            self.model.train()
        record["seconds"] = time.perf_counter() - started
        return record
