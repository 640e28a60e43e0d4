"""Select over scores: drop the top fraction exactly (a global rank over all scores) and/or above a threshold.

Ties at the cutoff are broken by a stable 64-bit hash of the id (the first 8 bytes of its blake2b digest,
read big-endian), then by the id itself: the same scores always give the same selection, and which tied
samples go does not follow how ids happen to sort. `select_high_scores` works on in-memory arrays (small
populations, calibration). At full scale `select_from_sidecars` reads only the score column of each
sidecar (8 bytes a row on the driver, no per-row Python objects) and returns a small `DropRule` - a few
numbers whatever the number of ties; each write task applies it to its own partition's scores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import UserError
from curation.storage import StoragePath, read_parquet, read_parquet_metadata


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """The tie-break key of each id: its 8-byte blake2b digest as a uint64 (the same on every machine)."""
    digests = b"".join([hashlib.blake2b(i.encode("utf-8", "surrogatepass"), digest_size=8).digest() for i in ids])
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


@dataclass(frozen=True)
class Selection:
    drop_ids: frozenset[str]
    reasons: dict[str, str]  # id -> ledger reason, for the dropped ids
    cutoff: float | None  # the lowest dropped score by the fraction rule (None when that rule dropped nothing)
    population: int
    dropped_fraction: float


def _check_fraction(top_fraction: float) -> None:
    if not 0.0 <= top_fraction < 1.0:
        raise UserError(f"top fraction must be in [0, 1), got {top_fraction}")


def select_high_scores(
    ids: list[str],
    scores: np.ndarray,
    *,
    top_fraction: float | None = None,
    max_score: float | None = None,
    fraction_reason: str,
    threshold_reason: str,
) -> Selection:
    """Drop the `top_fraction` highest scores (exactly round(fraction * N) ids) and any score above `max_score`.

    NaN scores are treated as the highest (an unscorable sample is never silently kept by a fraction rule).
    """
    n = len(ids)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"{n} ids but scores of shape {scores.shape}")
    reasons: dict[str, str] = {}
    cutoff = None
    if top_fraction:
        _check_fraction(top_fraction)
        k = int(round(top_fraction * n))
        if k:
            ranked = _ranked(scores)
            id_rank = np.argsort(np.argsort(np.asarray(ids, dtype=object)))  # the final tie-break
            order = np.lexsort((id_rank, id_hashes(ids), -ranked))
            top = order[:k]
            for i in top:
                reasons[ids[i]] = fraction_reason
            cutoff = float(ranked[top[-1]])
    if max_score is not None:
        for i in np.flatnonzero(~(scores <= max_score)):
            reasons.setdefault(ids[i], threshold_reason)
    return Selection(
        drop_ids=frozenset(reasons),
        reasons=reasons,
        cutoff=cutoff,
        population=n,
        dropped_fraction=len(reasons) / n if n else 0.0,
    )


@dataclass(frozen=True)
class DropRule:
    """Which scores are dropped, small enough to ship to every write task.

    Fraction rule: a score above `cutoff` is dropped; a score equal to it is dropped when every such score
    is (`tie_hash` None), else when its (id hash, id) is at most (`tie_hash`, `tie_id`), the last tied
    sample dropped. Threshold rule: a score above `max_score` is dropped. NaN counts as +inf in both.
    """

    cutoff: float | None
    tie_hash: int | None
    tie_id: str | None
    max_score: float | None
    fraction_reason: str
    threshold_reason: str
    population: int
    dropped: int

    @property
    def dropped_fraction(self) -> float:
        return self.dropped / self.population if self.population else 0.0

    def reasons(self, scores: np.ndarray, ids: Callable[[], Sequence[str]]) -> np.ndarray:
        """The ledger reason per row (None: kept); `ids()` is called only when a row ties with the cutoff."""
        ranked = _ranked(np.asarray(scores, dtype=np.float64))
        out = np.full(len(ranked), None, dtype=object)
        if self.max_score is not None:
            out[ranked > self.max_score] = self.threshold_reason
        if self.cutoff is not None:
            frac = ranked > self.cutoff
            equal = np.flatnonzero(ranked == self.cutoff)
            if self.tie_hash is None:
                frac[equal] = True
            elif len(equal):
                names = ids()
                frac[equal[self.ties_dropped([names[i] for i in equal.tolist()])]] = True
            out[frac] = self.fraction_reason
        return out

    def ties_dropped(self, tied: Sequence[str]) -> np.ndarray:
        """Which of these ids, all scored exactly at the cutoff, are dropped (a bool per id)."""
        if self.tie_hash is None:
            return np.ones(len(tied), dtype=bool)
        hashes = id_hashes(tied)
        bound = np.uint64(self.tie_hash)
        dropped = hashes < bound
        for i in np.flatnonzero(hashes == bound).tolist():
            dropped[i] = tied[i] <= (self.tie_id or "")
        return dropped

    def drops(self, ids: Sequence[str], scores: np.ndarray) -> dict[str, tuple[str, float]]:
        """id -> (reason, score) for the dropped rows of one partition."""
        reasons = self.reasons(scores, lambda: ids)
        return {ids[i]: (reasons[i], float(scores[i])) for i in np.flatnonzero(reasons != None).tolist()}  # noqa: E711

    def partition_key(self, scores: np.ndarray, ids: Callable[[], Sequence[str]]) -> str:
        """A digest of one partition's drops (row, reason, score) for its write fingerprint, from its scores
        alone (ids only on a tie): a partition whose drops did not change keeps its fingerprint."""
        reasons = self.reasons(scores, ids)
        rows = np.flatnonzero(reasons != None)  # noqa: E711
        digest = hashlib.sha256(rows.astype(np.int64).tobytes())
        digest.update(np.asarray(scores, dtype=np.float64)[rows].tobytes())
        digest.update("\n".join(reasons[rows]).encode())
        return digest.hexdigest()[:16]


def _ranked(scores: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(scores), np.inf, scores)


@dataclass(frozen=True)
class ScoreColumns:
    """The scores of every sidecar, concatenated in order, with each sidecar's row offset."""

    paths: list[StoragePath]
    scores: np.ndarray  # float64, nulls (unscored rows) left out
    offsets: np.ndarray  # int64, len(paths) + 1

    def segment(self, index: int) -> np.ndarray:
        return self.scores[self.offsets[index] : self.offsets[index + 1]]


def read_score_columns(paths: Sequence[StoragePath], column: str) -> ScoreColumns:
    """Only the score column of each sidecar, nulls dropped: 8 bytes a row on the driver, filled into one
    buffer sized from the footers (no second copy to concatenate)."""
    buffer = np.empty(sum(read_parquet_metadata(path).num_rows for path in paths), dtype=np.float64)
    offsets = [0]
    for path in paths:
        values = read_parquet(path, columns=[column]).column(column).drop_null().to_numpy()
        buffer[offsets[-1] : offsets[-1] + len(values)] = values
        offsets.append(offsets[-1] + len(values))
    return ScoreColumns(list(paths), buffer[: offsets[-1]], np.asarray(offsets, dtype=np.int64))


def read_scored_ids(path: StoragePath, column: str) -> tuple[list[str], np.ndarray]:
    """One sidecar's scored rows as (ids, scores), in the same order as `read_score_columns` sees them."""
    table = read_parquet(path, columns=["id", column])
    table = table.filter(pc.is_valid(table.column(column)))
    return table.column("id").to_pylist(), table.column(column).to_numpy().astype(np.float64, copy=False)


def select_from_sidecars(
    columns: ScoreColumns,
    column: str,
    *,
    top_fraction: float | None = None,
    max_score: float | None = None,
    fraction_reason: str,
    threshold_reason: str,
) -> DropRule:
    """The same selection as `select_high_scores` over all sidecars, as a DropRule.

    The cutoff is the k-th highest score (an in-place partition of one 8-byte copy). When only some scores equal
    to it are dropped, ids are read only from the sidecars holding such scores, and only their 8-byte hashes are
    kept on the driver to find the boundary (`_tie_boundary`).
    """
    n = len(columns.scores)
    cutoff = None
    tie: tuple[int, str] | None = None
    k = 0
    if top_fraction:
        _check_fraction(top_fraction)
        k = int(round(top_fraction * n))
    if k:
        negated = _ranked(columns.scores)  # the one 8-byte copy, partitioned in place
        np.negative(negated, out=negated)
        negated.partition(k - 1)
        cutoff = float(-negated[k - 1])
        above = int(np.count_nonzero(negated < -cutoff))
        equal = int(np.count_nonzero(negated == -cutoff))
        del negated
        if above + equal > k:
            tie = _tie_boundary(columns, column, cutoff, k - above)
    dropped = k
    if max_score is not None:
        over = int(np.count_nonzero(~(columns.scores <= max_score)))
        dropped = over if cutoff is None or cutoff > max_score else k  # one rule's drops contain the other's
    tie_hash, tie_id = tie if tie is not None else (None, None)
    return DropRule(cutoff, tie_hash, tie_id, max_score, fraction_reason, threshold_reason, n, dropped)


def _tie_boundary(columns: ScoreColumns, column: str, cutoff: float, wanted: int) -> tuple[int, str]:
    """(hash, id) of the `wanted`-th tied sample in (hash, id) order: the last one the rule drops.

    One pass hashes the tied ids of each sidecar holding the cutoff (8 bytes a tie kept, 16 while merged); the
    boundary hash is an in-place partition of the merged copy; ids are read again only from the sidecars holding that very hash.
    """
    holders = [index for index in range(len(columns.paths)) if np.any(_ranked(columns.segment(index)) == cutoff)]
    hashes = [id_hashes(_ids_at(columns.paths[index], column, cutoff)) for index in holders]
    merged = np.concatenate(hashes)
    merged.partition(wanted - 1)
    boundary = merged[wanted - 1]
    below = int(np.count_nonzero(merged < boundary))
    del merged
    same: list[str] = []
    for index, part in zip(holders, hashes, strict=True):
        if np.any(part == boundary):
            tied = _ids_at(columns.paths[index], column, cutoff)
            same.extend(tied[i] for i in np.flatnonzero(part == boundary).tolist())
    return int(boundary), sorted(same)[wanted - below - 1]


def _ids_at(path: StoragePath, column: str, cutoff: float) -> list[str]:
    """The ids of one sidecar's rows scored exactly `cutoff` (NaN as +inf), in row order."""
    table = read_parquet(path, columns=["id", column])
    table = table.filter(pc.is_valid(table.column(column)))
    scores = _ranked(table.column(column).to_numpy().astype(np.float64, copy=False))
    return table.column("id").filter(pa.array(scores == cutoff)).to_pylist()
