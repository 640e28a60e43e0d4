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


def test_ties_are_broken_by_id_deterministically():
    sel = select(["c", "a", "b", "d"], [1.0, 5.0, 5.0, 5.0], top_fraction=0.5)
    assert sel.drop_ids == {"a", "b"}


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
