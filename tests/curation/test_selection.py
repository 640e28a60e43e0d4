import numpy as np
import pytest

from curation.selection import select_high_scores


def select(ids, scores, **kw):
    return select_high_scores(ids, np.array(scores, dtype=float), fraction_reason="top", threshold_reason="max", **kw)


def test_drops_exactly_the_top_fraction_and_reports_the_cutoff():
    rng = np.random.default_rng(0)
    scores = rng.lognormal(size=1000)
    ids = [f"d{i}" for i in range(1000)]
    sel = select(ids, scores, top_fraction=0.05)
    assert len(sel.drop_ids) == 50
    dropped = np.array([s for i, s in zip(ids, scores) if i in sel.drop_ids])
    kept = np.array([s for i, s in zip(ids, scores) if i not in sel.drop_ids])
    assert dropped.min() > kept.max()
    assert sel.cutoff == pytest.approx(dropped.min())
    assert sel.cutoff == pytest.approx(np.sort(scores)[-50])
    assert sel.dropped_fraction == pytest.approx(0.05)


def test_ties_are_broken_by_id_hash_deterministically():
    from curation.selection import id_hashes

    sel = select(["c", "a", "b", "d"], [1.0, 5.0, 5.0, 5.0], top_fraction=0.5)
    tied = sorted(["a", "b", "d"], key=lambda i: int(id_hashes([i])[0]))
    assert sel.drop_ids == set(tied[:2])
    assert select(["d", "b", "a", "c"], [5.0, 5.0, 5.0, 1.0], top_fraction=0.5).drop_ids == sel.drop_ids


def test_threshold_and_nan_handling():
    sel = select(["a", "b", "c", "d"], [1.0, 10.0, float("nan"), 3.0], max_score=5.0)
    assert sel.reasons == {"b": "max", "c": "max"}
    sel = select(["a", "b", "c", "d"], [1.0, 10.0, float("nan"), 3.0], top_fraction=0.25, max_score=5.0)
    assert sel.reasons == {"c": "top", "b": "max"}


def test_zero_fraction_and_empty_population():
    assert not select(["a"], [1.0], top_fraction=0.0).drop_ids
    assert select([], [], top_fraction=0.1).population == 0
    with pytest.raises(ValueError):
        select(["a"], [1.0], top_fraction=1.5)


def _sidecars(tmp_path, ids, scores, parts):
    """Write the (id, score) rows round-robin into `parts` sidecars, a null score for every 7th row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = []
    for p in range(parts):
        rows = list(range(p, len(ids), parts))
        values = [None if i % 7 == 6 else float(scores[i]) for i in rows]
        path = tmp_path / f"p{p}.parquet"
        pq.write_table(pa.table({"id": [ids[i] for i in rows], "s": pa.array(values, pa.float64())}), path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fraction,max_score", [(0.1, None), (0.37, None), (None, 2.0), (0.2, 2.0), (0.05, 0.5), (0.0, 1.0)])
def test_drop_rule_over_sidecars_equals_the_in_memory_selection(tmp_path, seed, fraction, max_score):
    from curation.selection import read_score_columns, read_scored_ids, select_from_sidecars

    rng = np.random.default_rng(seed)
    n = 600
    ids = [f"doc{rng.integers(10**6):07d}-{i}" for i in range(n)]
    scores = rng.integers(0, 5, size=n).astype(float)  # few distinct values: ties everywhere
    scores[rng.random(n) < 0.08] = np.nan
    scores[rng.random(n) < 0.02] = np.inf
    paths = _sidecars(tmp_path, ids, scores, parts=5)
    columns = read_score_columns(paths, "s")
    rule = select_from_sidecars(columns, "s", top_fraction=fraction, max_score=max_score, fraction_reason="top", threshold_reason="max")
    scored = [read_scored_ids(p, "s") for p in paths]
    all_ids = [i for part_ids, _ in scored for i in part_ids]
    all_scores = np.concatenate([s for _, s in scored])
    old = select_high_scores(all_ids, all_scores, top_fraction=fraction, max_score=max_score, fraction_reason="top", threshold_reason="max")
    new: dict[str, str] = {}
    for part_ids, part_scores in scored:
        new.update({i: reason for i, (reason, _) in rule.drops(part_ids, part_scores).items()})
    assert new == old.reasons
    assert rule.cutoff == old.cutoff
    assert rule.population == old.population == len(all_ids)
    assert rule.dropped == len(old.drop_ids)
    assert rule.dropped_fraction == pytest.approx(old.dropped_fraction)


def test_drop_rule_keeps_no_tie_when_every_tie_is_dropped(tmp_path):
    from curation.selection import read_score_columns, select_from_sidecars

    ids = [f"d{i}" for i in range(10)]
    paths = _sidecars(tmp_path, ids, np.arange(10.0), parts=2)
    rule = select_from_sidecars(read_score_columns(paths, "s"), "s", top_fraction=0.25, fraction_reason="top", threshold_reason="max")
    assert rule.tie_hash is None and rule.tie_id is None and rule.cutoff is not None


def test_many_ties_drop_exactly_k_by_id_hash_and_the_rule_stays_a_few_numbers(tmp_path):
    from curation.selection import id_hashes, read_score_columns, read_scored_ids, select_from_sidecars

    n = 5000
    ids = [f"{i % 97:02d}-{i}" for i in range(n)]
    scores = np.where(np.arange(n) % 3 == 0, 7.0, np.arange(n) % 5)  # a third of all scores tie at the top
    fraction = 0.2  # k = 1000 of the 1667 ties at 7.0
    paths = _sidecars(tmp_path, ids, scores, parts=7)
    rule = select_from_sidecars(read_score_columns(paths, "s"), "s", top_fraction=fraction, fraction_reason="top", threshold_reason="max")
    scored = [read_scored_ids(p, "s") for p in paths]
    all_ids = [i for part_ids, _ in scored for i in part_ids]
    in_memory = select(all_ids, np.concatenate([s for _, s in scored]), top_fraction=fraction)
    dropped = {i for part_ids, part_scores in scored for i in rule.drops(part_ids, part_scores)}
    assert dropped == in_memory.drop_ids
    assert len(dropped) == rule.dropped == round(fraction * len(all_ids))
    assert rule.cutoff == 7.0 and rule.tie_hash is not None
    tied = [i for part_ids, part_scores in scored for i, s in zip(part_ids, part_scores) if s == 7.0]
    order = sorted(tied, key=lambda i: (int(id_hashes([i])[0]), i))  # the tie-break: hash, then id
    assert dropped == set(order[: len(dropped)])
    assert (rule.tie_hash, rule.tie_id) == (int(id_hashes([order[len(dropped) - 1]])[0]), order[len(dropped) - 1])
    assert dropped != set(sorted(tied)[: len(dropped)])  # not the ids that sort first


def test_equal_hashes_fall_back_to_the_id():
    from curation.selection import DropRule, id_hashes

    ties = ["a", "b", "c"]
    bound = int(id_hashes(["b"])[0])
    rule = DropRule(1.0, bound, "b", None, "top", "max", population=3, dropped=1)
    hashes = id_hashes(ties)
    assert rule.ties_dropped(ties).tolist() == [bool(h < bound) or (h == bound and i <= "b") for i, h in zip(ties, hashes)]
    assert rule.ties_dropped(["b"]).tolist() == [True]
    assert DropRule(1.0, bound, "a", None, "top", "max", population=3, dropped=1).ties_dropped(["b"]).tolist() == [False]


def test_partition_key_follows_the_partitions_drops_only():
    from curation.selection import DropRule, id_hashes

    def rule(cutoff, tie=(None, None)):
        tie_hash, tie_id = tie
        return DropRule(cutoff, tie_hash, tie_id, None, "top", "max", population=6, dropped=1)

    scores = np.array([1.0, 2.0, 3.0])
    ids = ["a", "b", "c"]
    b = int(id_hashes(["b"])[0])
    assert rule(3.0).partition_key(scores, lambda: ids) == rule(2.5).partition_key(scores, lambda: ids)
    assert rule(3.0).partition_key(scores, lambda: ids) != rule(2.0).partition_key(scores, lambda: ids)
    assert rule(2.0, (b, "a")).partition_key(scores, lambda: ids) == rule(2.5).partition_key(scores, lambda: ids)
    assert rule(2.0, (b, "b")).partition_key(scores, lambda: ids) == rule(2.0).partition_key(scores, lambda: ids)
