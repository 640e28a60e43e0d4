"""The end-of-run report: accounting (input = kept + dropped), drop reasons, selection, timings, plots.

Written as `report.json` (for machines) and `report.txt` (the table printed at the end), plus a score
histogram PNG with the cutoff marked. Accounting is checked per partition (its manifest's input count,
taken from the input itself, against its kept samples plus its ledger rows, counted from the ledger
file's parquet footer); any mismatch is listed in the report and ends the run with a non-zero exit.

No ledger row reaches the driver: the drop reasons are summed from the manifests' `dropped_by_reason`
(a partition written before manifests carried it has its ledger part read, one at a time).
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.atomic import atomic_open, write_json
from curation.ledger import read_ledger
from curation.storage import StoragePath, read_parquet_metadata
from pipelines.errors import RunFailed

FOOTER_READERS = 16


@dataclass
class RunReport:
    job: str
    output: StoragePath
    partitions: int
    started: float = field(default_factory=time.time)
    optout: dict = field(default_factory=dict)
    scoring: dict = field(default_factory=lambda: {"documents": 0, "scored": 0, "tokens": 0, "seconds": 0.0})
    selection: dict = field(default_factory=dict)
    manifests: list[dict] = field(default_factory=list)
    resumed_partitions: int = 0
    extra: dict = field(default_factory=dict)  # job-specific figures, printed as they are

    def add_scoring(self, stats: dict) -> None:
        for key in ("documents", "scored", "tokens", "seconds"):
            self.scoring[key] += stats[key]

    def add_manifest(self, manifest: dict, resumed: bool) -> None:
        self.manifests.append(manifest)
        self.resumed_partitions += resumed


def plot_histogram(path: StoragePath, scores: np.ndarray, cutoff: float | None, name: str, log_x: bool = True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = scores[np.isfinite(scores)]
    fig, ax = plt.subplots(figsize=(7, 4))
    if finite.size:
        use_log = log_x and finite.min() > 0
        bins = np.geomspace(finite.min(), finite.max() * 1.0001, 50).tolist() if use_log else 50
        ax.hist(finite, bins=bins, color="#4c72b0")
        if use_log:
            ax.set_xscale("log")
    if cutoff is not None and np.isfinite(cutoff):
        ax.axvline(cutoff, color="#c44e52", linestyle="--", label=f"cutoff {cutoff:.4g}")
        ax.legend()
    ax.set_xlabel(name)
    ax.set_ylabel("samples")
    ax.set_title(f"{name} of {finite.size} samples")
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)


def format_table(report: dict) -> str:
    counts = report["counts"]
    lines = [
        f"potion {report['job']}: {report['output']}",
        f"  partitions      {report['partitions']} ({report['resumed_partitions']} already complete)",
        f"  input           {counts['input']}",
        f"  kept            {counts['kept']}  in {counts['shards']} shards",
        f"  dropped         {counts['dropped']}",
    ]
    for reason, n in sorted(report["dropped_by_reason"].items(), key=lambda kv: -kv[1]):
        lines.append(f"    {reason:<22}{n}")
    if images := report.get("images"):
        lines.append(f"  images fetched  {images.get('downloaded', 0)} of {images.get('requested', 0)} requested")
    if removed := report.get("removed_images", {}):
        lines.append(f"  images removed  {sum(removed.values())} (their documents are kept if anything is left)")
        for reason, n in sorted(removed.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {reason:<22}{n}")
    sel = report.get("selection") or {}
    if sel.get("cutoff") is not None:
        lines.append(
            f"  cutoff          {sel['cutoff']:.4g} ({sel['dropped']} of {sel['population']} = {sel['dropped_fraction']:.2%} dropped)"
        )
    for example in report.get("examples", []):
        lines.append(f"    dropped  ppl {example['perplexity']:<10.4g} {example['text'][:70]!r}")
    for key, value in report.get("details", {}).items():
        if isinstance(value, dict):
            shown = ", ".join(f"{k} {v}" for k, v in value.items())
        else:
            shown = f"{value:.4g}" if isinstance(value, float) else value
        lines.append(f"  {key.replace('_', ' '):<15} {shown}")
    status = "OK" if counts["balanced"] else "MISMATCH"
    lines.append(f"  accounting      input = kept + dropped: {status}")
    lines.append(f"  wall time       {report['seconds']:.1f}s")
    return "\n".join(lines)


def _value_counts(column: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(column)
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))


@dataclass(frozen=True)
class PartitionDrops:
    """One partition's ledger: its row count (from the file's footer) and its rows per reason."""

    rows: int
    by_reason: dict[str, int]


def _ledger_path(output: StoragePath, partition: str) -> StoragePath:
    return output / "ledger" / f"{partition}.parquet"


def ledger_rows(output: StoragePath, partitions: list[str]) -> list[int]:
    """Each partition's ledger row count, from its file's parquet footer; FOOTER_READERS footers are read at
    a time (on object storage each is a request or two, and a run has one per partition)."""
    with ThreadPoolExecutor(FOOTER_READERS) as pool:
        footers = pool.map(read_parquet_metadata, [_ledger_path(output, name) for name in partitions])
        return [footer.num_rows for footer in footers]


def partition_reasons(output: StoragePath, manifest: dict) -> dict[str, int]:
    """The partition's ledger rows per reason: from its manifest, or from its ledger part when the manifest
    predates `dropped_by_reason`."""
    by_reason = manifest.get("dropped_by_reason")
    if by_reason is None:
        by_reason = _value_counts(read_ledger([_ledger_path(output, manifest["partition"])]).column("reason"))
    return dict(by_reason)


def unbalanced_partitions(manifests: list[dict], drops: dict[str, PartitionDrops]) -> dict[str, str]:
    """Partitions whose input count is not their kept samples plus their ledger rows, or whose manifest's
    reasons do not add up to their ledger rows, with the numbers."""
    problems = {}
    for manifest in manifests:
        name, part = manifest["partition"], drops[manifest["partition"]]
        if manifest["input"] != manifest["count"] + part.rows:
            problems[name] = f"input {manifest['input']} != kept {manifest['count']} + dropped {part.rows}"
        elif sum(part.by_reason.values()) != part.rows:
            problems[name] = f"dropped by reason {sum(part.by_reason.values())} != ledger rows {part.rows}"
    return problems


def finish_report(report: RunReport, scores: np.ndarray | None, cutoff: float | None, score_name: str, log_x: bool = True) -> dict:
    """Aggregate manifests and ledger footers, write report.json/report.txt and the histogram, print the table.

    Raises RunFailed (after writing the report) when the accounting does not balance.
    """
    names = [m["partition"] for m in report.manifests]
    rows = ledger_rows(report.output, names)
    drops = {
        name: PartitionDrops(n, partition_reasons(report.output, m))  # an old manifest's ledger is read here, one at a time
        for name, n, m in zip(names, rows, report.manifests, strict=True)
    }
    by_reason: Counter[str] = Counter()
    for part in drops.values():
        by_reason.update(part.by_reason)
    dropped = sum(part.rows for part in drops.values())
    unbalanced = unbalanced_partitions(report.manifests, drops)
    n_input = sum(m["input"] for m in report.manifests)
    kept = sum(m["count"] for m in report.manifests)
    balanced = n_input == kept + dropped and not unbalanced
    payload = {
        "job": report.job,
        "output": str(report.output),
        "partitions": report.partitions,
        "resumed_partitions": report.resumed_partitions,
        "counts": {
            "input": n_input,
            "kept": kept,
            "dropped": dropped,
            "shards": sum(len(m["shards"]) for m in report.manifests),
            "balanced": balanced,
        },
        "unbalanced_partitions": unbalanced,
        "dropped_by_reason": dict(by_reason),
        "removed_images": dict(sum((Counter(m.get("removed_images", {})) for m in report.manifests), Counter())),
        "images": dict(sum((Counter(m.get("images", {})) for m in report.manifests), Counter())),
        "optout": report.optout,
        "scoring": report.scoring,
        "selection": report.selection,
        "details": report.extra,
        "seconds": time.time() - report.started,
        "examples": sorted((e for m in report.manifests for e in m.get("ppl_dropped_examples", [])), key=lambda e: -e["perplexity"])[:3],
    }
    if scores is not None and len(scores):
        plot = report.output / f"{score_name}_histogram.png"
        plot_histogram(plot, np.asarray(scores, dtype=float), cutoff, score_name, log_x)
        payload["plots"] = [plot.name]
    write_json(report.output / "report.json", payload)
    table = format_table(payload)
    with atomic_open(report.output / "report.txt", "w") as handle:
        handle.write(table + "\n")
    print(table)
    if not balanced:
        shown = "; ".join(f"{k}: {v}" for k, v in list(unbalanced.items())[:3]) or f"input {n_input} != kept {kept} + dropped {dropped}"
        raise RunFailed(f"accounting mismatch ({shown}); see {report.output / 'report.json'}")
    return payload
