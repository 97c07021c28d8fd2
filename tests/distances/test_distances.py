import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import (
    BaseDistance,
    BatchedDistance,
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
    SNRDistance,
)
from deepmetric.utils import common_functions as c_f


def test_lp_distance_default_is_euclidean_between_unit_vectors(dtype):
    q = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=dtype)
    r = torch.tensor([[0.0, 2.0]], dtype=dtype)
    # unit rows: (0.6, 0.8), (1, 0); reference (0, 1)
    # ||(0.6, -0.2)|| = sqrt(0.40), ||(1, -1)|| = sqrt(2)
    mat = LpDistance()(q, r)
    expected = torch.tensor([[math.sqrt(0.4)], [math.sqrt(2.0)]], dtype=dtype)
    torch.testing.assert_close(mat, expected)


def test_lp_distance_power_2_without_normalisation_is_squared_euclidean(dtype):
    q = torch.tensor([[1.0, 2.0]], dtype=dtype)
    r = torch.tensor([[4.0, 6.0], [1.0, 2.0]], dtype=dtype)
    mat = LpDistance(normalize_embeddings=False, power=2)(q, r)
    torch.testing.assert_close(mat, torch.tensor([[25.0, 0.0]], dtype=dtype))


def test_lp_distance_p1_raw_is_manhattan(dtype):
    q = torch.tensor([[1.0, -2.0, 0.5]], dtype=dtype)
    r = torch.tensor([[0.0, 1.0, 0.5]], dtype=dtype)
    mat = LpDistance(normalize_embeddings=False, p=1)(q, r)
    torch.testing.assert_close(mat, torch.tensor([[4.0]], dtype=dtype))


def test_lp_distance_float16_matches_float32():
    torch.manual_seed(0)
    q, r = torch.randn(7, 5), torch.randn(4, 5)
    half = LpDistance()(q.half(), r.half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), LpDistance()(q, r), rtol=1e-2, atol=1e-2)


def test_lp_distance_cannot_be_inverted():
    with pytest.raises(ValueError, match="is_inverted"):
        LpDistance(is_inverted=True)
    with pytest.raises(AssertionError):
        LpDistance(is_inverted=True)


def test_lp_pairwise_distance_does_not_normalise():
    q = torch.tensor([[3.0, 4.0]])
    r = torch.tensor([[0.0, 0.0]])
    # torch's pairwise_distance adds eps=1e-6 to the difference
    expected = math.sqrt((3 + 1e-6) ** 2 + (4 + 1e-6) ** 2)
    assert LpDistance().pairwise_distance(q, r).item() == pytest.approx(expected, rel=1e-6)


def test_cosine_similarity_values_and_orientation(dtype):
    q = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=dtype)
    r = torch.tensor([[0.0, 5.0], [2.0, 0.0]], dtype=dtype)
    dist = CosineSimilarity()
    assert dist.is_inverted and dist.normalize_embeddings
    expected = torch.tensor([[0.0, 1.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]], dtype=dtype)
    torch.testing.assert_close(dist(q, r), expected)


def test_cosine_similarity_rejects_normalize_embeddings_argument():
    with pytest.raises(TypeError):
        CosineSimilarity(normalize_embeddings=False)


def test_dot_product_normalises_by_default_and_raw_when_asked(dtype):
    q = torch.tensor([[2.0, 0.0]], dtype=dtype)
    r = torch.tensor([[3.0, 4.0]], dtype=dtype)
    torch.testing.assert_close(DotProductSimilarity()(q, r), torch.tensor([[0.6]], dtype=dtype))
    raw = DotProductSimilarity(normalize_embeddings=False)(q, r)
    torch.testing.assert_close(raw, torch.tensor([[6.0]], dtype=dtype))
    with pytest.raises(TypeError):
        DotProductSimilarity(is_inverted=False)


def test_dot_product_compute_mat_works_on_batched_3d_inputs():
    q = torch.randn(3, 4, 5)
    r = torch.randn(3, 6, 5)
    out = DotProductSimilarity().compute_mat(q, r)
    torch.testing.assert_close(out, torch.bmm(q, r.transpose(1, 2)))


def test_snr_distance_hand_computed(dtype):
    q = torch.tensor([[1.0, 2.0, 3.0]], dtype=dtype)
    r = torch.tensor([[1.0, 2.0, 5.0], [2.0, 3.0, 4.0]], dtype=dtype)
    dist = SNRDistance(normalize_embeddings=False)
    # Var(q) = 1; q - r0 = (0, 0, -2): mean -2/3, var = (4/9 + 4/9 + 16/9) / 2 = 4/3
    # q - r1 = (-1, -1, -1): var 0
    expected = torch.tensor([[4.0 / 3.0, 0.0]], dtype=dtype)
    torch.testing.assert_close(dist(q, r), expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(dist.pairwise_distance(q.expand(2, 3), r), expected[0])


def test_snr_matrix_equals_direct_variance_formula():
    torch.manual_seed(1)
    q, r = torch.randn(6, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    direct = torch.var(q.unsqueeze(1) - r.unsqueeze(0), dim=2) / torch.var(q, dim=1).unsqueeze(1)
    torch.testing.assert_close(SNRDistance(normalize_embeddings=False)(q, r), direct)


def test_power_is_applied_after_compute_mat():
    q = torch.tensor([[1.0, 0.0]])
    r = torch.tensor([[0.0, 1.0]])
    assert LpDistance(power=2)(q, r).item() == pytest.approx(2.0)
    assert CosineSimilarity(power=3)(q, q).item() == pytest.approx(1.0)


def test_ref_defaults_to_query():
    q = torch.randn(5, 3)
    torch.testing.assert_close(LpDistance()(q), LpDistance()(q, q))


def test_margin_and_extreme_helpers_follow_orientation():
    x, y = torch.tensor([1.0]), torch.tensor([3.0])
    lp, cos = LpDistance(), CosineSimilarity()
    assert lp.margin(x, y).item() == -2.0 and cos.margin(x, y).item() == 2.0
    t = torch.tensor([[1.0, 5.0, 3.0]])
    assert lp.smallest_dist(t).item() == 1.0 and lp.largest_dist(t).item() == 5.0
    assert cos.smallest_dist(t).item() == 5.0 and cos.largest_dist(t).item() == 1.0


def test_gradients_flow_through_every_distance():
    torch.manual_seed(2)
    for dist in [LpDistance(), LpDistance(power=2), CosineSimilarity(), SNRDistance()]:
        q = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        r = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(dist, (q, r))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_non_2d_input_is_rejected(shape):
    with pytest.raises(ValueError, match="2-D"):
        LpDistance()(torch.randn(*shape))


def test_different_widths_are_rejected():
    with pytest.raises(ValueError, match="same width"):
        CosineSimilarity()(torch.randn(3, 4), torch.randn(3, 5))


def test_records_and_norm_statistics():
    dist = LpDistance(collect_stats=True)
    assert dist._record_these == ["p", "power"]
    q = torch.tensor([[3.0, 4.0]])
    r = torch.tensor([[0.0, 2.0]])
    dist(q, r)
    assert dist.initial_avg_query_norm == pytest.approx(5.0)
    assert dist.initial_avg_ref_norm == pytest.approx(2.0)
    assert dist.final_avg_query_norm == pytest.approx(1.0)
    quiet = LpDistance(collect_stats=False)
    quiet(q, r)
    assert not hasattr(quiet, "initial_avg_query_norm")


def test_collect_stats_default_is_read_at_construction(monkeypatch):
    monkeypatch.setattr(c_f, "COLLECT_STATS", True)
    dist = CosineSimilarity()
    monkeypatch.setattr(c_f, "COLLECT_STATS", False)
    assert dist.collect_stats is True
    assert CosineSimilarity().collect_stats is False


def test_custom_distance_only_needs_two_methods():
    class NegativeDot(BaseDistance):
        def compute_mat(self, q, r):
            return -(q @ r.t())

        def pairwise_distance(self, q, r):
            return -(q * r).sum(1)

    q = torch.tensor([[1.0, 0.0]])
    assert NegativeDot(normalize_embeddings=False)(q, q).item() == -1.0


def test_batched_distance_streams_chunks_and_forwards_attributes():
    torch.manual_seed(3)
    q, r = torch.randn(10, 4), torch.randn(6, 4)
    full = CosineSimilarity()(q, r)
    out = torch.zeros(10, 6)
    calls = []

    def collect(mat, s, e):
        calls.append((s, e, mat.shape[0]))
        out[s:e] = mat

    batched = BatchedDistance(CosineSimilarity(), collect, batch_size=4)
    assert batched(q, r) is None
    torch.testing.assert_close(out, full)
    # e is not clipped to N: the last chunk reports e = 12 for 2 rows
    assert calls == [(0, 4, 4), (4, 8, 4), (8, 12, 2)]
    assert batched.is_inverted is True
    assert batched.normalize_embeddings is True


def test_batched_distance_without_ref_uses_query():
    q = torch.randn(5, 3)
    seen = []
    BatchedDistance(LpDistance(), lambda m, s, e: seen.append(m), batch_size=2)(q)
    torch.testing.assert_close(torch.cat(seen), LpDistance()(q))


@requires_reference
@pytest.mark.parametrize("name,kwargs", [
    ("LpDistance", {}),
    ("LpDistance", {"power": 2}),
    ("LpDistance", {"normalize_embeddings": False, "p": 1}),
    ("CosineSimilarity", {}),
    ("DotProductSimilarity", {"normalize_embeddings": False}),
    ("SNRDistance", {}),
])
def test_matches_reference(name, kwargs, dtype):
    import pytorch_metric_learning.distances as ref_distances

    import deepmetric.distances as our_distances

    torch.manual_seed(4)
    q, r = torch.randn(9, 6, dtype=dtype), torch.randn(7, 6, dtype=dtype)
    ours = getattr(our_distances, name)(**kwargs)(q, r)
    theirs = getattr(ref_distances, name)(**kwargs)(q, r)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(ours, theirs, rtol=max(rtol, 1e-5), atol=max(atol, 1e-5))


def test_squared_lp_distance_of_unit_rows_has_the_plain_values_bit_for_bit(dtype):
    # The fused node computes cdist(...) ** 2 exactly as the per-op formula does, so losses
    # comparing these values with a margin decide exactly the same.
    torch.manual_seed(0)
    emb = torch.randint(-1, 2, (12, 5)).to(dtype) + 0.0
    emb[emb.abs().sum(1) == 0, 0] = 1
    ref = torch.randn(7, 5, dtype=dtype)
    for q, r in ((emb, None), (emb, ref)):
        fused = LpDistance(power=2)(q.clone().requires_grad_(True), r)
        unit = torch.nn.functional.normalize
        plain = torch.cdist(unit(q), unit(q if r is None else r)) ** 2
        assert torch.equal(fused.detach(), plain)


def test_mixed_float_dtypes_are_promoted():
    q, r = torch.randn(4, 3), torch.randn(5, 3, dtype=torch.float64)
    for distance in (LpDistance(), CosineSimilarity(), DotProductSimilarity(), SNRDistance()):
        mat = distance(q, r)
        assert mat.dtype == torch.float64
        assert torch.equal(mat, distance(q.double(), r))
