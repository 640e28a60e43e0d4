"""Memory and time of `curate obelics` as the input grows, cleaning once (stored) or twice (re-cleaned).

Synthetic OBELICS partitions of short documents (text, image URL, text; 2% with their only image on a
do-not-train domain, 1% malformed rows) of N and 4N documents, 5,000 a partition, go through
`run_obelics` with the tiny Falcon in `examples/models/tiny-falcon`, `--images keep-urls` and
`--drop-top-ppl 0.05`, on a local Ray of 2 CPUs (one perplexity actor, write tasks on the other CPU).
Each (scale, path) runs in a fresh process:

- stored: the default; the score phase keeps each cleaning in `cleaned/`, the write phase reads it.
- re-cleaned: `keep_cleaned=False`, the write phase cleans every partition again (the path before).

A sampler thread reads the resident memory (RSS) of the driver and of every Ray worker process of the
run every 50 ms; a worker counts as the perplexity actor or as a write task from its process title
(`ray::PerplexityActor...`, `ray::write_partition`), and keeps that role after its task ends, since
Ray reuses the process. RSS counts shared pages too (the model's files, object-store pages a worker
touched), so it is an upper bound of what each process adds. Phase times are measured on the driver
around the score and write phases; the cleaning passes come from the report. Wall times on a shared
machine are noisy, so the CPU time a document of cleaning a partition, storing it and reading it back is
also measured in one process (best of three).

The driver should grow only by the selection's few bytes a document and the workers not at all when
the partition count grows with the input, since every per-document object lives within one partition.

Measured on 2 busy cores, 25k -> 100k -> 200k documents (stored path): driver 291 -> 295 -> 299 MB,
actor 1537 -> 1594 -> 1545 MB, write task 272 -> 272 -> 271 MB; one cleaning pass a partition against
two; CPU a document: clean 42 us, store 7 us, read back 5.5 us (benchmarks/RESULTS.md).

    python benchmarks/obelics_memory.py                  # 25k and 100k documents, ~10 min on 2 busy cores
    python benchmarks/obelics_memory.py --docs 50000     # 50k and 200k
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
TINY_LM = ROOT / "examples" / "models" / "tiny-falcon"
PARTITION_DOCS = 5_000
OBELICS_DOCS = 141_047_697
BLOCKED = "blocked.example"
WORDS = [
    "the",
    "a",
    "of",
    "in",
    "on",
    "cat",
    "dog",
    "house",
    "river",
    "model",
    "image",
    "picture",
    "text",
    "small",
    "large",
    "red",
    "blue",
    "green",
    "old",
    "new",
    "runs",
    "sits",
    "reads",
    "writes",
    "shows",
    "holds",
    "quickly",
    "slowly",
    "here",
    "there",
]
ROLES = {"PerplexityActor": "actor", "write_partition": "write"}  # process title -> role


def write_input(folder: Path, docs: int, partition_docs: int = PARTITION_DOCS, seed: int = 0) -> int:
    """`docs` OBELICS rows in the Hub schema, `partition_docs` a parquet file; returns the file count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for start in range(0, docs, partition_docs):
        rows = []
        for n in range(start, min(docs, start + partition_docs)):
            if n % 100 == 99:
                rows.append({"texts": ["x"], "images": [None, None], "metadata": "[]", "general_metadata": "{}"})
                continue
            host = BLOCKED if n % 50 == 7 else "img.example"
            url = f"https://{host}/{n}.jpg"
            text = " ".join(rng.choices(WORDS, k=rng.randint(4, 8)))
            rows.append(
                {
                    "texts": [text, None, "More text."],
                    "images": [None, url, None],
                    "metadata": json.dumps([None, {"src": url, "alt_text": "a picture"}, None]),
                    "general_metadata": json.dumps({"url": f"https://site.example/{n}", "warc_record_offset": n}),
                }
            )
        pq.write_table(pa.Table.from_pylist(rows), folder / f"part-{start // partition_docs:05d}.parquet")
    return -(-docs // partition_docs)


class PeakSampler:
    """Peak RSS of this process and, by role, of this run's Ray workers, sampled every 50 ms."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.running = False
        self.reset()

    def reset(self) -> None:
        self.driver = 0
        self.roles: dict[int, str] = {}
        self.peaks: dict[int, int] = {}

    def _sample_workers(self) -> None:
        """Workers are descendants of this process (other Ray clusters on the machine are not)."""
        for process in self.me.children(recursive=True):
            try:
                title = " ".join(process.cmdline())
                rss = process.memory_info().rss
            except self.psutil.Error:
                continue
            if not (title.startswith("ray::") or "default_worker.py" in title):
                continue
            role = next((r for name, r in ROLES.items() if name in title), None)
            if role:
                self.roles[process.pid] = role
            self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)

    def _run(self) -> None:
        while self.running:
            self.driver = max(self.driver, self.me.memory_info().rss)
            self._sample_workers()
            time.sleep(0.05)

    def peak(self, role: str | None = None) -> int:
        return max((rss for pid, rss in self.peaks.items() if role is None or self.roles.get(pid) == role), default=0)

    def __enter__(self) -> Self:
        self.reset()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def child(inputs: Path, output: Path, keep_cleaned: bool) -> dict:
    """One run in this fresh process: peaks, phase times and cleaning passes as JSON."""
    import ray

    from curation.perplexity import PerplexityConfig
    from pipelines import obelics

    (output.parent / "dnt.txt").write_text(f"{BLOCKED}\n")
    config = obelics.ObelicsConfig(
        inputs=[inputs],
        output=output,
        ppl=PerplexityConfig(model=str(TINY_LM)),
        drop_top_ppl=0.05,
        do_not_train=[output.parent / "dnt.txt"],
        images="keep-urls",
        keep_cleaned=keep_cleaned,
    )
    times: dict[str, float] = {}
    stored = {"bytes": 0}

    def timed(name: str, function):
        def run(*args, **kwargs):
            if name == "write":
                stored["bytes"] = _folder_bytes(output / "cleaned") if (output / "cleaned").exists() else 0
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                times[name] = time.perf_counter() - started

        return run

    obelics._score = timed("score", obelics._score)
    obelics.write_partitions = timed("write", obelics.write_partitions)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    sampler = PeakSampler()
    with sampler:
        time.sleep(0.5)
    idle_driver = sampler.driver
    started = time.perf_counter()
    with sampler:
        report = obelics.run_obelics(config)  # in the Ray started above
    ray.shutdown()
    details = report["details"]
    return {
        "docs": report["counts"]["input"],
        "path": "stored" if keep_cleaned else "re-cleaned",
        "seconds": time.perf_counter() - started,
        "score_s": times["score"],
        "write_s": times["write"],
        "idle_driver_mb": idle_driver / 2**20,
        "driver_mb": sampler.driver / 2**20,
        "actor_mb": sampler.peak("actor") / 2**20,
        "write_mb": sampler.peak("write") / 2**20,
        "worker_mb": sampler.peak() / 2**20,
        "stored_mb": stored["bytes"] / 2**20,
        "cleaned_score": details["partitions cleaned in the score phase"],
        "cleaned_write": details["partitions cleaned again in the write phase"],
        "balanced": report["counts"]["balanced"],
        "kept": report["counts"]["kept"],
    }


def cpu_per_document(work: Path, partition_docs: int) -> dict[str, float]:
    """CPU microseconds a document, in this process, of cleaning one partition, storing it, reading it back."""
    from curation.cleaned_store import open_cleaned, save_cleaned
    from curation.obelics import CleaningSettings, clean_partition
    from curation.optout import OptOutVerdicts
    from curation.optout_lists import DoNotTrainList

    write_input(work / "cpu-in", partition_docs)
    path = next((work / "cpu-in").glob("*.parquet"))
    verdicts = OptOutVerdicts(DoNotTrainList.of([BLOCKED]))
    best = {"clean": float("inf"), "store": float("inf"), "read": float("inf")}
    for _ in range(3):  # the best of three: other processes on the machine only add to CPU time
        started = time.process_time()
        cleaned = clean_partition(path, "p", CleaningSettings(), verdicts)
        stored = time.process_time()
        save_cleaned(work / "cpu-cleaned", cleaned, "key")
        read = time.process_time()
        reopened = open_cleaned(work / "cpu-cleaned", "key")
        assert reopened is not None and sum(1 for _ in reopened.documents) == len(cleaned.documents)
        done = time.process_time()
        for name, seconds in (("clean", stored - started), ("store", read - stored), ("read", done - read)):
            best[name] = min(best[name], seconds * 1e6 / partition_docs)
    shutil.rmtree(work / "cpu-in")
    shutil.rmtree(work / "cpu-cleaned")
    return best


def run_scale(docs: int, partition_docs: int, paths: list[bool], work: Path) -> list[dict]:
    inputs = work / f"in-{docs}"
    partitions = write_input(inputs, docs, partition_docs)
    runs = []
    for keep_cleaned in paths:
        output = work / f"out-{docs}-{keep_cleaned}"
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(inputs), str(output), str(int(keep_cleaned))],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if out.returncode:
            raise SystemExit(f"the run of {docs} documents failed:\n{out.stderr[-3000:]}")
        runs.append({**json.loads(out.stdout.strip().splitlines()[-1]), "partitions": partitions})
        shutil.rmtree(output)
    shutil.rmtree(inputs)
    return runs


def print_table(runs: list[dict]) -> None:
    print(
        f"{'docs':>8} {'path':>10} {'cleanings':>9} {'wall s':>7} {'score s':>7} {'write s':>7} {'driver MB':>9} "
        f"{'actor MB':>8} {'write MB':>8} {'stored MB':>9}"
    )
    for run in runs:
        passes = (run["cleaned_score"] + run["cleaned_write"]) / run["partitions"]
        print(
            f"{run['docs']:>8,} {run['path']:>10} {passes:>9.1f} {run['seconds']:>7.1f} {run['score_s']:>7.1f} "
            f"{run['write_s']:>7.1f} {run['driver_mb']:>9.0f} {run['actor_mb']:>8.0f} {run['write_mb']:>8.0f} "
            f"{run['stored_mb']:>9.1f}"
        )


def print_scaling(runs: list[dict]) -> None:
    """Growth from 1x to 4x, and a line through it to OBELICS's 141M documents (per-partition peaks stay)."""
    for path in ("stored", "re-cleaned"):
        scales = [r for r in runs if r["path"] == path]
        if len(scales) < 2:
            continue
        small, large = scales[0], scales[-1]
        added = large["docs"] - small["docs"]
        for key, what in (("driver_mb", "driver"), ("actor_mb", "actor"), ("write_mb", "write task")):
            per_doc = max(0.0, (large[key] - small[key]) * 2**20 / added)
            print(
                f"{path} {what}: x{large[key] / small[key]:.2f} for x{large['docs'] / small['docs']:.0f} documents, "
                f"{per_doc:.1f} bytes per added document"
            )
        driver_growth = max(0.0, (large["driver_mb"] - small["driver_mb"]) * 2**20 / added)
        full = large["driver_mb"] + driver_growth * (OBELICS_DOCS - large["docs"]) / 2**20
        print(
            f"{path} driver at {OBELICS_DOCS / 1e6:.0f}M documents: ~{full / 1024:.1f} GB by this line; "
            f"time x{large['seconds'] / small['seconds']:.1f}"
        )
    stored = [r for r in runs if r["path"] == "stored" and r["stored_mb"]]
    if stored:
        per_doc = stored[-1]["stored_mb"] * 2**20 / stored[-1]["docs"]
        print(f"stored cleanings: {per_doc:.0f} bytes a document here (short documents, URLs only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=25_000, help="documents at 1x (4x is also run)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4], help="multiples of --docs to run")
    parser.add_argument("--partition-docs", type=int, default=PARTITION_DOCS, help=f"documents a partition (default {PARTITION_DOCS:,})")
    parser.add_argument("--stored-only", action="store_true", help="skip the re-cleaned path")
    parser.add_argument("--json", type=Path, help="also write the runs here")
    parser.add_argument("--child", nargs=3, metavar=("INPUT", "OUTPUT", "KEEP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]), args.child[2] == "1")))
        return
    paths = [True] if args.stored_only else [True, False]
    runs = []
    with tempfile.TemporaryDirectory(prefix="obelics-memory-") as tmp:
        cpu = cpu_per_document(Path(tmp), args.partition_docs)
        for scale in args.scales:
            runs += run_scale(scale * args.docs, args.partition_docs, paths, Path(tmp))
    print_table(runs)
    print_scaling(sorted(runs, key=lambda r: r["docs"]))
    print(f"CPU a document, one process: clean {cpu['clean']:.0f} us, store {cpu['store']:.0f} us, read back {cpu['read']:.0f} us")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "cpu_us_per_doc": cpu}, indent=2))


if __name__ == "__main__":
    main()
