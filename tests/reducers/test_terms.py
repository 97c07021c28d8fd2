"""Lazy loss terms: listed exactly as the reference lists them, and reduced without listing to
the same sums, counts and gradients as the listed terms."""

import pytest
import torch

from conftest import tolerance
from deepmetric.ops import blocked_triplets
from deepmetric.reducers import (
    AvgNonZeroReducer,
    BaseReducer,
    DivisorReducer,
    DoNothingReducer,
    MeanReducer,
    PerAnchorReducer,
    SumReducer,
    ThresholdReducer,
)
from deepmetric.reducers.terms import (
    HingeTripletTerms,
    ListedTerms,
    PairTerms,
    SeparableTripletTerms,
    TripletTerms,
)
from deepmetric.utils import loss_and_miner_utils as lmu

BOUNDS = [(None, None), (0, None), (0.1, 0.6), (None, 0.3), (-1, None), (-0.5, 0.2)]


def batch(dtype, n=14, m=None, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    ref_labels = labels if m is None else torch.randint(0, classes, (m,), generator=g)
    mat = torch.rand(n, len(ref_labels), generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    pos, neg = lmu.get_label_masks(labels, labels if m is None else ref_labels)
    return mat, pos, neg


def listed_kept_sum(terms, low, high):
    losses, _ = terms.materialize()
    return ListedTerms(losses, None, terms.reduction_type).kept_sum(low, high)


def assert_same_sums(terms, low, high, mat, dtype):
    total, count = terms.kept_sum(low, high)
    want, want_count = listed_kept_sum(terms, low, high)
    assert count == want_count
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(total, want, rtol=rtol * 10, atol=atol * 10)
    if want_count:
        torch.testing.assert_close(
            torch.autograd.grad(total, mat, retain_graph=True)[0], torch.autograd.grad(want, mat)[0],
            rtol=rtol * 10, atol=atol * 10,
        )


def test_listed_terms_reduce_with_the_reference_arithmetic():
    losses = torch.tensor([3.0, 7.0, 1.0, 13.0, 5.0])
    total, count = ListedTerms(losses, None, "element").kept_sum(low=4, high=12)
    assert (total.item(), count) == (12.0, 2)
    assert ListedTerms(losses, None, "element").count(low=2) == 4
    half = torch.full((5000,), 30.0, dtype=torch.float16)
    total, _ = ListedTerms(half, None, "element").kept_sum()
    assert total.dtype == torch.float32 and total.item() == 150000.0  # a float16 sum would overflow


def test_pair_terms_list_in_where_order(dtype):
    mat, pos, _ = batch(dtype)
    values = mat * 2
    losses, (rows, cols) = PairTerms(values, pos, "pos_pair").materialize()
    want_rows, want_cols = torch.where(pos)  # the order of lmu.get_all_pairs_indices
    assert torch.equal(rows, want_rows) and torch.equal(cols, want_cols)
    assert torch.equal(losses, values[want_rows, want_cols])
    assert len(PairTerms(values, pos, "pos_pair")) == int(pos.sum())


@pytest.mark.parametrize("low, high", BOUNDS)
def test_pair_terms_sums_equal_the_listed_sums(low, high, dtype):
    mat, pos, neg = batch(dtype)
    assert_same_sums(PairTerms(mat * 1.5 - 0.3, neg, "neg_pair"), low, high, mat, dtype)


def test_pair_matrix_equals_the_listed_one():
    mat, pos, _ = batch(torch.float64, m=9)
    terms = PairTerms(mat, pos, "pos_pair")
    listed = ListedTerms(*terms.materialize(), "pos_pair")
    dense_matrix, dense_counts = terms.pair_matrix(14, 14)
    listed_matrix, listed_counts = listed.pair_matrix(14, 14)
    assert torch.equal(dense_counts, listed_counts)
    torch.testing.assert_close(dense_matrix, listed_matrix[:, : dense_matrix.shape[1]])
    assert bool((listed_matrix[:, dense_matrix.shape[1]:] == 0).all())


@pytest.mark.parametrize("m", [None, 11])
def test_triplet_terms_list_in_the_reference_order(m, dtype):
    mat, pos, neg = batch(dtype, m=m)
    terms = TripletTerms((mat,), pos, neg, lambda ap, an, a: ap[0] - an[0])
    losses, (a, p, n) = terms.materialize()
    matches, diffs = pos.byte(), neg.byte()
    want = lmu.get_all_triplets_indices_vectorized_method(matches, diffs)
    assert all(torch.equal(x, y) for x, y in zip((a, p, n), want))
    assert torch.equal(losses, mat[a, p] - mat[a, n])
    assert len(terms) == len(a)


@pytest.mark.parametrize("low, high", BOUNDS)
def test_triplet_terms_sums_equal_the_listed_sums_across_blocks(low, high, dtype, monkeypatch):
    monkeypatch.setattr(blocked_triplets, "CELLS_PER_BLOCK", 20)  # many chunks
    mat, pos, neg = batch(dtype, m=12)
    terms = TripletTerms((mat, mat * mat), pos, neg, lambda ap, an, a: torch.nn.functional.softplus(ap[0] - an[1]))
    assert_same_sums(terms, low, high, mat, dtype)


def test_triplet_terms_gradcheck_and_second_derivatives():
    mat, pos, neg = batch(torch.float64, n=7)

    def total(m):
        return TripletTerms((m,), pos, neg, lambda ap, an, a: torch.sigmoid(ap[0] - 2 * an[0])).kept_sum()[0]

    assert torch.autograd.gradcheck(total, (mat,))
    assert torch.autograd.gradgradcheck(total, (mat,))


def test_triplet_terms_never_list_when_reduced(monkeypatch):
    mat, pos, neg = batch(torch.float32, n=40)
    monkeypatch.setattr("deepmetric.reducers.terms.select_triplets", lambda *a: pytest.fail("listed"))
    total, count = TripletTerms((mat,), pos, neg, lambda ap, an, a: ap[0] + an[0]).kept_sum(0.5)
    assert count > 0 and total.requires_grad


def hinge_terms(mat, pos, neg, inverted, margin):
    def per_triplet(ap, an, anchors):
        difference = an[0] - ap[0] if inverted else ap[0] - an[0]
        return torch.relu(difference + margin)

    return HingeTripletTerms(mat, pos, neg, per_triplet, inverted, margin)


@pytest.mark.parametrize("low, high", BOUNDS)
@pytest.mark.parametrize("inverted", [False, True])
def test_hinge_terms_sums_equal_the_listed_sums(low, high, inverted, dtype):
    mat, pos, neg = batch(dtype, m=13, seed=3)
    assert_same_sums(hinge_terms(mat, pos, neg, inverted, 0.2), low, high, mat, dtype)


@pytest.mark.parametrize("inverted", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_hinge_terms_decide_near_zero_hinges_exactly_as_the_listed_formula(inverted, dtype):
    # Negatives placed within a few units in the last place of the hinge's zero, where
    # real-arithmetic bounds and the floating-point formula disagree.
    g = torch.Generator().manual_seed(5)
    margin = 0.05
    n = 24
    labels = torch.arange(n) % 4
    pos, neg = lmu.get_label_masks(labels)
    mat = torch.rand(n, n, generator=g, dtype=torch.float64).to(dtype)
    sign = -1 if inverted else 1
    for a in range(n):
        p = int(torch.where(pos[a])[0][0])
        ap = mat[a, p]
        zero_at = ap + sign * torch.tensor(margin, dtype=dtype)  # an where v would be 0
        for k, col in enumerate(torch.where(neg[a])[0][:7].tolist()):
            value = zero_at
            for _ in range(abs(k - 3)):
                value = torch.nextafter(value, torch.tensor(torch.inf if k > 3 else -torch.inf, dtype=dtype))
            mat[a, col] = value
    mat.requires_grad_(True)
    terms = hinge_terms(mat, pos, neg, inverted, margin)
    for low, high in [(0, None), (None, None), (0.0, 0.1), (1e-9, None)]:
        total, count = terms.kept_sum(low, high)
        want, want_count = listed_kept_sum(terms, low, high)
        assert count == want_count, (low, high)
        rtol, atol = tolerance(dtype)
        torch.testing.assert_close(total, want.to(total.dtype), rtol=rtol * 10, atol=atol * 10)


def test_hinge_terms_the_reported_case():
    # TripletMarginLoss() on randn(32, 16) after manual_seed(1), four classes of eight: one hinge
    # is 4.8e-8 and must count (3334 non-zero terms, not 3333).
    torch.manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(32, 16))
    labels = torch.arange(4).repeat_interleave(8)
    mat = torch.cdist(emb, emb)
    pos, neg = lmu.get_label_masks(labels)
    terms = hinge_terms(mat, pos, neg, False, 0.05)
    assert terms.kept_sum(0)[1] == listed_kept_sum(terms, 0, None)[1] == 3334


@pytest.mark.parametrize("low, high", BOUNDS)
def test_separable_terms_sums_equal_the_listed_sums(low, high, dtype):
    mat, pos, neg = batch(dtype, m=10, seed=4)
    parts = torch.relu(mat - 0.4), torch.relu(0.6 - mat)
    terms = SeparableTripletTerms(*parts, pos, neg, nonnegative=True)
    assert_same_sums(terms, low, high, mat, dtype)
    losses, (a, p, n) = terms.materialize()
    assert torch.equal(losses, parts[0][a, p] + parts[1][a, n])


def test_separable_element_terms_list_the_anchors():
    mat, pos, neg = batch(torch.float64, n=9)
    beta = torch.rand(9, 1, dtype=torch.float64).expand(9, 9)
    losses, anchors = SeparableTripletTerms(beta, torch.zeros(9, 9), pos, neg, "element").materialize()
    want_a = torch.where(pos.unsqueeze(2) & neg.unsqueeze(1))[0]
    assert torch.equal(anchors, want_a)
    assert torch.equal(losses, beta[want_a, 0])


REDUCERS = {
    "mean": lambda **kw: MeanReducer(**kw),
    "sum": lambda **kw: SumReducer(**kw),
    "avg_non_zero": lambda **kw: AvgNonZeroReducer(**kw),
    "low": lambda **kw: ThresholdReducer(low=0.1, **kw),
    "high": lambda **kw: ThresholdReducer(high=0.4, **kw),
    "band": lambda **kw: ThresholdReducer(low=0.05, high=0.5, **kw),
}


@pytest.mark.parametrize("name", list(REDUCERS))
@pytest.mark.parametrize("collect_stats", [False, True])
def test_built_in_reducers_give_the_listed_result_and_statistics(name, collect_stats, dtype):
    reducer = REDUCERS[name](collect_stats=collect_stats)
    mat, pos, neg = batch(dtype, m=11, seed=6)
    terms = hinge_terms(mat, pos, neg, False, 0.3)
    emb = torch.zeros(14, 2, dtype=dtype, requires_grad=True)
    dense = reducer({"loss": terms.entry()}, emb, None)
    dense_stats = {k: getattr(reducer, k) for k in reducer._record_these_stats} if collect_stats else {}
    losses, indices = terms.materialize()
    listed = reducer({"loss": {"losses": losses, "indices": indices, "reduction_type": "triplet"}}, emb, None)
    listed_stats = {k: getattr(reducer, k) for k in reducer._record_these_stats} if collect_stats else {}
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(dense, listed, rtol=rtol * 10, atol=atol * 10)
    assert dense_stats == listed_stats


def test_divisor_reducer_divides_the_unlisted_sum():
    mat, pos, neg = batch(torch.float64)
    terms = hinge_terms(mat, pos, neg, False, 0.3)
    emb = torch.zeros(14, 2, dtype=torch.float64)
    out = DivisorReducer()({"loss": terms.entry(divisor=7)}, emb, None)
    torch.testing.assert_close(out, terms.materialize()[0].sum() / 7)


def test_per_anchor_reducer_takes_pair_terms_unlisted():
    mat, pos, _ = batch(torch.float64)
    emb = torch.zeros(14, 2, dtype=torch.float64)
    terms = PairTerms(mat, pos, "pos_pair")
    dense = PerAnchorReducer()({"loss": terms.entry()}, emb, None)
    losses, indices = terms.materialize()
    listed = PerAnchorReducer()({"loss": {"losses": losses, "indices": indices, "reduction_type": "pos_pair"}}, emb, None)
    torch.testing.assert_close(dense, listed)


def test_any_other_reducer_receives_the_listed_terms():
    seen = {}

    class Recording(BaseReducer):
        def triplet_reduction(self, losses, loss_indices, embeddings, labels):
            seen["losses"], seen["indices"] = losses, loss_indices
            return losses.max()

    mat, pos, neg = batch(torch.float64)
    terms = hinge_terms(mat, pos, neg, False, 0.3)
    out = Recording()({"loss": terms.entry()}, torch.zeros(14, 2, dtype=torch.float64), None)
    losses, indices = terms.materialize()
    assert torch.equal(seen["losses"], losses)
    assert all(torch.equal(x, y) for x, y in zip(seen["indices"], indices))
    assert out == losses.max()


def test_do_nothing_reducer_returns_listed_terms():
    mat, pos, neg = batch(torch.float64)
    terms = PairTerms(mat, pos, "pos_pair")
    out = DoNothingReducer()({"pos_loss": terms.entry(), "other": {"losses": 0, "indices": None,
                                                                     "reduction_type": "already_reduced"}},
                             None, None)
    losses, (rows, cols) = terms.materialize()
    assert torch.equal(out["pos_loss"]["losses"], losses)
    assert torch.equal(out["pos_loss"]["indices"][0], rows)
    assert out["other"]["losses"] == 0


def test_no_terms_gives_an_attached_zero():
    mat, pos, _ = batch(torch.float64)
    emb = torch.randn(14, 2, dtype=torch.float64, requires_grad=True)
    out = MeanReducer()({"loss": PairTerms(mat, torch.zeros_like(pos), "pos_pair").entry()}, emb, None)
    assert out.item() == 0 and out.requires_grad
