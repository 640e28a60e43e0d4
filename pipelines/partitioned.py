"""The write phase shared by every pipeline: one Ray task per unfinished partition, manifests as markers.

A partition is finished when its manifest carries the fingerprint of the current settings (and, for
filtering jobs, of its drop set); such partitions are skipped, all others are (re)written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from curation.shards import read_manifest
from pipelines.report import RunReport


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_partitions(
    write: Callable[..., dict],
    jobs: Sequence[tuple[str, str, tuple]],
    shards_dir: Path,
    report: RunReport,
    shared: tuple = (),
    desc: str = "write shards",
) -> None:
    """Run `write(*shared, *args, fingerprint)` as a Ray task for each (partition, fingerprint, args) job
    whose manifest differs; collect every manifest (new or resumed) into `report`. `shared` arguments go
    through the object store once."""
    import ray

    remote = ray.remote(num_cpus=1)(write)
    shared_refs = [ray.put(value) for value in shared]
    refs = []
    for partition, fp, args in jobs:
        manifest = read_manifest(shards_dir, partition)
        if manifest and manifest.get("fingerprint") == fp:
            report.add_manifest(manifest, resumed=True)
        else:
            refs.append(remote.remote(*shared_refs, *args, fp))
    with tqdm(total=len(refs), desc=desc, unit="part") as bar:
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            report.add_manifest(ray.get(done[0]), resumed=False)
            bar.update()
