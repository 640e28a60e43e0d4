"""`curate cauldron mix`: subsets (and text-only sets) -> shuffled SFT shards at target answer-token shares.

1. Count: one Ray task per subset file in the mixture reads only its assistant-text column and counts
   answer tokens per row (subsets outside the mixture are not read at all).
2. Plan (driver, NumPy): per-row repetition / sub-sampling so each dataset reaches its share
   (`cauldron.mixture`), then the picks in one seeded random order.
3. Scatter / gather (`cauldron.mix_shuffle`): one task per chunk of row groups writes its picks by
   destination shard; one task per shard writes the tar `shards/sft-<shard>-00000.tar` in pick order.
Then the share report (JSON, table, bar chart). Scatter files live in `<output>/scatter/` until the end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cauldron.mix_shuffle import (
    Chunk,
    ShardSources,
    assistant_texts,
    file_chunks,
    gather_shard,
    scatter_chunk,
    scatter_file,
    shard_sources,
    shuffled_picks,
)
from cauldron.mixture import load_mixture, load_tokenizer, plan_mixture, plot_mixture, token_counts
from curation.atomic import atomic_open, write_json
from curation.errors import UserError
from curation.storage import StoragePath, absolute, remove_tree
from pipelines.errors import PipelineError
from pipelines.runtime import ray_runtime

SCATTER_DIR = "scatter"


@dataclass(frozen=True)
class MixConfig:
    inputs: list[StoragePath]  # folders holding `<subset>/*.parquet` in the_cauldron schema
    output: StoragePath
    tokenizer: str
    mixture: Path | None = None  # None: the shipped Idefics2 (Table 14) mixture
    total_tokens: int | None = None
    seed: int = 0
    samples_per_shard: int = 1000
    ray_address: str | None = None
    num_cpus: int | None = None


def subset_files(inputs: list[StoragePath]) -> dict[str, list[StoragePath]]:
    found: dict[str, list[StoragePath]] = {}
    for root in inputs:
        if not root.is_dir():
            raise PipelineError(f"not a folder of subsets: {root}")
        paths: list[StoragePath] = sorted(root.glob("*/*.parquet"))
        for path in paths:
            if path.parent.name not in ("ledger", "manifests", "work"):
                found.setdefault(path.parent.name, []).append(path)
    if not found:
        raise PipelineError(f"no <subset>/*.parquet found in {', '.join(map(str, inputs))}")
    return found


def count_file(path: StoragePath, tokenizer_name: str) -> np.ndarray:
    tokenizer = load_tokenizer(tokenizer_name)
    return token_counts((answers for batch in assistant_texts(path) for answers in batch), tokenizer)


def _count(files: dict[str, list[StoragePath]], tokenizer: str) -> dict[str, np.ndarray]:
    import ray

    task = ray.remote(num_cpus=1)(count_file)
    refs = {name: [task.remote(path, tokenizer) for path in paths] for name, paths in files.items()}
    return {name: np.concatenate(ray.get(parts)) for name, parts in refs.items()}


def _scatter(chunks: list[Chunk], picks, samples_per_shard: int, folder: StoragePath) -> ShardSources:
    """Run the scatter tasks; returns where each shard's batches are."""
    import ray

    names = {name: number for number, name in enumerate(picks.names)}
    order = np.lexsort((picks.row, picks.dataset))  # picks grouped by dataset, then row
    sorted_dataset, sorted_row = picks.dataset[order], picks.row[order]
    task = ray.remote(num_cpus=1)(scatter_chunk)
    refs = []
    for number, chunk in enumerate(chunks):
        dataset = names[chunk.dataset]
        lo = np.searchsorted(sorted_dataset, dataset, side="left")
        hi = np.searchsorted(sorted_dataset, dataset, side="right")
        first = lo + np.searchsorted(sorted_row[lo:hi], chunk.start, side="left")
        last = lo + np.searchsorted(sorted_row[lo:hi], chunk.stop, side="left")
        mine = order[first:last]
        if mine.size:
            out = scatter_file(folder, number)
            refs.append((number, task.remote(chunk, picks.row[mine], mine, picks.copy[mine], samples_per_shard, out)))
    present = [(number, ray.get(ref).astype(np.int32)) for number, ref in refs]
    return shard_sources(present, -(-len(picks) // samples_per_shard))


def _gather(sources: ShardSources, folder: StoragePath, out: StoragePath, samples_per_shard: int) -> list[dict]:
    import ray

    task = ray.remote(num_cpus=1)(gather_shard)
    shards = sources.offsets.size - 1
    return ray.get([task.remote(shard, folder, *sources.of(shard), out, samples_per_shard) for shard in range(shards)])


def run_mix(config: MixConfig) -> dict:
    """Plan the mixture over answer tokens, write shuffled SFT shards, report target vs achieved shares."""
    tokenizer = str(Path(config.tokenizer).absolute()) if Path(config.tokenizer).exists() else config.tokenizer
    config = replace(
        config, inputs=[absolute(p) for p in config.inputs], output=absolute(config.output), tokenizer=tokenizer
    )  # Ray workers do not share the driver's working directory
    try:
        mixture = load_mixture(config.mixture)
    except (OSError, UserError) as exc:
        raise PipelineError(f"mixture: {exc}") from None
    found = subset_files(config.inputs)
    files = {name: paths for name, paths in found.items() if mixture.shares.get(name, 0) > 0}
    if not files:
        raise PipelineError(f"none of the mixture's datasets is among the subsets found ({', '.join(sorted(found))})")
    load_tokenizer(config.tokenizer)  # a missing tokenizer fails here, once, not in every task
    config.output.mkdir(parents=True, exist_ok=True)
    folder = config.output / SCATTER_DIR
    remove_tree(folder)
    folder.mkdir()
    for stale in (config.output / "shards").glob("sft-*"):  # a previous mix may have had more shards
        stale.unlink()
    with ray_runtime(config.ray_address, config.num_cpus):
        counts = _count(files, config.tokenizer)
        try:
            plan = plan_mixture(mixture, counts, total_tokens=config.total_tokens, seed=config.seed)
        except UserError as exc:
            raise PipelineError(str(exc)) from None
        plan.unused.extend(sorted(set(found) - set(files)))
        picks = shuffled_picks(plan, config.seed)
        chunks = [chunk for name in plan.datasets for chunk in file_chunks(name, files[name])]
        sources = _scatter(chunks, picks, config.samples_per_shard, folder)
        manifests = _gather(sources, folder, config.output / "shards", config.samples_per_shard)
    remove_tree(folder)
    return _report(config, plan, manifests)


def _report(config: MixConfig, plan, manifests: list[dict]) -> dict:
    write_json(config.output / "mixture_report.json", plan.to_dict())
    plot_mixture(plan, config.output / "mixture_shares.png")
    table = plan.format_table()
    with atomic_open(config.output / "mixture_report.txt", "w") as handle:
        handle.write(table + "\n")
    print(table)
    samples = sum(m["count"] for m in manifests)
    shards = sum(len(m["shards"]) for m in manifests)
    gap = max(abs(e["target_percent"] - e["achieved_percent"]) for e in plan.report())
    print(f"{samples} samples in {shards} shards; largest share gap {gap:.3f} points; chart: {config.output / 'mixture_shares.png'}")
    return {"samples": samples, "shards": shards, "max_gap_points": gap, "plan": plan.to_dict()}
