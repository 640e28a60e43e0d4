"""`curate pairs`: image-text pairs with a high-recall NSFW filter, score/select/write.

Phases (resumable, keyed by input partition):
1. download  - URL-list partitions (LAION COCO style) are fetched with img2dataset into
               `staging/<partition>/`; a rerun reuses every completed staged shard.
2. score     - a pool of NSFW actors (CLIP embeddings + the LAION head, or the input's `punsafe` column)
               writes `scores/<partition>.parquet`: id, nsfw score, or the reason a pair could not be
               scored; an existing sidecar with the same settings, made from the same input file (its
               identity, `input`), is reused.
3. select    - `--drop-top-nsfw F` (exact global top fraction) and/or `--nsfw-threshold T`.
4. write     - tasks write the surviving pairs as one-image samples; everything else is ledgered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from curation.errors import Rejection, SampleError, UserError
from curation.images import DEFAULT_MAX_PIXELS
from curation.ledger import LedgerEntry, write_ledger
from curation.pairs.clip_embedder import ClipConfig
from curation.pairs.download import DownloadOptions, download_pairs, iter_staged_pairs
from curation.pairs.nsfw import (
    NSFW_FRACTION_REASON,
    NSFW_SCORE,
    NSFW_THRESHOLD_REASON,
    ClipNsfwClassifier,
    ScoredPairs,
    column_scores,
    score_pairs,
)
from curation.pairs.pair import CaptionSource, Pair, PairColumns
from curation.pairs.samples import ImageFormat, pair_sample
from curation.pairs.sidecars import ScoreRow, SidecarWriter, iter_sidecar, keys_of, sidecar_keys
from curation.pairs.sources import iter_parquet_pairs, iter_webdataset_pairs
from curation.pairs.staging_sync import staged_locally
from curation.readers import Partition, UnreadableRows, count_rows, discover_partitions, input_columns, iter_batches_checked
from curation.selection import DropRule
from curation.shards import PartitionShardWriter, list_tar
from curation.steps import Step, Steps
from curation.storage import StoragePath, read_parquet_metadata, stat_key
from pipelines.errors import PartitionAccountingError, PipelineError
from pipelines.partitioned import (
    PARTITION_ERRORS,
    PartitionFailures,
    describe_failure,
    fingerprint,
    gather,
    keyed_by_inputs,
    write_partitions,
)
from pipelines.report import RunReport, finish_report
from pipelines.runtime import plan_model_actors, ray_runtime
from pipelines.selection import ScoreSelection, select_scores

InputKind = Literal["auto", "urls", "bytes", "wds"]
SCORE_CHUNK = 256


HEAD_REQUIRED = "--nsfw-head is required with --nsfw-source model (convert the released weights with `curate nsfw-convert`)"


@dataclass(frozen=True)
class PairsConfig:
    inputs: list[StoragePath]
    output: StoragePath
    input_kind: InputKind = "auto"
    columns: PairColumns = field(default_factory=PairColumns)
    caption: CaptionSource = "synthetic"
    download: DownloadOptions = field(default_factory=DownloadOptions)
    nsfw_source: Literal["model", "column"] = "model"
    clip: ClipConfig = field(default_factory=ClipConfig)
    nsfw_head: Path | None = None
    drop_top_nsfw: float | None = None
    nsfw_threshold: float | None = None
    image_format: ImageFormat = "jpg"
    max_pixels: int = DEFAULT_MAX_PIXELS
    embeddings: bool = False
    samples_per_shard: int = 1000
    ray_address: str | None = None
    num_cpus: int | None = None
    nsfw_actors: int | None = None
    nsfw_cpus_per_actor: float | None = None
    steps: tuple[Step[Pair], ...] = ()  # the user's cleaning steps, run on each pair before scoring

    def head_path(self) -> Path:
        """The NSFW head file, which `nsfw_source: model` needs."""
        if self.nsfw_head is None:
            raise PipelineError(HEAD_REQUIRED)
        return self.nsfw_head

    def scoring_fingerprint(self) -> str:
        model = (asdict(self.clip) | {"device": None, "batch_size": None, "preprocess_threads": None, "compile": None}, str(self.nsfw_head))
        parts = (
            self.nsfw_source,
            model if self.nsfw_source == "model" else None,
            self.caption,
            self.max_pixels,
            asdict(self.columns),
            asdict(self.download),
        )
        steps = Steps(self.steps).fingerprint()  # the sidecar holds the pairs the steps kept
        return fingerprint(*parts, steps) if steps else fingerprint(*parts)


def partition_kind(config: PairsConfig, partition: Partition) -> InputKind:
    if config.input_kind != "auto":
        return config.input_kind
    if partition.path.suffix == ".tar":
        return "wds"
    return "bytes" if config.columns.image in input_columns(partition.path) else "urls"


def input_units(config: PairsConfig, partition: Partition) -> int:
    """The partition's input count from the input itself: the file's row count, or its tar listing."""
    if partition_kind(config, partition) == "wds":
        return list_tar(partition.path).units
    return count_rows(partition.path).units


def _staging(config: PairsConfig, partition: Partition) -> StoragePath:
    return config.output / "staging" / partition.name


def iter_pairs(config: PairsConfig, partition: Partition) -> Iterator[Pair | Rejection]:
    """Every input row of the partition once, as a Pair or a Rejection naming it (the same on every call)."""
    kind = partition_kind(config, partition)
    prefix = f"{partition.name}/"
    if kind == "urls":
        yield from iter_staged_pairs(_staging(config, partition), caption=config.caption)
    elif kind == "bytes":
        yield from iter_parquet_pairs(partition.path, columns=config.columns, caption=config.caption, id_prefix=prefix)
    else:
        yield from iter_webdataset_pairs(partition.path, columns=config.columns, caption=config.caption, id_prefix=prefix)


def clean_pairs(config: PairsConfig, partition: Partition) -> Iterator[Pair | LedgerEntry]:
    """Every input row once: a Pair the user's steps kept, or its ledger row (stage `input`, or the step's)."""
    steps = Steps(config.steps)
    for item in iter_pairs(config, partition):
        if isinstance(item, Rejection):
            yield LedgerEntry.of(item, partition.name, "input")
            continue
        outcome = steps.run(item, partition.name)
        if outcome.removed:
            raise UserError(f"a step removed parts of pair {item.id}; steps of pairs keep or reject a pair whole")
        yield outcome.sample if outcome.dropped is None else outcome.dropped


def _chunks(items: Iterator[Pair | LedgerEntry], size: int) -> Iterator[tuple[list[Pair | LedgerEntry], list[Pair]]]:
    """The items in order, cut after `size` pairs or `4 * size` items; each chunk with its pairs."""
    chunk: list[Pair | LedgerEntry] = []
    pairs: list[Pair] = []
    for item in items:
        chunk.append(item)
        if not isinstance(item, LedgerEntry):
            pairs.append(item)
        if len(pairs) >= size or len(chunk) >= 4 * size:
            yield chunk, pairs
            chunk, pairs = [], []
    if chunk:
        yield chunk, pairs


def _ordered_rows(chunk: list[Pair | LedgerEntry], scored: ScoredPairs) -> list[ScoreRow]:
    """One sidecar row per item, in the chunk's order (scoring keeps the order of its scored and of its
    rejected pairs, so each pair is the head of one of the two)."""
    scores = iter(zip(scored.ids, scored.scores.tolist(), strict=True))
    rejections = iter(scored.rejected)
    score, rejection = next(scores, None), next(rejections, None)
    rows = []
    for item in chunk:
        if isinstance(item, LedgerEntry):
            rows.append(ScoreRow(item.id, None, item.reason, item.detail))
        elif score is not None and score[0] == item.id:
            rows.append(ScoreRow(item.id, float(score[1])))
            score = next(scores, None)
        elif rejection is not None and rejection.id == item.id:
            rows.append(ScoreRow(item.id, None, rejection.reason, rejection.detail))
            rejection = next(rejections, None)
        else:
            raise ValueError(f"pair {item.id!r} came back from scoring neither scored nor rejected")
    return rows


def url_rows(config: PairsConfig, partition: Partition) -> Iterator[dict[str, Any] | UnreadableRows]:
    """A URL list's rows with the configured columns only (LAION COCO's `all_captions` and the like are
    never decoded), unreadable spans in their place."""
    c = config.columns
    names = [n for n in (c.url, c.alt_text, c.synthetic_caption, c.punsafe, c.width, c.height, c.id) if n]
    for batch in iter_batches_checked(partition.path, names):
        if isinstance(batch, UnreadableRows):
            yield batch
        else:
            yield from batch.to_pylist()


def download_partition(config: PairsConfig, partition: Partition) -> dict:
    rows = url_rows(config, partition)
    with staged_locally(_staging(config, partition)) as staging:  # on object storage: published shard by shard
        summary = download_pairs(
            rows, staging.path, columns=config.columns, options=config.download, id_prefix=f"{partition.name}/", on_shard=staging.shard_done
        )
    return asdict(summary)


class NsfwActor:
    """Scores a partition's pairs into its sidecar (and embeddings when asked)."""

    def __init__(self, config: PairsConfig, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.config = config
        self.classifier = None
        if config.nsfw_source == "model":
            clip = ClipConfig(**(asdict(config.clip) | {"preprocess_threads": threads}))
            self.classifier = ClipNsfwClassifier.load(config.head_path(), clip)

    def score_partition(self, partition: Partition) -> dict:
        """Score stats, or `{"partition", "failed": why}` when the partition cannot be read at all."""
        try:
            return self._score(partition)
        except PARTITION_ERRORS as exc:
            return {"partition": partition.name, "failed": describe_failure(exc)}

    def _score(self, partition: Partition) -> dict:
        started = time.perf_counter()
        path = self.config.output / "scores" / f"{partition.name}.parquet"
        keys = sidecar_keys(self.config.scoring_fingerprint(), stat_key(partition.path))
        embeddings = None
        if self.classifier is not None and self.config.embeddings:
            embeddings = self.config.output / "embeddings" / f"{partition.name}.parquet"
        if all(p.exists() and keys_of(p) == keys for p in (path, embeddings) if p is not None):
            return {"partition": partition.name, "scored": 0, "reused": read_parquet_metadata(path).num_rows, "seconds": 0.0}
        input_units(self.config, partition)  # an unusable input fails here, before any selection (a tar: a listing)
        dim = self.classifier.embedder.embedding_dim if self.classifier is not None else 0
        scored_count = 0
        with SidecarWriter(path, keys, embeddings, dim) as sidecar:
            for chunk, pairs in _chunks(clean_pairs(self.config, partition), SCORE_CHUNK):
                scored = self._score_pairs(pairs)
                sidecar.write(_ordered_rows(chunk, scored), scored.ids, scored.embeddings)
                scored_count += len(scored.ids)
        return {"partition": partition.name, "scored": scored_count, "reused": 0, "seconds": time.perf_counter() - started}

    def _score_pairs(self, pairs: list[Pair]) -> ScoredPairs:
        if self.classifier is None:
            return column_scores(pairs)
        if not pairs:
            return ScoredPairs([], np.empty(0, dtype=np.float32), None, [])
        return score_pairs(pairs, self.classifier, max_pixels=self.config.max_pixels, with_embeddings=self.config.embeddings)


def write_pairs_partition(config: PairsConfig, rule: DropRule, note: str, partition: Partition, run_fingerprint: str) -> dict:
    """Write the partition's kept pairs, reading its score sidecar in step with the input (a batch at a
    time); a sidecar that does not follow the input fails the partition."""
    n_input = input_units(config, partition)
    path = config.output / "scores" / f"{partition.name}.parquet"
    sidecar = iter_sidecar(path, rule)
    writer = PartitionShardWriter(config.output / "shards", partition.name, config.samples_per_shard)
    ledger: list[LedgerEntry] = []
    for item in clean_pairs(config, partition):
        scored = next(sidecar, None)
        if scored is None or scored.row.id != item.id:
            found = "its end" if scored is None else repr(scored.row.id)
            raise PartitionAccountingError(f"{path} does not follow the input: {found} where {item.id!r} is; delete it to score again")
        row = scored.row
        if isinstance(item, LedgerEntry):
            ledger.append(item)
        elif row.nsfw is None:
            if not row.reason:
                raise PartitionAccountingError(f"{path}: {item.id!r} has neither a score nor a reason; delete it to score again")
            ledger.append(LedgerEntry(item.id, partition.name, "nsfw", row.reason, row.detail or ""))
        elif scored.drop is not None:
            ledger.append(LedgerEntry(item.id, partition.name, "nsfw", scored.drop, f"nsfw {row.nsfw:.4g}; {note}"))
        else:
            item.scores[NSFW_SCORE] = row.nsfw
            try:
                writer.write(pair_sample(item, image_format=config.image_format, max_pixels=config.max_pixels))
            except SampleError as exc:
                ledger.append(LedgerEntry(item.id, partition.name, "write", exc.reason, exc.detail))
    if (extra := next(sidecar, None)) is not None:
        raise PartitionAccountingError(f"{path} does not follow the input: {extra.row.id!r} after its last pair")
    dropped_by_reason = write_ledger(config.output / "ledger" / f"{partition.name}.parquet", ledger)
    return writer.close(input=n_input, dropped=len(ledger), dropped_by_reason=dropped_by_reason, fingerprint=run_fingerprint)


def _select(config: PairsConfig, partitions: list[Partition]) -> ScoreSelection:
    return select_scores(
        config.output / "scores",
        partitions,
        "nsfw",
        top_fraction=config.drop_top_nsfw,
        max_score=config.nsfw_threshold,
        fraction_reason=NSFW_FRACTION_REASON,
        threshold_reason=NSFW_THRESHOLD_REASON,
    )


def _check(config: PairsConfig) -> list[Partition]:
    Steps(config.steps).fingerprint()  # a bad step list is refused before any work
    if config.nsfw_source == "model" and config.nsfw_head is None:
        raise PipelineError(HEAD_REQUIRED)
    if config.nsfw_head is not None and not config.nsfw_head.is_file():
        raise PipelineError(f"NSFW head not found: {config.nsfw_head}")
    try:
        return discover_partitions(config.inputs, suffixes=(".parquet", ".arrow", ".tar"))
    except (FileNotFoundError, UserError) as exc:
        raise PipelineError(str(exc)) from None


def _download(config: PairsConfig, partitions: list[Partition], failures: PartitionFailures, report: RunReport) -> None:
    import ray

    url_parts = []
    for part in partitions:
        try:
            if partition_kind(config, part) == "urls":
                url_parts.append(part)
        except PARTITION_ERRORS as exc:
            failures.add(part.name, describe_failure(exc))
    if not url_parts:
        return
    download = ray.remote(num_cpus=1)(download_partition)
    jobs = [(p.name, partial(download.remote, config, p)) for p in url_parts]
    summaries = [summary for _, summary in gather(jobs, failures, "download (img2dataset)")]
    report.extra["download"] = {k: sum(s[k] for s in summaries) for k in ("rows", "queued", "rejected", "shards_downloaded")}


def _score(config: PairsConfig, partitions: list[Partition], failures: PartitionFailures, report: RunReport) -> None:
    import ray
    from ray.util import ActorPool

    plan = plan_model_actors(config.nsfw_actors, config.nsfw_cpus_per_actor)
    actor = ray.remote(num_cpus=plan.cpus_per_actor, num_gpus=plan.gpus_per_actor)(NsfwActor)
    pool = ActorPool([actor.remote(config, plan.torch_threads) for _ in range(plan.actors)])
    scored = reused = 0
    seconds = 0.0
    scoring = pool.map_unordered(lambda a, p: a.score_partition.remote(p), partitions)
    for stats in tqdm(scoring, total=len(partitions), desc="nsfw scores", unit="part"):
        if "failed" in stats:
            failures.add(stats["partition"], stats["failed"])
            continue
        scored += stats["scored"]
        reused += stats["reused"]
        seconds += stats["seconds"]
    report.scoring = {"scored": scored, "reused_rows": reused, "seconds": seconds, "images_per_s": scored / seconds if seconds else None}


def run_pairs(config: PairsConfig) -> dict:
    partitions = _check(config)
    config.output.mkdir(parents=True, exist_ok=True)
    report = RunReport("pairs", config.output, partitions=len(partitions))
    failures = PartitionFailures(config.output)
    with ray_runtime(config.ray_address, config.num_cpus):
        _download(config, partitions, failures, report)
        _score(config, [p for p in partitions if p.name not in failures], failures, report)
        failures.raise_if_any("score")  # a global selection needs every partition's scores
        selection = _select(config, partitions)
        cutoff = selection.rule.cutoff
        parts = []
        if cutoff is not None:
            parts.append(f"cutoff nsfw {cutoff:.4g} (top {config.drop_top_nsfw:.2%})")
        if config.nsfw_threshold is not None:
            parts.append(f"threshold {config.nsfw_threshold}")
        run_key = (config.scoring_fingerprint(), config.image_format, config.samples_per_shard)
        jobs = keyed_by_inputs(selection.jobs(partitions, run_key), {p.name: [p.path] for p in partitions})
        shared = (config, selection.rule, "; ".join(parts))
        write_partitions(write_pairs_partition, jobs, config.output / "shards", report, shared=shared)
    report.selection = selection.summary(drop_top_nsfw=config.drop_top_nsfw, nsfw_threshold=config.nsfw_threshold)
    if config.nsfw_source == "model":
        weights = config.clip.pretrained or "random weights"
        report.extra["detector"] = f"open_clip {config.clip.model} ({weights}) + {config.head_path().name}"
    return finish_report(report, scores=selection.scores, cutoff=cutoff, score_name="nsfw", log_x=False)
