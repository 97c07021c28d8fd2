import math

import pytest
import torch
from _miner_helpers import as_set, ours, random_batch, reference_miner

from conftest import requires_reference
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.miners import AngularMiner
from deepmetric.ops import blocked_triplets as _blocked_triplets
from deepmetric.utils.errors import ArgumentError


def _batch(dtype):
    # a = (1, 0), p = (0, 1) (class 0); n1 = (0.5, 0.5) near the center, n2 = (-3, -3) far.
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-3.0, -3.0]], dtype=dtype)
    labels = torch.tensor([0, 0, 1, 2])
    return emb, labels


def test_hand_checked_angles(dtype):
    # d_ap = sqrt(2); c = (0.5, 0.5).
    # n1: d_nc = 0 -> theta = atan(inf) = 90 deg, kept for any angle < 90.
    # n2: d_nc = |(-3.5, -3.5)| = 3.5 sqrt(2) -> theta = atan(1 / 7) = 8.13 deg.
    emb, labels = _batch(dtype)
    assert as_set(AngularMiner(angle=20)(emb, labels)) == [(0, 1, 2), (1, 0, 2)]
    assert as_set(AngularMiner(angle=8)(emb, labels)) == [(0, 1, 2), (0, 1, 3), (1, 0, 2), (1, 0, 3)]
    assert as_set(AngularMiner(angle=8.2)(emb, labels)) == [(0, 1, 2), (1, 0, 2)]


def test_stats_in_degrees(dtype):
    emb, labels = _batch(dtype)
    miner = AngularMiner(angle=20, collect_stats=True)
    miner(emb, labels)
    small = math.degrees(math.atan(1 / 7))
    # Four triplets: 90, 90, small, small.
    assert miner.average_angle == pytest.approx((180 + 2 * small) / 4)
    assert miner.min_angle == pytest.approx(small)
    assert miner.max_angle == pytest.approx(90)
    assert miner.average_angle_above_threshold == pytest.approx(90)
    assert miner.average_angle_below_threshold == pytest.approx(small)
    values = torch.tensor([90, 90, small, small], dtype=torch.float64)
    assert miner.std_of_angle == pytest.approx(float(values.std()))


def test_angle_is_recorded_in_radians():
    miner = AngularMiner(angle=45)
    assert miner.angle == pytest.approx(math.pi / 4) and "angle" in miner._record_these


@pytest.mark.parametrize(
    "distance", [CosineSimilarity(), LpDistance(power=2), LpDistance(normalize_embeddings=False)]
)
def test_other_distances_are_rejected(distance):
    with pytest.raises(ArgumentError, match="AngularMiner requires"):
        AngularMiner(distance=distance)


def test_blocks_give_the_same_triplets(monkeypatch):
    emb, labels = random_batch(30, 4, 3, torch.float64)
    whole = AngularMiner(angle=30)(emb, labels)
    monkeypatch.setattr(_blocked_triplets, "CELLS_PER_BLOCK", 7)
    blocked = AngularMiner(angle=30)(emb, labels)
    assert all(torch.equal(a, b) for a, b in zip(whole, blocked))


@requires_reference
@pytest.mark.parametrize("angle", [10, 35, 60])
def test_matches_reference_in_order(dtype, angle):
    emb, labels = random_batch(40, 8, 4, dtype)
    miner, oracle = ours("AngularMiner", angle=angle, collect_stats=True), reference_miner("AngularMiner", angle=angle, collect_stats=True)
    out, ref = miner(emb, labels), oracle(emb, labels)
    assert len(out[0]) > 0
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    for name in ("average_angle", "min_angle", "max_angle", "std_of_angle", "average_angle_above_threshold", "average_angle_below_threshold"):
        assert getattr(miner, name) == pytest.approx(getattr(oracle, name), rel=1e-4)


@requires_reference
def test_matches_reference_with_ref_emb(dtype):
    emb, labels = random_batch(20, 8, 4, dtype)
    ref_emb, ref_labels = random_batch(25, 8, 4, dtype, seed=1)
    out = ours("AngularMiner")(emb, labels, ref_emb, ref_labels)
    ref = reference_miner("AngularMiner")(emb, labels, ref_emb, ref_labels)
    assert all(torch.equal(a, b) for a, b in zip(out, ref))


@pytest.mark.parametrize("angle", [0, 10, 20, 30, 40, 50])
def test_float16_selection_equals_the_per_triplet_formula(angle):
    # The per-triplet angle in half precision is only good to a few of its ulps, so the triplets
    # near the threshold are decided by that formula itself, in float16. Unit vectors one
    # degree apart give many angles close to the thresholds.
    g = torch.Generator().manual_seed(angle)
    degrees = torch.arange(14, dtype=torch.float64).deg2rad()
    emb = torch.stack([degrees.cos(), degrees.sin()], dim=1).half()
    labels = torch.randint(0, 2, (14,), generator=g)
    pdist = torch.nn.functional.pairwise_distance
    expected = set()
    for a in range(14):
        for p in range(14):
            if p == a or labels[p] != labels[a]:
                continue
            for n in range(14):
                if labels[n] == labels[a]:
                    continue
                d_ap = pdist(emb[a : a + 1], emb[p : p + 1])
                d_nc = pdist(emb[n : n + 1], (emb[a : a + 1] + emb[p : p + 1]) / 2)
                if torch.atan(d_ap / (2 * d_nc)) > math.radians(angle):
                    expected.add((a, p, n))
    mined = AngularMiner(angle)(emb, labels)
    assert set(zip(*(x.tolist() for x in mined))) == expected
