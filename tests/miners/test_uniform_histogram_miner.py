import pytest
import torch
from _miner_helpers import line, raw_l2, reference_miner

from conftest import requires_reference
from deepmetric.miners import UniformHistogramMiner


def test_hand_checked_bins(dtype):
    # Class 0 at 0, 1, 4: positive distances 1, 4, 3 (each twice). With 3 bins over [1, 4]
    # (edges 1, 2, 3, 4): bin 0 holds d=1, bin 1 is empty, bin 2 holds 3 and 4 (closed right).
    torch.manual_seed(0)
    miner = UniformHistogramMiner(num_bins=3, pos_per_bin=5, neg_per_bin=2, distance=raw_l2())
    emb = line(0, 1, 4, 10, dtype=dtype)
    a1, p, a2, _n = miner(emb, torch.tensor([0, 0, 0, 1]))
    d = (emb[a1] - emb[p]).abs().flatten()
    assert len(a1) == 10  # two non-empty bins x 5 draws, in bin order
    assert bool((d[:5] == 1).all()) and bool((d[5:] >= 3).all())
    # Negative distances 10, 9, 6: bins over [6, 10] of width 4/3 -> 6 | (none) | 9, 10.
    assert len(a2) == 4


def test_draws_cover_each_bin_uniformly_with_replacement():
    torch.manual_seed(0)
    miner = UniformHistogramMiner(num_bins=1, pos_per_bin=3000, neg_per_bin=1, distance=raw_l2())
    a1, p, _a2, _n = miner(line(0, 1, 4, 10), torch.tensor([0, 0, 0, 1]))
    counts = torch.bincount(a1 * 4 + p, minlength=16).float()
    nonzero = counts[counts > 0]
    assert len(nonzero) == 6  # all six positive pairs are drawn
    assert float(nonzero.min()) > 0.7 * 500 and float(nonzero.max()) < 1.3 * 500


def test_identical_values_all_land_in_the_last_bin():
    miner = UniformHistogramMiner(num_bins=4, pos_per_bin=2, neg_per_bin=2, distance=raw_l2())
    a1, _p, a2, _n = miner(line(0, 1, 0, 1), torch.tensor([0, 1, 0, 1]))
    # positive distances are all 0: one (last) bin is non-empty -> 2 draws
    assert len(a1) == 2 and len(a2) == 2


def test_empty_sets_stay_empty():
    a1, p, a2, _n = UniformHistogramMiner()(torch.randn(3, 2), torch.tensor([0, 1, 2]))
    assert len(a1) == len(p) == 0 and len(a2) > 0


def test_bins_match_the_reference_rule():
    miner = UniformHistogramMiner(num_bins=4)
    values = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 1.5])
    bins = miner.get_bins(values)
    assert bins.tolist() == [0, 1, 2, 3, 4]
    torch.manual_seed(0)
    picked = values[miner.filter_by_bin(values, bins, 50)]
    # bin 0: {0}, bin 1: {1, 1.5}, bin 2: {2}, bin 3: {3, 4}
    assert set(picked[:50].tolist()) == {0.0}
    assert set(picked[50:100].tolist()) <= {1.0, 1.5}
    assert set(picked[100:150].tolist()) == {2.0}
    assert set(picked[150:].tolist()) <= {3.0, 4.0}


def test_hyperparameters_are_recorded():
    miner = UniformHistogramMiner(pos_per_bin=3, neg_per_bin=4)
    assert {"pos_per_bin", "neg_per_bin"} <= set(miner._record_these)


@pytest.mark.parametrize("n", [20, 60])
def test_every_returned_pair_is_valid(dtype, n):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(n, 4, generator=g, dtype=dtype)
    labels = torch.randint(0, 3, (n,), generator=g)
    a1, p, a2, n_ = UniformHistogramMiner(num_bins=10)(emb, labels)
    assert bool((labels[a1] == labels[p]).all()) and bool((a1 != p).all())
    assert bool((labels[a2] != labels[n_]).all())



@requires_reference
def test_same_bin_sequence_as_reference(dtype):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(40, 8, generator=g, dtype=dtype)
    labels = torch.randint(0, 4, (40,), generator=g)
    miner = UniformHistogramMiner(num_bins=20, pos_per_bin=3, neg_per_bin=4)
    oracle = reference_miner("UniformHistogramMiner", num_bins=20, pos_per_bin=3, neg_per_bin=4)
    out, ref = miner(emb, labels), oracle(emb, labels)
    mat = miner.distance(emb)
    same = labels[:, None] == labels[None]
    pos_mask = same & ~torch.eye(40, dtype=torch.bool)
    for (i, j), mask in (((0, 1), pos_mask), ((2, 3), ~same)):
        edges = miner.get_bins(mat[mask])

        def bin_sequence(a, b, edges=edges):
            return torch.bucketize(mat[a, b], edges[1:-1], right=True).tolist()

        assert len(out[i]) == len(ref[i]) > 0
        assert bin_sequence(out[i], out[j]) == bin_sequence(ref[i], ref[j])


def test_float16_edges_out_of_order_are_tested_bin_by_bin():
    # linspace rounds these float16 edges out of order; a value then falls in every bin whose
    # half-open interval holds it, as the reference's per-bin tests decide.
    bins = torch.linspace(-0.0009450912475585938, -0.0009174346923828125, 101, dtype=torch.float16)
    assert not bool((bins[1:] >= bins[:-1]).all())
    values = torch.linspace(float(bins[0]), float(bins[-1]), 40, dtype=torch.float16)
    expected = []
    for i in range(100):
        upper = values <= bins[i + 1] if i == 99 else values < bins[i + 1]
        members = torch.where((bins[i] <= values) & upper)[0]
        if len(members):
            expected.append(members)
    torch.manual_seed(0)
    picked = UniformHistogramMiner().filter_by_bin(values, bins, 3)
    assert len(picked) == 3 * len(expected)
    for k, members in enumerate(expected):
        assert set(picked[3 * k : 3 * k + 3].tolist()) <= set(members.tolist())


@requires_reference
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("with_ref", [False, True], ids=["same_set", "ref_set"])
@pytest.mark.parametrize("distance", ["LpDistance", "CosineSimilarity"])
def test_pairs_equal_the_reference_under_the_same_seed(dtype, seed, with_ref, distance):
    from _miner_helpers import ours

    g = torch.Generator().manual_seed(seed)
    emb, labels = torch.randn(50, 8, generator=g, dtype=dtype), torch.randint(0, 5, (50,), generator=g)
    args = (emb, labels)
    if with_ref:
        args += (torch.randn(30, 8, generator=g, dtype=dtype), torch.randint(0, 5, (30,), generator=g))
    kwargs = dict(num_bins=7 + 10 * seed, pos_per_bin=3, neg_per_bin=5)
    torch.manual_seed(seed)
    theirs = reference_miner("UniformHistogramMiner", distance, **kwargs)(*args)
    after_theirs = torch.rand(4)
    torch.manual_seed(seed)
    mine = ours("UniformHistogramMiner", distance, **kwargs)(*args)
    assert len(mine[0]) > 0 and len(mine[2]) > 0
    for x, y in zip(mine, theirs):
        assert torch.equal(x, y)
    assert torch.equal(torch.rand(4), after_theirs)  # the same number of draws
