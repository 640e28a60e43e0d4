"""`curate nsfw-calibrate`: the NSFW threshold for a target recall on a labelled sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from curation.pairs.calibration import calibrate, precision_recall_curve
from pipelines.errors import PipelineError


def _read_table(path: Path):
    if not path.exists():
        raise PipelineError(f"not found: {path}")
    return pcsv.read_csv(path) if path.suffix == ".csv" else pq.read_table(path)


def load_labelled_scores(labels: Path, scores: Path | None) -> tuple[np.ndarray, np.ndarray]:
    table = _read_table(labels)
    columns = set(table.column_names)
    if "label" not in columns:
        raise PipelineError(f"{labels} needs a `label` column (1 = NSFW, 0 = safe)")
    if scores is None:
        if "score" not in columns:
            raise PipelineError(f"{labels} has no `score` column; pass --scores with a `curate pairs` scores/ folder")
        return table.column("score").to_numpy(zero_copy_only=False).astype(float), table.column("label").to_numpy(
            zero_copy_only=False
        ).astype(bool)
    sidecar = pq.read_table(scores, columns=["id", "nsfw"])
    known = {i: s for i, s in zip(sidecar.column("id").to_pylist(), sidecar.column("nsfw").to_pylist(), strict=True) if s is not None}
    ids, labels_ = table.column("id").to_pylist(), table.column("label").to_pylist()
    missing = [i for i in ids if i not in known]
    if missing:
        raise PipelineError(f"{len(missing)} labelled ids have no score in {scores} (e.g. {missing[0]})")
    return np.array([known[i] for i in ids], dtype=float), np.array(labels_, dtype=bool)


def run_calibration(labels: Path, scores: Path | None, target_recall: float, plot: Path | None) -> dict:
    if not 0 < target_recall <= 1:
        raise PipelineError(f"--target-recall must be in (0, 1], got {target_recall}")
    values, positives = load_labelled_scores(labels, scores)
    result = calibrate(values, positives, target_recall)
    print(
        f"threshold {result.threshold:.6g}: recall {result.recall:.3f}, precision {result.precision:.3f}, "
        f"removes {result.removed} of {result.population} ({result.removal_rate:.2%}); {result.positives} labelled NSFW\n"
        f"use: curate pairs ... --nsfw-threshold {result.threshold:.9g}"
    )
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        curve = precision_recall_curve(values, positives)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(curve.recall, curve.precision, color="#4c72b0")
        ax.scatter([result.recall], [result.precision], color="#c44e52", zorder=3, label=f"threshold {result.threshold:.4g}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        plt.close(fig)
    return {"threshold": result.threshold, "precision": result.precision, "recall": result.recall, "removal_rate": result.removal_rate}
