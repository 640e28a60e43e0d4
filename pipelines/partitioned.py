"""The per-partition task machinery shared by every pipeline: failures, gathering, the write phase.

A partition is finished when its manifest carries the fingerprint of the current settings, of its input
files' identities (`curation.storage.stat_keys`: a file changed under the same name is not the one the
manifest was written from) and, for filtering jobs, of its drop set; such partitions are skipped, all
others are (re)written.

A partition whose task fails for a reason of its own (its input is unusable, an output write fails,
its accounting does not add up) is recorded, the other partitions go on, and the phase then ends the
run with one line naming the failed partitions and why (all of them in `failed_partitions.json`). A
failed partition has no manifest, so the same command retries exactly those. Any other exception is a
programming error and keeps its traceback.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from tqdm import tqdm

from curation.atomic import write_json
from curation.pairs.download import DownloadIncompleteError
from curation.readers import UnreadableInputError
from curation.shards import read_manifests
from curation.storage import StoragePath, stat_keys
from pipelines.errors import PartitionAccountingError, RunFailed
from pipelines.report import RunReport

# MemoryError: a worker that ran short (e.g. decoding an image) fails its partition, not the run
PARTITION_ERRORS = (OSError, MemoryError, UnreadableInputError, DownloadIncompleteError, PartitionAccountingError)
FAILURES_FILE = "failed_partitions.json"
_SHOWN = 3


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe_failure(exc: BaseException) -> str:
    """One line for a partition failure (the task's own exception, not Ray's wrapper with its traceback)."""
    cause = getattr(exc, "cause", None) or exc
    text = " ".join(str(cause).split())
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


@dataclass
class PartitionFailures:
    """Partitions that failed in this run, with why; `raise_if_any` ends the run after a phase."""

    output: StoragePath
    failed: dict[str, str] = field(default_factory=dict)

    def add(self, partition: str, why: str) -> None:
        self.failed[partition] = why

    def __contains__(self, partition: str) -> bool:
        return partition in self.failed

    def raise_if_any(self, phase: str) -> None:
        if not self.failed:
            (self.output / FAILURES_FILE).unlink(missing_ok=True)
            return
        write_json(self.output / FAILURES_FILE, {"phase": phase, "failed": self.failed})
        shown = "; ".join(f"{name}: {why}" for name, why in list(self.failed.items())[:_SHOWN])
        more = f" (and {len(self.failed) - _SHOWN} more)" if len(self.failed) > _SHOWN else ""
        raise RunFailed(
            f"{len(self.failed)} partition(s) failed in the {phase} phase and were not finished: {shown}{more}; "
            f"all are listed in {self.output / FAILURES_FILE}. Fix the cause and run the same command again: "
            "finished partitions are kept"
        )


def gather(
    jobs: Sequence[tuple[str, Callable[[], Any]]], failures: PartitionFailures, desc: str, window: int | None = None
) -> Iterator[tuple[str, Any]]:
    """(partition, result) for each (partition, submit) job as its Ray task finishes; `submit()` starts the
    task and returns its object ref, with at most `window` tasks in flight (all at once when None).

    A task that raised one of PARTITION_ERRORS is recorded in `failures` and the others go on.
    """
    import ray

    waiting = list(jobs)
    running: dict[Any, str] = {}
    with tqdm(total=len(waiting), desc=desc, unit="part") as bar:
        while waiting or running:
            while waiting and (window is None or len(running) < window):
                name, submit = waiting.pop(0)
                running[submit()] = name
            done, _ = ray.wait(list(running), num_returns=1)
            name = running.pop(done[0])
            try:
                result = ray.get(done[0])
            except PARTITION_ERRORS as exc:
                failures.add(name, describe_failure(exc))
            else:
                yield name, result
            bar.update()


@dataclass(frozen=True)
class PartitionJob:
    """One write task: the partition it finishes, the fingerprint its manifest will carry, its arguments."""

    partition: str
    fingerprint: str
    args: tuple


def keyed_by_inputs(jobs: Sequence[PartitionJob], inputs: Mapping[str, Sequence[StoragePath]]) -> list[PartitionJob]:
    """The jobs with the identity of each partition's input files (`inputs[partition]`, by name and
    `stat_keys`, one listing per folder) folded into its fingerprint: a partition whose input changed under
    the same name is written again, the others resume."""
    paths = [path for files in inputs.values() for path in files]
    keys = dict(zip(paths, stat_keys(paths), strict=True))
    return [replace(job, fingerprint=fingerprint(job.fingerprint, [(p.name, keys[p]) for p in inputs[job.partition]])) for job in jobs]


def write_partitions(
    write: Callable[..., dict],
    jobs: Sequence[PartitionJob],
    shards_dir: StoragePath,
    report: RunReport,
    shared: tuple = (),
    desc: str = "write shards",
    failures: PartitionFailures | None = None,
) -> None:
    """Run `write(*shared, *job.args, job.fingerprint)` as a Ray task for each job whose manifest differs;
    collect every manifest (new or resumed) into `report`. `shared` arguments go through the object store
    once. Failed partitions end the run (see the module docstring)."""
    import ray

    failures = failures or PartitionFailures(report.output)
    remote = ray.remote(num_cpus=1)(write)
    shared_refs = [ray.put(value) for value in shared]
    pending = []
    manifests = read_manifests(shards_dir, [job.partition for job in jobs])
    for job in jobs:
        manifest = manifests.get(job.partition)
        if manifest and manifest.get("fingerprint") == job.fingerprint:
            report.add_manifest(manifest, resumed=True)
        else:
            pending.append((job.partition, partial(remote.remote, *shared_refs, *job.args, job.fingerprint)))
    for _, manifest in gather(pending, failures, desc):
        report.add_manifest(manifest, resumed=False)
    failures.raise_if_any("write")
