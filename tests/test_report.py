"""Paired and clustered bootstrap intervals of :mod:`adaptive_tts.report` (closed-form checks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptive_tts.report import cluster_mean_ci, mean_ci, paired_diff, ratio_ci, verdict


def _width(d: dict[str, float]) -> float:
    return d["hi"] - d["lo"]


def test_identical_arms_give_zero_difference_and_zero_width() -> None:
    a = np.random.default_rng(0).normal(size=64)
    d = paired_diff(a, a.copy())
    assert d == {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    assert verdict(d) == "tie"
    r = ratio_ci(a + 5.0, a + 5.0)
    assert r["mean"] == pytest.approx(1.0) and _width(r) == pytest.approx(0.0, abs=1e-12)


def test_a_constant_shift_is_exactly_that_shift() -> None:
    a = np.random.default_rng(1).integers(0, 100, size=50).astype(float)  # exact in float64
    clusters = np.arange(50) // 5
    for cl in (None, clusters):
        d = paired_diff(a + 0.25, a, clusters=cl)
        assert d == {"mean": 0.25, "lo": 0.25, "hi": 0.25}
        assert verdict(d) == "better"
        assert verdict(paired_diff(a, a + 0.25, clusters=cl)) == "worse"


def test_a_constant_factor_is_exactly_that_ratio() -> None:
    b = np.random.default_rng(2).integers(1, 50, size=40).astype(float)
    r = ratio_ci(2.0 * b, b, clusters=np.arange(40) % 7)
    assert r == {"mean": 2.0, "lo": 2.0, "hi": 2.0}


def test_mean_is_over_pairs_and_matches_the_plain_mean() -> None:
    v = np.random.default_rng(3).uniform(size=200)
    c = cluster_mean_ci(v, clusters=np.arange(200) % 13)
    assert c["mean"] == pytest.approx(v.mean())
    assert c["lo"] < c["mean"] < c["hi"]
    # unclustered: close to the normal approximation of mean_ci
    m, half = mean_ci(torch.as_tensor(v))
    u = cluster_mean_ci(v)
    assert u["mean"] == pytest.approx(m)
    assert _width(u) == pytest.approx(2 * half, rel=0.15)


def test_clustering_duplicated_pairs_widens_the_interval() -> None:
    """Five copies of each of 40 pairs are 40 independent draws, not 200: clustering the copies
    recovers the interval of the 40 originals, treating them as independent is too narrow by
    about sqrt(5)."""
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=40), rng.normal(size=40)
    dup_a, dup_b = np.repeat(a, 5), np.repeat(b, 5)
    ids = np.repeat(np.arange(40), 5)
    independent = paired_diff(dup_a, dup_b)
    clustered = paired_diff(dup_a, dup_b, clusters=ids)
    original = paired_diff(a, b)
    assert _width(clustered) > 1.8 * _width(independent)
    assert clustered == pytest.approx(original)  # same resampled clusters, same means
    assert _width(cluster_mean_ci(dup_a, ids)) > 1.8 * _width(cluster_mean_ci(dup_a))
    pos_a, pos_b = dup_a + 5.0, dup_b + 5.0
    assert _width(ratio_ci(pos_a, pos_b, ids)) > 1.8 * _width(ratio_ci(pos_a, pos_b))


def test_cluster_ids_are_labels_not_positions() -> None:
    """Any relabelling of clusters that keeps their sorted order gives the same interval, and the
    ids need not be contiguous (noise seeds from 2,000,000)."""
    v = np.random.default_rng(5).uniform(size=30)
    ids = np.arange(30) // 3
    assert cluster_mean_ci(v, ids) == cluster_mean_ci(v, 2_000_000 + 7 * ids)
    assert cluster_mean_ci(v, ids.tolist()) == cluster_mean_ci(v, torch.as_tensor(ids))


def test_deterministic_given_seed() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.uniform(size=100), rng.uniform(size=100)
    assert paired_diff(a, b, seed=3) == paired_diff(a, b, seed=3)
    assert paired_diff(a, b, seed=3) != paired_diff(a, b, seed=4)
    assert paired_diff(torch.as_tensor(a), list(b)) == paired_diff(a, b)


def test_level_and_interval_cover_the_estimate() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.uniform(size=100), rng.uniform(size=100)
    wide, narrow = paired_diff(a, b, level=0.99), paired_diff(a, b, level=0.5)
    assert wide["lo"] < narrow["lo"] < narrow["mean"] < narrow["hi"] < wide["hi"]


def test_ratio_with_a_zero_denominator_is_nan_not_an_error() -> None:
    r = ratio_ci([1.0, 2.0], [0.0, 0.0])
    assert np.isnan(r["mean"]) and np.isnan(r["lo"]) and np.isnan(r["hi"])


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: paired_diff([1.0, 2.0], [1.0]), "a and b"),
        (lambda: ratio_ci([1.0], [1.0, 2.0]), "a and b"),
        (lambda: paired_diff([], []), "a must not be empty"),
        (lambda: paired_diff([1.0], []), "b must not be empty"),
        (lambda: cluster_mean_ci([]), "values must not be empty"),
        (lambda: cluster_mean_ci([1.0, float("nan")]), "values has non-finite"),
        (lambda: cluster_mean_ci(np.ones((1, 2))), "values must be one value per pair"),
        (lambda: cluster_mean_ci([1.0, 2.0], clusters=[0]), "clusters must hold one id per pair"),
        (lambda: paired_diff([1.0, 2.0], [1.0, 2.0], clusters=[0, 1, 2]), "clusters"),
        (lambda: paired_diff([1.0], [1.0], n_boot=0), "n_boot"),
        (lambda: cluster_mean_ci([1.0], level=1.0), "level"),
    ],
)
def test_bad_input_names_the_argument(call: object, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()  # type: ignore[operator]
