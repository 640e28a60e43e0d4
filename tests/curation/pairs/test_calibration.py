import numpy as np
import pytest

from curation.pairs.calibration import calibrate, precision_recall_curve
from curation.pairs.nsfw import select_nsfw

# ten labelled samples, 5 NSFW; 0.8 is a tie between an NSFW and a safe sample
SCORES = np.array([0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
LABELS = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0])


@pytest.mark.parametrize(
    ("target", "lowest_removed", "removed", "true_positives"),
    [
        (0.2, 0.9, 1, 1),
        (0.3, 0.8, 3, 2),  # the tie is removed together
        (0.6, 0.7, 4, 3),
        (0.8, 0.5, 6, 4),
        (0.95, 0.2, 9, 5),
        (1.0, 0.2, 9, 5),
    ],
)
def test_calibration_on_a_known_answer(target, lowest_removed, removed, true_positives):
    result = calibrate(SCORES, LABELS, target)
    assert result.threshold < lowest_removed and result.threshold == np.nextafter(lowest_removed, -1)
    assert (result.removed, result.positives, result.population) == (removed, 5, 10)
    assert result.recall == pytest.approx(true_positives / 5)
    assert result.precision == pytest.approx(true_positives / removed)
    assert result.removal_rate == pytest.approx(removed / 10)


def test_the_threshold_removes_exactly_the_calibrated_set_when_passed_back():
    rng = np.random.default_rng(0)
    labels = rng.uniform(size=2000) < 0.06
    scores = np.where(labels, rng.beta(5, 2, 2000), rng.beta(2, 5, 2000)).astype(np.float32)
    result = calibrate(scores, labels, 0.95)
    ids = [str(i) for i in range(2000)]
    selection = select_nsfw(ids, scores, threshold=result.threshold)
    removed = np.array([i in selection.drop_ids for i in ids])
    assert removed.sum() == result.removed
    assert (removed & labels).sum() / labels.sum() == pytest.approx(result.recall) and result.recall >= 0.95
    assert selection.dropped_fraction == pytest.approx(result.removal_rate)


def test_the_curve_matches_brute_force_at_every_threshold():
    rng = np.random.default_rng(1)
    scores = np.round(rng.uniform(size=300), 2)  # many ties
    labels = (rng.uniform(size=300) < scores).astype(int)
    curve = precision_recall_curve(scores, labels)
    assert len(curve.thresholds) == len(np.unique(scores))
    assert np.all(np.diff(curve.removed) > 0)
    for t, p, r, q in zip(curve.thresholds, curve.precision, curve.recall, curve.removal_rate):
        removed = scores > t
        assert p == pytest.approx((removed & (labels == 1)).sum() / removed.sum())
        assert r == pytest.approx((removed & (labels == 1)).sum() / labels.sum())
        assert q == pytest.approx(removed.mean())
    best = calibrate(scores, labels, 0.9)
    feasible = [q for q, r in zip(curve.removal_rate, curve.recall) if r >= 0.9]
    assert best.removal_rate == min(feasible)


@pytest.mark.parametrize(
    ("scores", "labels", "target"),
    [
        ([0.1, 0.2], [0, 0], 0.9),  # no NSFW example
        ([0.1, float("nan")], [0, 1], 0.9),
        ([0.1, 0.2], [0, 2], 0.9),
        ([0.1], [1, 0], 0.9),
        ([0.1, 0.2], [0, 1], 0.0),
    ],
)
def test_bad_calibration_input_is_refused(scores, labels, target):
    with pytest.raises(ValueError):
        calibrate(np.array(scores), np.array(labels), target)
