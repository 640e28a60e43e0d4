"""`curate cauldron build`: source datasets -> the_cauldron's schema, merged by image, deduplicated against evals.

Two phases, each a set of Ray tasks, both streaming (memory bounded by a row group or a merge bucket):

1. One task per source file (`cauldron.build_pass`): rows are read with their real types, adapted onto
   the subset's template family, their images decoded once for the merge key and the eval-set match,
   and the survivors spilled to `work/<subset>/`; every other input row is ledgered with its reason.
2. One task per subset (`cauldron.build_merge`): rows with identical images merge into one multi-turn
   row, found by sorting the 16-byte merge keys alone, and the subset is written as
   `<output>/<subset>/train-00000-of-00001.parquet` with its ledger and manifest; the spills go.

Sources are checked before any work: a missing path, an unknown adapter, a folder with no data file or
with only evaluation splits stops the run with a one-line error. A file that turns out unusable while
read (no parquet footer, not a zip) fails its subset, named in a one-line error at the end of the run
(non-zero exit, no manifest for that subset); the other files and subsets are built, so a rerun after
fixing it only redoes that subset. Reruns are keyed by content: the source files' identities (`curation.storage.stat_key`), the
adapters YAML's bytes and the eval index's digest (so an eval set or adapter edited in place redoes the
subsets). `cauldron mix` lives in `pipelines.cauldron_mix`.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from cauldron.adapter_types import Adapter
from cauldron.adapters import get_adapter, load_adapters_yaml
from cauldron.build_merge import copy_ledger_parts, merge_subset
from cauldron.build_pass import PassSettings, run_file_pass
from cauldron.dedup import DEFAULT_PHASH_THRESHOLD, EvalIndex, build_eval_index
from cauldron.source_files import SourceError, SourceFile, SourceListing, list_source
from cauldron.spill import LedgerSink
from curation.atomic import write_json
from curation.errors import UserError
from curation.pairs.download import DownloadOptions
from curation.shards import read_manifest
from curation.storage import ObjectPath, StoragePath, remove_tree, stat_keys, storage_path
from curation.storage import absolute as absolute_path
from pipelines.errors import PipelineError
from pipelines.partitioned import PartitionJob, fingerprint, write_partitions
from pipelines.report import RunReport, finish_report
from pipelines.runtime import ray_runtime

SUBSET_FILE = "train-00000-of-00001.parquet"
WORK_DIR = "work"


@dataclass(frozen=True)
class SourceSpec:
    name: str  # the subset's name in the output
    adapter: str  # which adapter maps its raw rows (default: the name)
    path: StoragePath

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """`name=path` or `name:adapter=path`."""
        label, sep, path = text.partition("=")
        if not sep or not label or not path:
            raise UserError(f"a source is NAME=PATH or NAME:ADAPTER=PATH, got {text!r}")
        name, _, adapter = label.partition(":")
        return cls(name, adapter or name, storage_path(path))


@dataclass(frozen=True)
class BuildConfig:
    sources: list[SourceSpec]
    output: StoragePath
    evals: dict[str, StoragePath] = field(default_factory=dict)  # local paths or object-store URLs
    adapters_yaml: Path | None = None
    seed: int = 0
    phash_threshold: int = DEFAULT_PHASH_THRESHOLD
    merge: bool = True
    allow_eval_splits: bool = False
    fetch_images: DownloadOptions | None = None  # download URL-only images (opt-in); None: ledger them
    ray_address: str | None = None
    num_cpus: int | None = None


@dataclass(frozen=True)
class SubsetPlan:
    source: SourceSpec
    adapter: Adapter
    listing: SourceListing
    fingerprint: str  # the source's files and adapter; `keyed` adds the run's settings and inputs

    def file_partition(self, file: SourceFile) -> str:
        return f"{self.source.name}--{file.name}"


def _adapters(config: BuildConfig) -> dict[str, Adapter] | None:
    try:
        return load_adapters_yaml(config.adapters_yaml) if config.adapters_yaml else None
    except (OSError, UserError) as error:
        raise PipelineError(f"--adapters {config.adapters_yaml}: {error}") from None


def plan_subsets(config: BuildConfig) -> list[SubsetPlan]:
    """Check every source (one-line errors) and list the files each will read."""
    if len({s.name for s in config.sources}) != len(config.sources):
        raise PipelineError("two sources have the same name")
    extra = _adapters(config)
    plans = []
    for source in config.sources:
        try:
            adapter = get_adapter(source.adapter, extra)
            listing = list_source(source.path, adapter.include, config.allow_eval_splits)
        except KeyError as error:
            raise PipelineError(f"source {source.name}: {error.args[0]}") from None
        except SourceError as error:
            raise PipelineError(f"source {source.name}: {error}") from None
        stamps = list(zip([f.relative for f in listing.files], stat_keys([f.path for f in listing.files]), strict=True))
        plans.append(SubsetPlan(source, adapter, listing, fingerprint(source.adapter, str(source.path), stamps)))
    return plans


def file_task(config: BuildConfig, index: EvalIndex | None, plan: SubsetPlan, file: SourceFile, fp: str) -> dict:
    """Phase 1 for one file; an unusable file comes back as `error` (and no manifest is written)."""
    settings = PassSettings(plan.source.name, plan.adapter, plan.listing.root, config.seed, config.allow_eval_splits, config.fetch_images)
    work = config.output / WORK_DIR / plan.source.name
    partition = plan.file_partition(file)
    try:
        result = run_file_pass(settings, file, work, index)
    except SourceError as error:
        return {"partition": partition, "subset": plan.source.name, "error": str(error)}
    manifest = {"partition": partition, "subset": plan.source.name, "fingerprint": fp, **asdict(result)}
    write_json(config.output / WORK_DIR / "manifests" / f"{partition}.manifest.json", manifest)
    return manifest


def subset_task(config: BuildConfig, plan: SubsetPlan, files: list[dict], fp: str) -> dict:
    """Phase 2 for one subset: its ledger, the merged subset file, then its manifest (the completion marker)."""
    name = plan.source.name
    out = config.output / name / SUBSET_FILE
    with LedgerSink(config.output / "ledger" / f"{name}.parquet") as ledger, tempfile.TemporaryDirectory(prefix="potion-merge-") as scratch:
        dropped = copy_ledger_parts([storage_path(f["ledger"]) for f in files], ledger)
        work = Path(scratch) if isinstance(config.output, ObjectPath) else config.output / WORK_DIR / name  # buckets: task-local
        outcome = merge_subset([storage_path(f["spill"]) for f in files], out, ledger, name, work, config.merge)
    n_input = sum(f["input"] for f in files)
    if n_input != outcome.count + dropped + outcome.merged:
        raise AssertionError(f"{name}: {n_input} in, {outcome.count} kept + {dropped} dropped + {outcome.merged} merged")
    refused = [r for f in files for r in f["refused"]] + [asdict(r) for r in plan.listing.refused]
    manifest = {
        "partition": name,
        "input": n_input,
        "count": outcome.count,
        "turns": outcome.turns,
        "files": [{"file": f["file"], "rows": f["input"]} for f in files],
        "refused": refused,
        "eval_matches": [m for f in files for m in f["eval_matches"]][:3],
        "shards": [{"name": f"{name}/{SUBSET_FILE}", "count": outcome.count}],
        "fingerprint": fp,
    }
    write_json(config.output / "manifests" / f"{name}.manifest.json", manifest)
    remove_tree(config.output / WORK_DIR / name)
    for f in files:
        (config.output / WORK_DIR / "manifests" / f"{f['partition']}.manifest.json").unlink(missing_ok=True)
    return manifest


def _eval_index(config: BuildConfig) -> EvalIndex | None:
    if not config.evals:
        return None
    try:
        return build_eval_index(config.evals, phash_threshold=config.phash_threshold)
    except (OSError, UserError) as error:
        raise PipelineError(f"--eval: {error}") from None


def run_key(config: BuildConfig, index: EvalIndex | None) -> str:
    """What every subset's fingerprint starts from: the settings, the adapters YAML's bytes and what the
    eval index holds (not the paths, so an eval set or adapters file edited in place is a new run)."""
    try:
        adapters = hashlib.blake2b(config.adapters_yaml.read_bytes()).hexdigest() if config.adapters_yaml else None
    except OSError as error:
        raise PipelineError(f"--adapters {config.adapters_yaml}: {error}") from None
    evals = index.digest() if index is not None else None
    fetch = asdict(config.fetch_images) if config.fetch_images else None
    return fingerprint(config.seed, config.phash_threshold, config.merge, evals, adapters, config.allow_eval_splits, fetch)


def keyed(plans: list[SubsetPlan], key: str) -> list[SubsetPlan]:
    """The plans with the run key in their fingerprints."""
    return [replace(plan, fingerprint=fingerprint(key, plan.fingerprint)) for plan in plans]


SHOWN_FILES = 10


def _listed(items: list[str], subset: str) -> str:
    if len(items) <= SHOWN_FILES:
        return ", ".join(items)
    return ", ".join(items[:SHOWN_FILES]) + f", ... and {len(items) - SHOWN_FILES} more (all in manifests/{subset}.manifest.json)"


def _describe_sources(report: RunReport, plans: list[SubsetPlan]) -> None:
    """Per subset: the files read (with rows) and those refused (with why), in report.json and the table."""
    by_name = {m["partition"]: m for m in report.manifests}
    for plan in plans:
        manifest = by_name.get(plan.source.name)
        if manifest is None:
            continue
        read = _listed([f"{f['file']} ({f['rows']} rows)" for f in manifest.get("files", [])], plan.source.name)
        refused = _listed([f"{r['file']} ({r['reason']})" for r in manifest.get("refused", [])], plan.source.name)
        report.extra[f"{plan.source.name} files"] = {"read": read or "-", **({"refused": refused} if refused else {})}


def absolute(config: BuildConfig) -> BuildConfig:
    """The config with every path absolute: Ray workers do not share the driver's working directory."""
    return replace(
        config,
        output=absolute_path(config.output),
        sources=[replace(s, path=absolute_path(s.path)) for s in config.sources],
        evals={name: absolute_path(path) for name, path in config.evals.items()},
        adapters_yaml=config.adapters_yaml.absolute() if config.adapters_yaml else None,
    )


def run_build(config: BuildConfig) -> dict:
    config = absolute(config)
    plans = plan_subsets(config)
    index = _eval_index(config)
    plans = keyed(plans, run_key(config, index))
    config.output.mkdir(parents=True, exist_ok=True)
    report = RunReport("cauldron build", config.output, partitions=len(plans))
    if index is not None:
        report.extra["eval_index"] = {"sets": len(config.evals), "images": index.image_count, "skipped_items": len(index.skipped)}
    manifests_dir = config.output / "manifests"
    pending = [p for p in plans if (read_manifest(manifests_dir, p.source.name) or {}).get("fingerprint") != p.fingerprint]
    errors: list[str] = []
    with ray_runtime(config.ray_address, config.num_cpus):
        files = RunReport("cauldron build files", config.output, partitions=0)
        jobs = [PartitionJob(p.file_partition(f), fingerprint(p.fingerprint, f.relative), (p, f)) for p in pending for f in p.listing.files]
        write_partitions(file_task, jobs, config.output / WORK_DIR / "manifests", files, shared=(config, index), desc="read sources")
        results: dict[str, list[dict]] = {}
        for manifest in files.manifests:
            if "error" in manifest:
                errors.append(f"source {manifest['subset']}: {manifest['error']}")
            results.setdefault(manifest["subset"], []).append(manifest)
        failed = {m["subset"] for m in files.manifests if "error" in m}
        subset_jobs = []
        for plan in plans:
            if plan.source.name in failed:
                continue
            order = {plan.file_partition(f): i for i, f in enumerate(plan.listing.files)}
            done = sorted(results.get(plan.source.name, []), key=lambda m: order[m["partition"]])
            subset_jobs.append(PartitionJob(plan.source.name, plan.fingerprint, (plan, done)))
        write_partitions(subset_task, subset_jobs, manifests_dir, report, shared=(config,), desc="merge subsets")
    report.partitions = len(report.manifests)
    report.extra["turns"] = sum(m.get("turns", 0) for m in report.manifests)
    _describe_sources(report, plans)
    for manifest in report.manifests:
        for row_id, match in manifest.get("eval_matches", []):
            report.extra[f"removed {row_id}"] = (
                f"matches {match['eval_set']}:{match['eval_item']} ({match['kind']}, distance {match['distance']})"
            )
    payload = finish_report(report, scores=None, cutoff=None, score_name="")
    if errors:
        raise PipelineError("; ".join(errors) + " (the other subsets are built; fix or remove the file and rerun)")
    return payload
