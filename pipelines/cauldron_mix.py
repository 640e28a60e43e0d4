"""`curate cauldron mix`: subsets (and text-only sets) -> shuffled SFT shards at target answer-token shares.

1. Count: one Ray task per subset file in the mixture reads only its assistant-text column and counts
   answer tokens per row (subsets outside the mixture are not read at all).
2. Plan (driver, NumPy): per-row repetition / sub-sampling so each dataset reaches its share
   (`cauldron.mixture`), then the picks in one seeded random order.
3. Scatter / gather (`cauldron.mix_shuffle`): one task per chunk of row groups writes its picks by
   destination shard; one task per shard writes the tar `shards/sft-<shard>-00000.tar` in pick order.
Then the share report (JSON, table, bar chart). Scatter files live in `<output>/scatter/` until the end,
with the run's key: a rerun after a kill with the same key skips the scatter files and shards already
written (see `_prepare`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cauldron.mix_shuffle import (
    CHUNK_BYTES,
    CHUNK_ROWS,
    Chunk,
    Picks,
    ShardSources,
    assistant_texts,
    file_chunks,
    gather_shard,
    index_file,
    read_index,
    scatter_chunk,
    shard_name,
    shard_sources,
    shuffled_picks,
)
from cauldron.mixture import load_mixture, load_tokenizer, plan_mixture, plot_mixture, token_counts
from curation.atomic import atomic_open, write_json
from curation.errors import UserError
from curation.shards import read_manifests
from curation.storage import StoragePath, absolute, remove_tree, stat_keys
from pipelines.errors import PipelineError
from pipelines.runtime import ray_runtime

SCATTER_DIR = "scatter"
KEY_FILE = "key.json"
REPORT_FILES = ("mixture_report.json", "mixture_report.txt", "mixture_shares.png")


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
    """Run the scatter tasks whose index is not there yet (a resumed mix reads the others'); returns
    where each shard's batches are."""
    import ray

    names = {name: number for number, name in enumerate(picks.names)}
    order = np.lexsort((picks.row, picks.dataset))  # picks grouped by dataset, then row
    sorted_dataset, sorted_row = picks.dataset[order], picks.row[order]
    indexed = {path.name for path in folder.glob("*.index.npy")}
    task = ray.remote(num_cpus=1)(scatter_chunk)
    indexes: list[Any] = []
    for number, chunk in enumerate(chunks):
        dataset = names[chunk.dataset]
        lo = np.searchsorted(sorted_dataset, dataset, side="left")
        hi = np.searchsorted(sorted_dataset, dataset, side="right")
        first = lo + np.searchsorted(sorted_row[lo:hi], chunk.start, side="left")
        last = lo + np.searchsorted(sorted_row[lo:hi], chunk.stop, side="left")
        mine = order[first:last]
        if not mine.size:
            continue
        index = index_file(folder, number)
        if index.name in indexed:
            indexes.append((number, read_index(index)))
        else:
            indexes.append((number, task.remote(chunk, picks.row[mine], mine, picks.copy[mine], samples_per_shard, folder, number)))
    done = ray.get([index for _, index in indexes if not isinstance(index, np.ndarray)])
    ran = iter(done)
    indexes = [(number, (index if isinstance(index, np.ndarray) else next(ran)).astype(np.int32)) for number, index in indexes]
    return shard_sources(indexes, -(-len(picks) // samples_per_shard))


def _gather(sources: ShardSources, folder: StoragePath, out: StoragePath, samples_per_shard: int, picks: int) -> list[dict]:
    """Write the shards that have no manifest of the full size yet; returns every shard's manifest."""
    import ray

    task = ray.remote(num_cpus=1)(gather_shard)
    shards = sources.offsets.size - 1
    names = [shard_name(shard) for shard in range(shards)]
    done = read_manifests(out, names)
    manifests: list[Any] = []
    for shard, name in enumerate(names):
        size = min(samples_per_shard, picks - shard * samples_per_shard)
        if name in done and done[name]["count"] == size:
            manifests.append(done[name])
        else:
            manifests.append(task.remote(shard, folder, *sources.of(shard), out, samples_per_shard))
    return [manifest if isinstance(manifest, dict) else ray.get(manifest) for manifest in manifests]


def _run_key(config: MixConfig, picks: Picks, files: dict[str, list[StoragePath]]) -> dict[str, Any]:
    """What the scatter files and shards depend on: the picks themselves (so the mixture, tokenizer, seed,
    budget and the code that counts and plans are all in them), the shard size, the chunk limits and
    each input file's identity. Equal keys give the same scatter files and shards."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (picks.dataset, picks.row, picks.copy):
        digest.update(np.ascontiguousarray(array).data)
    paths = [path for name in sorted(files) for path in files[name]]
    return {
        "picks": [len(picks), list(picks.names), digest.hexdigest()],
        "samples_per_shard": config.samples_per_shard,
        "chunks": [CHUNK_ROWS, CHUNK_BYTES],
        "inputs": dict(zip(map(str, paths), stat_keys(paths), strict=True)),
    }


def _prepare(config: MixConfig, key: dict[str, Any], folder: StoragePath) -> None:
    """Keep what an interrupted mix with the same key wrote (its scatter files, its finished shards);
    otherwise start clean. The key file is written last, so a mix killed while cleaning cleans again."""
    try:
        kept = json.loads((folder / KEY_FILE).read_text())
    except (FileNotFoundError, ValueError):
        kept = None
    if kept == json.loads(json.dumps(key)):
        return
    remove_tree(folder)
    for stale in (config.output / "shards").glob("sft-*"):  # a previous mix may have had more shards
        stale.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / KEY_FILE, key)


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
    for name in REPORT_FILES:  # the report marks a finished mix; an unfinished one has none
        (config.output / name).unlink(missing_ok=True)
    with ray_runtime(config.ray_address, config.num_cpus):
        counts = _count(files, config.tokenizer)
        try:
            plan = plan_mixture(mixture, counts, total_tokens=config.total_tokens, seed=config.seed)
        except UserError as exc:
            raise PipelineError(str(exc)) from None
        plan.unused.extend(sorted(set(found) - set(files)))
        picks = shuffled_picks(plan, config.seed)
        _prepare(config, _run_key(config, picks, files), folder)
        chunks = [chunk for name in plan.datasets for chunk in file_chunks(name, files[name])]
        sources = _scatter(chunks, picks, config.samples_per_shard, folder)
        manifests = _gather(sources, folder, config.output / "shards", config.samples_per_shard, len(picks))
    written = sum(manifest["count"] for manifest in manifests)
    if written != len(picks) or written != sum(entry["rows_out"] for entry in plan.report()):
        raise PipelineError(f"the shards hold {written} samples, the plan {len(picks)}; scatter files kept in {folder}")
    remove_tree(folder)
    return _report(config, plan, manifests)


def _report(config: MixConfig, plan, manifests: list[dict]) -> dict:
    plot_mixture(plan, config.output / "mixture_shares.png")
    table = plan.format_table()
    with atomic_open(config.output / "mixture_report.txt", "w") as handle:
        handle.write(table + "\n")
    write_json(config.output / "mixture_report.json", plan.to_dict())  # last: it marks the mix finished
    print(table)
    samples = sum(m["count"] for m in manifests)
    shards = sum(len(m["shards"]) for m in manifests)
    gap = max(abs(e["target_percent"] - e["achieved_percent"]) for e in plan.report())
    print(f"{samples} samples in {shards} shards; largest share gap {gap:.3f} points; chart: {config.output / 'mixture_shares.png'}")
    return {"samples": samples, "shards": shards, "max_gap_points": gap, "plan": plan.to_dict()}
