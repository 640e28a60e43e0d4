"""`curate cauldron build` and `curate cauldron mix`.

build: each source dataset (one Ray task per subset) is adapted row by row into the_cauldron's schema,
       rows with identical images are merged into one multi-turn row, rows matching an evaluation set
       (exact pixels, perceptual hash, n-grams) are removed, and the subset is written as
       `<output>/<subset>/train-00000-of-00001.parquet`. Every input row that does not survive as a row of
       its own is in the ledger (adapter rejections, decode errors, `merged_by_image`, eval matches).
mix:   subsets (and text-only sets) are mixed at target answer-token shares by repeating or
       sub-sampling rows, and written as shuffled WebDataset SFT shards with a share report and chart.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from cauldron.adapters import RowRejected, adapt_row, get_adapter, load_adapters_yaml
from cauldron.dedup import DEFAULT_PHASH_THRESHOLD, EvalIndex, build_eval_index, dedup_rows
from cauldron.merge import merge_by_image
from cauldron.mixture import answer_token_counts, load_mixture, load_tokenizer, plan_mixture, plot_mixture
from cauldron.schema import read_cauldron_parquet, write_cauldron_parquet
from cauldron.sft_shards import row_to_sample
from curation.atomic import atomic_open, write_json
from curation.ledger import LedgerEntry, write_ledger
from curation.readers import discover_partitions, iter_rows
from curation.shards import PartitionShardWriter
from pipelines.errors import PipelineError
from pipelines.partitioned import fingerprint, write_partitions
from pipelines.report import RunReport, finish_report
from pipelines.runtime import ray_runtime

SUBSET_FILE = "train-00000-of-00001.parquet"
DEDUP_BATCH = 256


@dataclass(frozen=True)
class SourceSpec:
    name: str  # the subset's name in the output
    adapter: str  # which adapter maps its raw rows (default: the name)
    path: Path

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """`name=path` or `name:adapter=path`."""
        label, sep, path = text.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"a source is NAME=PATH or NAME:ADAPTER=PATH, got {text!r}")
        name, _, adapter = label.partition(":")
        return cls(name, adapter or name, Path(path))


@dataclass(frozen=True)
class BuildConfig:
    sources: list[SourceSpec]
    output: Path
    evals: dict[str, Path] = field(default_factory=dict)
    adapters_yaml: Path | None = None
    seed: int = 0
    phash_threshold: int = DEFAULT_PHASH_THRESHOLD
    merge: bool = True
    ray_address: str | None = None
    num_cpus: int | None = None


def build_subset(config: BuildConfig, index: EvalIndex | None, source: SourceSpec, run_fingerprint: str) -> dict:
    extra = load_adapters_yaml(config.adapters_yaml) if config.adapters_yaml else None
    adapter = get_adapter(source.adapter, extra)
    ledger: list[LedgerEntry] = []

    def drop(row_id: str, stage: str, reason: str, detail: str = "") -> None:
        ledger.append(LedgerEntry(row_id, source.name, stage, reason, detail))

    rows, ids = [], []
    matches: list[tuple[str, dict]] = []
    n_input = 0
    for part in discover_partitions([source.path]):
        for i, raw in enumerate(iter_rows(part.path)):
            n_input += 1
            row_id = f"{source.name}/{part.name}#{i}"
            try:
                rows.append(adapt_row(adapter, raw, key=row_id, seed=config.seed, source=source.name))
                ids.append(row_id)
            except RowRejected as exc:
                drop(row_id, "adapt", exc.reason, exc.detail)
    if config.merge:
        merged = merge_by_image(rows)
        for position, reason in merged.errors:
            drop(ids[position], "merge", "decode_error", reason)
        for members in merged.sources:
            for position in members[1:]:
                drop(ids[position], "merge", "merged_by_image", f"into {ids[members[0]]}")
        rows, ids = merged.rows, [ids[members[0]] for members in merged.sources]
    kept = rows
    if index is not None:
        kept = []
        for start in range(0, len(rows), DEDUP_BATCH):
            batch, batch_ids = rows[start : start + DEDUP_BATCH], ids[start : start + DEDUP_BATCH]
            result = dedup_rows(batch, index)
            kept.extend(result.kept)
            for position, match in result.removed:
                drop(batch_ids[position], "eval_dedup", f"eval_{match.kind}", json.dumps(match.to_dict()))
                matches.append((batch_ids[position], match.to_dict()))
            for position, reason in result.errors:
                drop(batch_ids[position], "eval_dedup", "decode_error", reason)
    out = config.output / source.name / SUBSET_FILE
    write_cauldron_parquet(kept, out)
    write_ledger(config.output / "ledger" / f"{source.name}.parquet", ledger)
    manifest = {
        "partition": source.name,
        "input": n_input,
        "count": len(kept),
        "turns": sum(len(r["texts"]) for r in kept),
        "eval_matches": matches[:3],
        "shards": [{"name": str(out.relative_to(config.output)), "count": len(kept)}],
        "fingerprint": run_fingerprint,
    }
    write_json(config.output / "manifests" / f"{source.name}.manifest.json", manifest)
    return manifest


def run_build(config: BuildConfig) -> dict:
    for source in config.sources:
        if not source.path.exists():
            raise PipelineError(f"source {source.name}: not found: {source.path}")
        try:
            get_adapter(source.adapter, load_adapters_yaml(config.adapters_yaml) if config.adapters_yaml else None)
        except KeyError as exc:
            raise PipelineError(f"source {source.name}: {exc.args[0]}") from None
    if len({s.name for s in config.sources}) != len(config.sources):
        raise PipelineError("two sources have the same name")
    config.output.mkdir(parents=True, exist_ok=True)
    report = RunReport("cauldron build", config.output, partitions=len(config.sources))
    index = None
    if config.evals:
        index = build_eval_index({name: str(path) for name, path in config.evals.items()}, phash_threshold=config.phash_threshold)
        report.extra["eval_index"] = {"sets": len(config.evals), "skipped_items": len(index.skipped)}
    evals_key = {name: str(path) for name, path in config.evals.items()}
    run_key = fingerprint(config.seed, config.phash_threshold, config.merge, evals_key, str(config.adapters_yaml))
    jobs = [(s.name, fingerprint(run_key, s.adapter, str(s.path)), (s,)) for s in config.sources]
    with ray_runtime(config.ray_address, config.num_cpus):
        write_partitions(build_subset, jobs, config.output / "manifests", report, shared=(config, index), desc="build subsets")
    report.extra["turns"] = sum(m.get("turns", 0) for m in report.manifests)
    for manifest in report.manifests:
        for row_id, match in manifest.get("eval_matches", []):
            report.extra[f"removed {row_id}"] = f"matches {match['eval_set']}:{match['eval_item']} ({match['kind']}, distance {match['distance']})"
    return finish_report(report, scores=None, cutoff=None, score_name="")


@dataclass(frozen=True)
class MixConfig:
    inputs: list[Path]  # folders holding `<subset>/*.parquet` in the_cauldron schema
    output: Path
    tokenizer: str
    mixture: Path | None = None  # None: the shipped Idefics2 (Table 14) mixture
    total_tokens: int | None = None
    seed: int = 0
    samples_per_shard: int = 1000


def _subset_files(inputs: list[Path]) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for root in inputs:
        if not root.is_dir():
            raise PipelineError(f"not a folder of subsets: {root}")
        for path in sorted(root.glob("*/*.parquet")):
            if path.parent.name != "ledger":
                found.setdefault(path.parent.name, []).append(path)
    if not found:
        raise PipelineError(f"no <subset>/*.parquet found in {', '.join(map(str, inputs))}")
    return found


def run_mix(config: MixConfig) -> dict:
    """Plan the mixture over answer tokens, write shuffled SFT shards, report target vs achieved shares."""
    try:
        mixture = load_mixture(config.mixture)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"mixture: {exc}") from None
    files = _subset_files(config.inputs)
    tokenizer = load_tokenizer(config.tokenizer)
    rows = {name: [r for path in paths for r in read_cauldron_parquet(path)] for name, paths in files.items()}
    counts = {name: answer_token_counts(subset, tokenizer) for name, subset in rows.items() if name in mixture.shares}
    try:
        plan = plan_mixture(mixture, counts, total_tokens=config.total_tokens, seed=config.seed)
    except ValueError as exc:
        raise PipelineError(str(exc)) from None
    picks = [(name, int(i)) for name, dataset in plan.datasets.items() for i in dataset.row_indices()]
    random.Random(config.seed).shuffle(picks)
    config.output.mkdir(parents=True, exist_ok=True)
    writer = PartitionShardWriter(config.output / "shards", "sft", config.samples_per_shard)
    seen: dict[tuple[str, int], int] = {}
    for name, i in picks:
        copy = seen[(name, i)] = seen.get((name, i), -1) + 1
        writer.write(row_to_sample(f"{name}-{i:08d}-{copy:03d}", rows[name][i], dataset=name))
    manifest = writer.close(mixture=plan.to_dict())
    write_json(config.output / "mixture_report.json", plan.to_dict())
    plot_mixture(plan, config.output / "mixture_shares.png")
    table = plan.format_table()
    with atomic_open(config.output / "mixture_report.txt", "w") as handle:
        handle.write(table + "\n")
    print(table)
    gap = max(abs(e["target_percent"] - e["achieved_percent"]) for e in plan.report())
    print(f"{manifest['count']} samples in {len(manifest['shards'])} shards; largest share gap {gap:.3f} points; "
          f"chart: {config.output / 'mixture_shares.png'}")
    return {"samples": manifest["count"], "max_gap_points": gap, "plan": plan.to_dict()}
