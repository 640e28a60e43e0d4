"""Where training progress goes: a console line every few steps, every step to `metrics.jsonl`,
optionally TensorBoard, and at the end a loss summary with a small text chart and `loss.png`.
Evaluations during training (`eval.every`) go to the same file as records with `"kind": "eval"`.
With `train.output_dir` on object storage, where nothing can be appended to, `metrics.jsonl` is kept in
a local scratch file and uploaded whole every `logging.every` steps, after an evaluation and at the end."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from curation.atomic import atomic_open
from curation.storage import ObjectPath, StoragePath

METRICS_FILE = "metrics.jsonl"
EVAL_KIND = "eval"
PLOT_FILE = "loss.png"


class Reporter:
    """Rank 0's log sink. On resume, records at or after the resumed step are dropped from the JSONL
    first, so the file tells one consistent story."""

    def __init__(self, output_dir: StoragePath, every: int, tensorboard: bool, start_step: int) -> None:
        self.output_dir = output_dir
        self.every = every
        self.path = output_dir / METRICS_FILE
        # the file appended to: the metrics file itself, or for an object a local copy uploaded by `sync`
        self.local = self.path if isinstance(self.path, Path) else Path(tempfile.mkdtemp(prefix="potion-metrics-")) / METRICS_FILE
        self.records: list[dict[str, Any]] = []
        kept: list[dict[str, Any]] = []
        if self.path.exists():
            kept = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            kept = [record for record in kept if record["step"] <= start_step]
            self.records = [record for record in kept if record.get("kind") != EVAL_KIND]
        self.local.write_text("".join(json.dumps(record) + "\n" for record in kept))
        self.sync()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise RuntimeError("logging.tensorboard needs the `tensorboard` package") from error
            self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def sync(self) -> None:
        """Upload the metrics file when it lives on object storage (one whole object, replaced at once)."""
        if isinstance(self.path, ObjectPath):
            self.path.upload(self.local)

    def log(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with self.local.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if record["step"] % self.every == 0:
            self.sync()
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(key, value, record["step"])
        if record["step"] % self.every == 0 or record["step"] == 1:
            print(console_line(record), flush=True)

    def log_eval(self, record: dict[str, Any]) -> None:
        """An evaluation record: to the file, TensorBoard (`eval/...`) and always to the console."""
        with self.local.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        self.sync()
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"eval/{key}", value, record["step"])
        print(eval_line(record), flush=True)

    def close(self) -> None:
        self.sync()
        if self.writer is not None:
            self.writer.close()


def console_line(record: dict[str, Any]) -> str:
    parts = [
        f"step {record['step']:>6}",
        f"loss {record['loss']:.4f}",
        f"lr {record['lr']:.2e}",
        f"grad {record['grad_norm']:.3f}",
        f"{record['tokens_per_s']:,.0f} tok/s",
        f"{record['images_per_s']:,.1f} img/s",
    ]
    if record.get("mfu") is not None:
        parts.append(f"MFU {100 * record['mfu']:.1f}%")
    return "  ".join(parts)


def eval_line(record: dict[str, Any]) -> str:
    parts = [f"eval {record['step']:>6}"]
    parts += [f"{key} {value:.4f}" for key, value in record.items() if key.startswith("val_loss")]
    parts += [
        f"{key.removeprefix('bench/')} {'-' if value is None else f'{value:.1f}'}"
        for key, value in record.items()
        if key.startswith("bench/")
    ]
    return "  ".join(parts + [f"({record['seconds']:.1f}s)"])


def smoothed(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_summary(records: list[dict[str, Any]], rows: int = 12, width: int = 40) -> str:
    """A readable loss curve: evenly spaced steps with the smoothed loss as a bar, and the overall change."""
    if not records:
        return "no steps logged"
    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    window = max(1, len(losses) // 10)
    smooth = smoothed(losses, window)
    low, high = min(smooth), max(smooth)
    count = min(rows, len(records))
    picks = sorted({round(i * (len(records) - 1) / max(1, count - 1)) for i in range(count)})
    lines = [f"loss curve (mean of {window} step{'s' if window > 1 else ''}):", "    step     loss"]
    for index in picks:
        fraction = (smooth[index] - low) / (high - low) if high > low else 1.0
        lines.append(f"  {steps[index]:>6}  {smooth[index]:7.4f}  " + "#" * max(1, round(fraction * width)))
    head = sum(losses[:window]) / window
    tail = sum(losses[-window:]) / window
    change = 100 * (tail - head) / head if head else math.nan
    lines.append(f"loss {head:.4f} -> {tail:.4f} ({change:+.1f}%) over {len(records)} steps")
    return "\n".join(lines)


def plot_losses(records: list[dict[str, Any]], path: StoragePath) -> StoragePath:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(steps, losses, alpha=0.35, label="loss")
    axes.plot(steps, smoothed(losses, max(1, len(losses) // 10)), label="smoothed")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (answer / text tokens)")
    axes.set_title("Training loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:  # a local file or an object
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)
    return path
