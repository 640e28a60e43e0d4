"""Helpers of the object-storage pipeline tests: run a command as a user would, compare output trees."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from curation.storage import ObjectPath, StoragePath, read_parquet

ROOT = Path(__file__).resolve().parents[2]
TINY_FALCON = str(ROOT / "examples" / "models" / "tiny-falcon")
RUN_TIMEOUT_S = 420
VOLATILE = {"report.json", "report.txt", "perplexity_histogram.png", "nsfw_histogram.png"}  # timings and plots
MANIFEST_SKIP = ("seconds", "fingerprint")  # timings; the fingerprint covers the input files' identities
LOCATION_KEYS = {b"cleaning", b"input"}  # a score sidecar's keys of its input file: identity (and location) differ


def command(program: str, *argv: object) -> list[str]:
    """`curate ...` or `train ...` as a subprocess command line (the entry points' own `main`)."""
    module = {"curate": "pipelines.cli", "train": "training.cli"}[program]
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())", *map(str, argv)]


def run(program: str, *argv: object) -> subprocess.CompletedProcess:
    """Run to the end; the S3 endpoint and credentials reach it (and its Ray workers) through the environment."""
    result = subprocess.run(
        command(program, *argv),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, f"{program} failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return result


def _relative(path: StoragePath, root: StoragePath) -> str:
    """`path` below `root`; both are local or both are in the object store."""
    if isinstance(path, ObjectPath):
        return str(path.relative_to(root))
    assert isinstance(root, Path)
    return str(path.relative_to(root))


def snapshot(output: StoragePath, skip: tuple[str, ...] = (), manifest_skip: tuple[str, ...] = MANIFEST_SKIP) -> dict[str, object]:
    """Relative path -> sha256 of every output file but reports, plots and paths starting with `skip`;
    manifests without `manifest_skip` (timings, and the fingerprint, which holds the input files' identities)."""
    files: dict[str, object] = {}
    for path in sorted(p for p in output.rglob("*") if p.is_file() and p.name not in VOLATILE):
        relative = _relative(path, output)
        if relative.startswith(skip):
            continue
        if path.name.endswith(".manifest.json"):
            files[relative] = {k: v for k, v in json.loads(path.read_text()).items() if k not in manifest_skip}
        elif relative.startswith("scores/"):
            table = read_parquet(path)
            metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k not in LOCATION_KEYS}
            files[relative] = (table.replace_schema_metadata(None).to_pylist(), metadata)
        else:
            files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def upload_tree(local: Path, remote: ObjectPath) -> None:
    """Copy a local folder's files to `remote`, keeping relative paths."""
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        (remote / str(path.relative_to(local))).upload(path)
