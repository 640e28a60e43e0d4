"""`curate obelics`: opt-out removal and perplexity pruning of OBELICS documents, score/select/write.

Phases (each resumable, each keyed by input partition):
1. opt-out check  - image URLs of every partition go through the Spawning API (with its URL cache);
                    do-not-train lists need no request.
2. score          - a pool of perplexity actors cleans each partition (parse, image checks, language id,
                    opt-out), keeps the result in `cleaned/<partition>/` (`curation/cleaned_store.py`)
                    and scores the surviving documents into `scores/<partition>.parquet`. A score already
                    in a sidecar (same model settings, same text: its `text_hash`) is reused, not
                    recomputed; a sidecar made from the same input file (its identity, `input`), cleaning
                    and model settings needs no cleaning at all.
3. select         - the exact global top fraction and/or an absolute threshold over all scores.
4. write          - tasks read the stored cleaning (or, when it is missing or stale, re-run the
                    deterministic cleaning), drop selected documents, download the kept documents'
                    URL-only images (`--images download`, `curation/obelics_images.py`), write shards,
                    ledger and removed-image lists, and finally the partition manifest; then the stored
                    cleaning of the partition is deleted.
5. report         - counts (input = kept + dropped), realised cutoff, histogram.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from curation.atomic import write_parquet
from curation.cleaned_store import (
    Cleaned,
    cleaning_key,
    open_cleaned,
    remove_cleaned,
    save_cleaned,
)
from curation.documents import InterleavedDocument
from curation.errors import SampleError, UserError
from curation.interleaved_format import document_to_sample
from curation.langid import LanguageIdentifier
from curation.ledger import LedgerEntry, write_ledger
from curation.obelics import CleaningSettings, clean_partition, cleaning_steps
from curation.obelics_images import NO_IMAGES_LEFT, ImageTally, stage_document_images, with_staged_images
from curation.obelics_parquet import ObelicsParquetWriter
from curation.obelics_urls import partition_image_urls
from curation.optout import OptOutVerdicts, SpawningAnswers, merge_answers, query_spawning
from curation.optout_lists import DoNotTrainList
from curation.optout_store import answers_key, load_answers, save_answers
from curation.pairs.download import DownloadOptions
from curation.perplexity import PerplexityConfig
from curation.readers import Partition, discover_partitions
from curation.selection import DropRule
from curation.shards import PartitionShardWriter
from curation.spawning import SpawningAuthError, SpawningClient, SpawningConfig, SpawningUnavailable
from curation.steps import Step
from curation.storage import ObjectPath, StoragePath, local_only, read_parquet, read_parquet_metadata, stat_key
from curation.url_cache import UrlVerdictCache
from pipelines.errors import PipelineError, RunFailed
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
from pipelines.selection import ScoreSelection, partition_drops, select_scores

ANSWERS_FILE = "optout_answers.parquet"  # the merged Spawning answers, reused by a rerun (curation/optout_store.py)
URL_CHUNK = 100_000  # image URLs checked against the Spawning API per round
SCORE_SCHEMA = pa.schema(
    [("id", pa.string()), ("perplexity", pa.float64()), ("nll_sum", pa.float64()), ("n_tokens", pa.int64()), ("text_hash", pa.binary(8))]
)


@dataclass(frozen=True)
class ObelicsConfig:
    inputs: list[StoragePath]
    output: StoragePath
    ppl: PerplexityConfig = field(default_factory=PerplexityConfig)
    drop_top_ppl: float | None = 0.05
    max_ppl: float | None = None
    do_not_train: list[StoragePath] = field(default_factory=list)
    spawning: SpawningConfig | None = None
    optout_cache: StoragePath | None = None
    recheck_after_days: float | None = None
    cleaning: CleaningSettings = field(default_factory=CleaningSettings)
    lid_model: Path | None = None
    docs_per_shard: int = 1000
    parquet_output: bool = False
    ray_address: str | None = None
    num_cpus: int | None = None
    ppl_actors: int | None = None
    ppl_cpus_per_actor: float | None = None
    images: Literal["download", "keep-urls"] = "download"
    download: DownloadOptions = field(default_factory=DownloadOptions)
    min_images: int = 1
    steps: tuple[Step[InterleavedDocument], ...] = ()  # the user's cleaning steps, run after the built-in ones
    keep_cleaned: bool = True  # off: no cleaned copy on disk between the phases; the write phase cleans again

    def scoring_fingerprint(self) -> str:
        ppl = asdict(self.ppl)
        for setting in ("batch_tokens", "device", "compile", "attention"):  # how scores are computed, not what they are
            ppl.pop(setting)
        text_steps = [step.fingerprint() for step in self.steps if step.changes_text]  # scores are of the cleaned text
        return fingerprint(ppl, text_steps) if text_steps else fingerprint(ppl)

    def cleaning_fingerprint(self, verdicts: OptOutVerdicts) -> list[dict]:
        """Each cleaning step's name and settings, built-in and the user's."""
        return cleaning_steps(self.cleaning, verdicts, self.lid_model, self.steps).fingerprint()


def _paths(output: StoragePath) -> dict[str, StoragePath]:
    return {name: output / name for name in ("shards", "scores", "ledger", "removed_images", "parquet", "cleaned")}


def _cleaning_key(config: ObelicsConfig, verdicts: OptOutVerdicts, partition: Partition) -> str:
    return cleaning_key(partition.path, config.cleaning_fingerprint(verdicts), verdicts.fingerprint(), config.lid_model)


def text_hash(text: str) -> bytes:
    """The 8-byte blake2b of a document's scored text: a score is reused only for the very text it scored."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _read_scores(path: StoragePath, scoring: str) -> dict[tuple[str, bytes], tuple[float, int]]:
    """Scores already in a sidecar made with the same scoring settings, by (id, text_hash): a document
    whose text changed under the same id (its input file was replaced) is scored again."""
    if not path.exists():
        return {}
    table = read_parquet(path)
    if (table.schema.metadata or {}).get(b"scoring") != scoring.encode() or "text_hash" not in table.column_names:
        return {}
    columns = (table.column(c).to_pylist() for c in ("id", "text_hash", "nll_sum", "n_tokens"))
    return {(i, h): (nll, n) for i, h, nll, n in zip(*columns, strict=True)}


def _finished_sidecar_rows(path: StoragePath, scoring: str, cleaning: str, input_key: str) -> int | None:
    """Rows of a sidecar made from this very input file and cleaning with these scoring settings (it is
    complete), else None."""
    if not path.exists():
        return None
    footer = read_parquet_metadata(path)  # one footer read for both the keys and the row count
    metadata = footer.schema.to_arrow_schema().metadata or {}
    wanted = {b"scoring": scoring, b"cleaning": cleaning, b"input": input_key}
    if any(metadata.get(name) != value.encode() for name, value in wanted.items()):
        return None
    return footer.num_rows


class PerplexityActor:
    """Cleans a partition, keeps the cleaning for the write phase, and scores its surviving documents;
    scores and cleanings already on disk are reused."""

    def __init__(self, config: ObelicsConfig, verdicts: OptOutVerdicts, threads: int):
        import torch

        from curation.perplexity_model import PerplexityScorer

        torch.set_num_threads(threads)
        self.config = config
        self.verdicts = verdicts
        self.langid = LanguageIdentifier(config.lid_model) if config.lid_model else None
        self.scorer = PerplexityScorer.load(config.ppl)

    def score_partition(self, partition: Partition) -> dict:
        """Scoring stats, or `{"partition", "failed": why}` when the partition cannot be read at all."""
        try:
            return self._score(partition)
        except PARTITION_ERRORS as exc:
            return {"partition": partition.name, "failed": describe_failure(exc)}

    def _score(self, partition: Partition) -> dict:
        started = time.perf_counter()
        scoring = self.config.scoring_fingerprint()
        key = _cleaning_key(self.config, self.verdicts, partition)
        input_key = stat_key(partition.path)
        path = _paths(self.config.output)["scores"] / f"{partition.name}.parquet"
        finished = _finished_sidecar_rows(path, scoring, key, input_key)
        if finished is not None:
            return {
                "partition": partition.name,
                "documents": finished,
                "scored": 0,
                "tokens": 0,
                "cleaned": 0,
                "seconds": time.perf_counter() - started,
            }
        cleaned, cleaned_now = _partition_cleaning(self.config, self.verdicts, partition, key, self.langid, save=self.config.keep_cleaned)
        known = _read_scores(path, scoring)
        docs = [((d.id, text_hash(d.text)), d.text) for d in cleaned.documents]
        missing = [(doc, text) for doc, text in docs if doc not in known]
        for (doc, _), score in zip(missing, self.scorer.score_texts([text for _, text in missing]), strict=True):
            known[doc] = (score.nll_sum, score.n_tokens)
        rows = [known[doc] for doc, _ in docs]
        table = pa.table(
            {
                "id": [i for (i, _), _ in docs],
                "perplexity": [float(np.exp(nll / n)) if n else float("nan") for nll, n in rows],
                "nll_sum": [nll for nll, _ in rows],
                "n_tokens": [n for _, n in rows],
                "text_hash": [h for (_, h), _ in docs],
            },
            schema=SCORE_SCHEMA.with_metadata({"scoring": scoring, "cleaning": key, "input": input_key}),
        )
        write_parquet(path, table)  # an empty sidecar too: selection reads it
        return {
            "partition": partition.name,
            "documents": len(docs),
            "scored": len(missing),
            "tokens": sum(known[doc][1] for doc, _ in missing),
            "cleaned": int(cleaned_now),
            "seconds": time.perf_counter() - started,
        }


def _partition_cleaning(
    config: ObelicsConfig,
    verdicts: OptOutVerdicts,
    partition: Partition,
    key: str,
    langid: LanguageIdentifier | Path | None,
    save: bool,
) -> tuple[Cleaned, bool]:
    """The partition's stored cleaning when its key matches, else the cleaning run now (the same result,
    kept for the write phase when `save`); and whether it was run now. A model path for `langid` is
    loaded only if the cleaning runs."""
    folder = _paths(config.output)["cleaned"] / partition.name
    stored = open_cleaned(folder, key)
    if stored is not None:
        return stored, False
    cleaned = clean_partition(partition.path, partition.name, config.cleaning, verdicts, langid, config.steps)
    if save:
        save_cleaned(folder, cleaned, key)
    return cleaned, True


def write_partition(
    config: ObelicsConfig,
    verdicts: OptOutVerdicts,
    rule: DropRule,
    cutoff_note: str,
    partition: Partition,
    run_fingerprint: str,
) -> dict:
    """Drop the documents the rule selects from the partition's cleaning; write shards, ledger, manifest.

    Documents stream from the stored cleaning; with `--images download` the kept ones are read once for
    their image URLs and again to be written, each with its staged images. The stored cleaning is
    deleted once the manifest is written.
    """
    paths = _paths(config.output)
    drops = partition_drops(rule, paths["scores"] / f"{partition.name}.parquet", "perplexity")
    key = _cleaning_key(config, verdicts, partition)
    cleaned, recleaned = _partition_cleaning(config, verdicts, partition, key, config.lid_model, save=False)
    ledger = list(cleaned.ledger)
    removed_images = list(cleaned.removed_images)
    writer = PartitionShardWriter(paths["shards"], partition.name, config.docs_per_shard)
    parquet = ObelicsParquetWriter(paths["parquet"] / f"{partition.name}.parquet") if config.parquet_output else None
    examples: list[dict[str, Any]] = []

    def write(doc: InterleavedDocument) -> None:
        try:
            writer.write(document_to_sample(doc))
        except SampleError as exc:  # two ids that make the same shard key
            ledger.append(LedgerEntry(doc.id, partition.name, "write", exc.reason, exc.detail))
            return
        if parquet is not None:
            parquet.write(doc)

    def ledgering_drops() -> Iterator[InterleavedDocument]:
        """The kept documents; the dropped ones are ledgered on the way."""
        for doc in cleaned.documents:
            if doc.id not in drops:
                yield doc
                continue
            reason, ppl = drops[doc.id]
            ledger.append(LedgerEntry(doc.id, partition.name, "perplexity", reason, f"ppl {ppl:.4g}; {cutoff_note}"))
            examples.append({"id": doc.id, "perplexity": ppl, "text": " ".join(doc.text.split())[:120]})

    downloaded: dict[str, int] = {}
    if config.images == "download":
        # Only the kept documents' images are requested (opt-outs already removed by cleaning). The kept
        # documents are read twice, for their URLs and then to be written, so that only about one staging
        # shard's images is in memory at a time.
        staging = config.output / "staging" / partition.name
        tally = ImageTally(requested=stage_document_images(ledgering_drops(), staging, config.download))
        for doc in with_staged_images((d for d in cleaned.documents if d.id not in drops), staging, tally, config.min_images):
            write(doc)
        removed_images += tally.removed_images
        ledger += [LedgerEntry(i, partition.name, "download", NO_IMAGES_LEFT, detail) for i, detail in tally.no_images_left]
        downloaded = {"requested": tally.requested, "downloaded": tally.downloaded}
    else:
        for doc in ledgering_drops():
            write(doc)
    dropped_by_reason = write_ledger(paths["ledger"] / f"{partition.name}.parquet", ledger)
    removed = pa.Table.from_pylist(
        removed_images,
        schema=pa.schema([("id", pa.string()), ("url", pa.string()), ("reason", pa.string()), ("detail", pa.string())]),
    )
    write_parquet(paths["removed_images"] / f"{partition.name}.parquet", removed)
    if parquet is not None:
        parquet.close()
    manifest = writer.close(
        input=cleaned.n_input,
        dropped=len(ledger),
        dropped_by_reason=dropped_by_reason,
        removed_images=dict(Counter(r["reason"] for r in removed_images)),
        images=downloaded,
        cleaning="recleaned" if recleaned else "stored",
        fingerprint=run_fingerprint,
        ppl_dropped_examples=sorted(examples, key=lambda e: -e["perplexity"])[:3],
    )
    remove_cleaned(paths["cleaned"] / partition.name)  # the manifest marks the partition done
    return manifest


def optout_cache_path(config: ObelicsConfig) -> Path:
    """The SQLite URL cache: a local file only (SQLite cannot live on object storage)."""
    if config.optout_cache is not None:
        return local_only(config.optout_cache, "--optout-cache (a SQLite file)")
    if isinstance(config.output, ObjectPath):
        raise UserError(
            f"--spawning with --output on object storage ({config.output}) needs --optout-cache PATH: "
            "the opt-out cache is a local SQLite file"
        )
    return config.output / "optout_cache.sqlite"


def _check_opt_out(config: ObelicsConfig, partitions: list[Partition], report: RunReport, failures: PartitionFailures) -> OptOutVerdicts:
    import ray

    lists = DoNotTrainList.from_files(config.do_not_train)
    report.optout["list_entries"] = len(lists)
    if config.spawning is None:
        return OptOutVerdicts(lists)
    recheck = config.recheck_after_days * 86400 if config.recheck_after_days is not None else None
    kept_path = config.output / ANSWERS_FILE
    key = answers_key(partitions, lists.fingerprint(), config.spawning.endpoint)
    kept = load_answers(kept_path, key, recheck)
    if kept is not None:  # a rerun over the same inputs, lists and endpoint: no URL collection, no query
        report.optout["answers_reused"] = 1
        report.optout["opted_out_by_api"] = len(kept.opted_out)
        report.optout["unchecked"] = 0
        return OptOutVerdicts(lists, kept.opted_out)
    cache = UrlVerdictCache(optout_cache_path(config))
    client = SpawningClient(config.spawning)
    fail_fast = config.cleaning.on_unchecked == "fail"
    answers: list[SpawningAnswers] = []
    stats: Counter[str] = Counter()

    def check(urls: list[str]) -> None:
        try:
            found, found_stats = query_spawning(urls, lists, client, cache, recheck, fail_fast=fail_fast)
        except SpawningAuthError as exc:
            raise PipelineError(f"the Spawning API refused the request: {exc}") from None
        except SpawningUnavailable as exc:
            raise RunFailed(
                f"an image URL could not be checked for opt-out ({exc}); answers so far are cached, so a rerun "
                "resumes; or pass --on-unchecked drop to ledger the documents of unchecked URLs"
            ) from None
        answers.append(found)
        stats.update(found_stats)

    # URLs are collected by tasks and checked in chunks as partitions finish, so the driver holds at most
    # about URL_CHUNK URL strings (answers are kept as 8-byte hashes); few tasks are in flight at once.
    collect = ray.remote(num_cpus=1)(partition_image_urls)
    window = max(2, int(ray.cluster_resources().get("CPU", 2)))
    jobs = [(p.name, partial(collect.remote, p.path)) for p in partitions]
    buffer: list[str] = []
    try:
        for _, urls in gather(jobs, failures, "Spawning opt-out check", window=window):
            buffer.extend(urls)
            if len(buffer) >= URL_CHUNK:
                check(buffer)
                buffer = []
        check(buffer)
    finally:
        cache.close()
    merged = merge_answers(answers)
    if not failures.failed:  # the answers cover every partition
        save_answers(kept_path, key, merged)
    report.optout.update(stats)
    report.optout["opted_out_by_api"] = len(merged.opted_out)
    report.optout["unchecked"] = len(merged.unchecked)
    return OptOutVerdicts(lists, merged.opted_out, merged.unchecked)


def _score(
    config: ObelicsConfig,
    partitions: list[Partition],
    verdicts: OptOutVerdicts,
    report: RunReport,
    failures: PartitionFailures,
) -> None:
    import ray
    from ray.util import ActorPool

    plan = plan_model_actors(config.ppl_actors, config.ppl_cpus_per_actor)
    actor_cls = ray.remote(num_cpus=plan.cpus_per_actor, num_gpus=plan.gpus_per_actor)(PerplexityActor)
    verdicts_ref = ray.put(verdicts)  # hash arrays: every actor reads them zero-copy from the object store
    pool = ActorPool([actor_cls.remote(config, verdicts_ref, plan.torch_threads) for _ in range(plan.actors)])
    results = pool.map_unordered(lambda actor, part: actor.score_partition.remote(part), partitions)
    cleaned = 0
    for stats in tqdm(results, total=len(partitions), desc="perplexity", unit="part"):
        if "failed" in stats:
            failures.add(stats["partition"], stats["failed"])
        else:
            report.add_scoring(stats)
            cleaned += stats["cleaned"]
    report.extra["partitions cleaned in the score phase"] = cleaned


def _select(config: ObelicsConfig, partitions: list[Partition]) -> ScoreSelection:
    return select_scores(
        _paths(config.output)["scores"],
        partitions,
        "perplexity",
        top_fraction=config.drop_top_ppl,
        max_score=config.max_ppl,
        fraction_reason="ppl_top_fraction",
        threshold_reason="ppl_above_max",
    )


def run_obelics(config: ObelicsConfig) -> dict:
    """Run the whole job; returns the report (also written to `<output>/report.json`)."""
    if config.drop_top_ppl is not None and not 0 <= config.drop_top_ppl < 1:
        raise PipelineError(f"--drop-top-ppl must be in [0, 1), got {config.drop_top_ppl}")
    if config.spawning is not None:
        optout_cache_path(config)  # refuse a cache on object storage before anything starts
    try:
        partitions = discover_partitions(config.inputs)
    except (FileNotFoundError, UserError) as exc:
        raise PipelineError(str(exc)) from None
    config.cleaning_fingerprint(OptOutVerdicts())  # a bad step list is refused before any work
    config.output.mkdir(parents=True, exist_ok=True)
    report = RunReport("obelics", config.output, partitions=len(partitions))
    failures = PartitionFailures(config.output)
    with ray_runtime(config.ray_address, config.num_cpus):
        verdicts = _check_opt_out(config, partitions, report, failures)
        _score(config, [p for p in partitions if p.name not in failures], verdicts, report, failures)
        failures.raise_if_any("score")  # a global selection needs every partition's scores
        selection = _select(config, partitions)
        cutoff = selection.rule.cutoff
        cutoff_note = f"cutoff ppl {cutoff:.3f} (top {config.drop_top_ppl:.2%})" if cutoff is not None else ""
        if config.max_ppl is not None:
            cutoff_note = "; ".join(filter(None, [cutoff_note, f"max ppl {config.max_ppl}"]))
        run_key = (
            config.scoring_fingerprint(),
            config.cleaning_fingerprint(verdicts),
            config.docs_per_shard,
            config.parquet_output,
            config.images,
            asdict(config.download),
            config.min_images,
        )
        jobs = keyed_by_inputs(selection.jobs(partitions, run_key), {p.name: [p.path] for p in partitions})
        shared = (config, verdicts, selection.rule, cutoff_note)
        write_partitions(write_partition, jobs, _paths(config.output)["shards"], report, shared=shared)
    # Every partition has its manifest now; a stored cleaning still here belongs to a partition whose
    # manifest was already current (its score phase cleaned it again), and is of no further use.
    remove_cleaned(_paths(config.output)["cleaned"])
    report.extra["partitions cleaned again in the write phase"] = sum(m.get("cleaning") == "recleaned" for m in report.manifests)
    report.selection = selection.summary(drop_top_ppl=config.drop_top_ppl, max_ppl=config.max_ppl)
    return finish_report(report, scores=selection.scores, cutoff=cutoff, score_name="perplexity")
