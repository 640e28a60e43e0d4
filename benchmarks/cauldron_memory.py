"""Memory of `cauldron build` and `cauldron mix` as the input grows: driver and worker peaks at 1x and 4x.

A synthetic VQAv2-layout source (tiny 8x8 PNG images, three questions per image, so two thirds of the
rows merge) of N and 4N rows goes through `curate cauldron build` and then `curate cauldron mix`, each
scale in a fresh process with a local Ray of 2 CPUs. A sampler thread reads the resident memory of the
driver and of every Ray worker process every 50 ms. The baseline is the 1x run of the same script:
with streaming, the driver's and the workers' peaks should not grow with the input (bounded by a row
group, a merge bucket, a scatter chunk or a shard), so the 4x / 1x ratios should stay near 1; only
NumPy arrays of a few bytes per row (merge keys, picks) grow, and the output is extrapolated from them.

Measured on 2 busy cores (load ~15), 25k -> 100k rows: build driver 282 -> 279 MB (x0.99), build
worker 267 -> 326 MB (x1.22: the merge task's 16-byte keys and group arrays, and its bucket, which is
capped), mix driver 314 -> 320 MB (x1.02: the NumPy picks), mix worker 252 -> 262 MB (x1.04).

    python benchmarks/cauldron_memory.py                 # 25k and 100k rows, ~3 min on 2 cores
    python benchmarks/cauldron_memory.py --rows 50000    # 50k and 200k
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FULL_CAULDRON_IMAGES = 3_600_000
LARGEST_SUBSET_ROWS = 2_325_316  # DVQA's Q/A pairs (Table 14): the most rows one subset task merges
ROWS_PER_FILE = 25_000
QUESTIONS_PER_IMAGE = 3


def write_source(folder: Path, rows: int) -> None:
    """VQAv2-layout parquet files (the Hub script's columns), tiny images, in row groups of 1,000."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for start in range(0, rows, ROWS_PER_FILE):
        batch = []
        for row in range(start, min(rows, start + ROWS_PER_FILE)):
            image_id = row // QUESTIONS_PER_IMAGE
            pixels = np.random.default_rng(image_id).integers(0, 255, (8, 8, 3), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
            answer = ["red", "blue", "two", "yes", "no"][int(rng.integers(5))]
            batch.append(
                {
                    "question_type": "what",
                    "multiple_choice_answer": answer,
                    "image_id": image_id,
                    "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": k} for k in (1, 2, 3)],
                    "answer_type": "other",
                    "question_id": row,
                    "question": f"What is shown in picture {image_id}?",
                    "image": {"bytes": buffer.getvalue(), "path": None},
                }
            )
        pq.write_table(pa.Table.from_pylist(batch), folder / f"train-{start // ROWS_PER_FILE:05d}.parquet", row_group_size=1000)


def write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        ["red blue two yes no what is shown in picture"] * 10,
        trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>"], show_progress=False),
    )
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>").save_pretrained(folder)


class PeakSampler:
    """Peak resident memory of this process and of the largest Ray worker, sampled every 50 ms."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.driver = self.worker = 0
        self.running = False

    def _workers(self):
        """This run's Ray workers: descendants of this process (other Ray clusters on the machine are not)."""
        for process in self.me.children(recursive=True):
            try:
                cmdline = " ".join(process.cmdline())
            except self.psutil.Error:
                continue
            if "default_worker.py" in cmdline or cmdline.startswith("ray::"):
                yield process

    def _run(self) -> None:
        while self.running:
            self.driver = max(self.driver, self.me.memory_info().rss)
            for process in list(self._workers()):
                try:
                    self.worker = max(self.worker, process.memory_info().rss)
                except self.psutil.Error:
                    pass
            time.sleep(0.05)

    def __enter__(self) -> PeakSampler:
        self.driver = self.worker = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()


def child(rows: int) -> dict:
    """One scale in this process: write the source, build, mix; peaks and times as JSON."""
    import ray

    from pipelines.cauldron import BuildConfig, SourceSpec, run_build
    from pipelines.cauldron_mix import MixConfig, run_mix

    work = Path(tempfile.mkdtemp(prefix="cauldron-memory-"))
    write_source(work / "raw" / "vqav2", rows)
    write_tokenizer(work / "tokenizer")
    (work / "mixture.yaml").write_text("name: bench\nunit: percent\ndatasets: {vqav2: 100}\n")
    start_ray = lambda: ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)  # noqa: E731
    start_ray()
    sampler = PeakSampler()
    with sampler:
        time.sleep(0.3)
    idle = {"driver": sampler.driver, "worker": sampler.worker}
    result = {"rows": rows, "idle_driver_mb": idle["driver"] / 2**20}
    started = time.perf_counter()
    with sampler:
        report = run_build(BuildConfig([SourceSpec("vqav2", "vqav2", work / "raw" / "vqav2")], work / "built"))
    result.update(
        build_s=time.perf_counter() - started,
        build_driver_mb=sampler.driver / 2**20,
        build_worker_mb=sampler.worker / 2**20,
        kept=report["counts"]["kept"],
    )
    ray.shutdown()  # fresh workers, so the mix peaks do not carry what the build's workers kept
    start_ray()
    started = time.perf_counter()
    with sampler:
        mixed = run_mix(MixConfig([work / "built"], work / "sft", str(work / "tokenizer"), work / "mixture.yaml"))
    result.update(
        mix_s=time.perf_counter() - started,
        mix_driver_mb=sampler.driver / 2**20,
        mix_worker_mb=sampler.worker / 2**20,
        samples=mixed["samples"],
    )
    ray.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=25_000, help="rows at 1x (4x is also run)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    runs = []
    for rows in (args.rows, 4 * args.rows):
        out = subprocess.run([sys.executable, __file__, "--child", str(rows)], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'rows':>8} {'build s':>8} {'driver MB':>10} {'worker MB':>10} {'mix s':>7} {'driver MB':>10} {'worker MB':>10}")
    for run in runs:
        print(
            f"{run['rows']:>8} {run['build_s']:>8.1f} {run['build_driver_mb']:>10.0f} {run['build_worker_mb']:>10.0f} "
            f"{run['mix_s']:>7.1f} {run['mix_driver_mb']:>10.0f} {run['mix_worker_mb']:>10.0f}"
        )
    small, large = runs
    # The driver sees every row of the run; a worker at most one subset (the merge task), and its bucket
    # (BUCKET_BYTES) and fingerprint cache are capped, so a per-row line through them overestimates.
    scale = {
        "driver": (FULL_CAULDRON_IMAGES * QUESTIONS_PER_IMAGE, "all ~11M source rows of The Cauldron"),
        "worker": (LARGEST_SUBSET_ROWS, "its largest subset, DVQA's 2.3M rows (an upper bound)"),
    }
    for step in ("build", "mix"):
        for side in ("driver", "worker"):
            key = f"{step}_{side}_mb"
            growth = max(0.0, (large[key] - small[key]) / (large["rows"] - small["rows"]) * 2**20)
            rows, what = scale[side]
            full = large[key] + growth * max(0, rows - large["rows"]) / 2**20
            print(
                f"{step} {side}: 4x/1x = {large[key] / small[key]:.2f}, {growth:.0f} bytes per added row; at {what}: ~{full / 1024:.1f} GB"
            )
    print(f"time: build x{large['build_s'] / small['build_s']:.1f}, mix x{large['mix_s'] / small['mix_s']:.1f} for x4 rows")


if __name__ == "__main__":
    main()
