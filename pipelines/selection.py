"""The select phase shared by every scored pipeline: sidecars -> a DropRule -> one write job per partition.

The driver holds the score column only (8 bytes a scored row) and the small rule; each write task derives
its own drops from the rule and its partition's sidecar, so no per-sample Python object reaches the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from curation.readers import Partition
from curation.selection import DropRule, ScoreColumns, read_score_columns, read_scored_ids, select_from_sidecars
from curation.storage import StoragePath
from pipelines.partitioned import PartitionJob, fingerprint


@dataclass(frozen=True)
class ScoreSelection:
    """A selection over every partition's sidecar: the rule, and the scores (for the report's histogram)."""

    rule: DropRule
    columns: ScoreColumns
    column: str

    @property
    def scores(self) -> np.ndarray:
        return self.columns.scores

    def jobs(self, partitions: list[Partition], run_key: object) -> list[PartitionJob]:
        """One write job per partition, `(partition,)`; its fingerprint follows its own drops only. The rule
        is not in a job's arguments: it goes to every write task once, as a `write_partitions` shared value."""
        jobs = []
        for index, part in enumerate(partitions):
            path = self.columns.paths[index]
            drops = self.rule.partition_key(self.columns.segment(index), self._ids_of(path))
            jobs.append(PartitionJob(part.name, fingerprint(run_key, drops), (part,)))
        return jobs

    def _ids_of(self, path: StoragePath) -> Callable[[], Sequence[str]]:
        """Reads a sidecar's ids when called (the rule needs them only for a tie with the cutoff)."""
        return lambda: read_scored_ids(path, self.column)[0]

    def summary(self, **settings: object) -> dict:
        return {
            "population": self.rule.population,
            **settings,
            "cutoff": self.rule.cutoff,
            "dropped": self.rule.dropped,
            "dropped_fraction": self.rule.dropped_fraction,
        }


def select_scores(
    scores_dir: StoragePath,
    partitions: list[Partition],
    column: str,
    *,
    top_fraction: float | None,
    max_score: float | None,
    fraction_reason: str,
    threshold_reason: str,
) -> ScoreSelection:
    columns = read_score_columns([scores_dir / f"{p.name}.parquet" for p in partitions], column)
    rule = select_from_sidecars(
        columns,
        column,
        top_fraction=top_fraction,
        max_score=max_score,
        fraction_reason=fraction_reason,
        threshold_reason=threshold_reason,
    )
    return ScoreSelection(rule, columns, column)


def partition_drops(rule: DropRule, sidecar: StoragePath, column: str) -> dict[str, tuple[str, float]]:
    """In a write task: id -> (reason, score) for this partition's dropped rows (no read when no rule is set)."""
    if rule.cutoff is None and rule.max_score is None:
        return {}
    ids, scores = read_scored_ids(sidecar, column)
    return rule.drops(ids, scores)
