"""MarginLoss: hand-computed values, learnable (per-class) beta, dense vs per-triplet paths,
miner tuples, reference sets, dtypes, gradients and the reference library as an oracle."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import MarginLoss
from deepmetric.reducers import AvgNonZeroReducer, DoNothingReducer, MeanReducer, SumReducer
from deepmetric.utils import loss_and_miner_utils as lmu

POINTS = [[0.0, 0.0], [0.5, 0.0], [2.0, 0.0], [0.3, 0.4]]
LABELS = [0, 0, 1, 1]
D = {(0, 1): 0.5, (0, 2): 2.0, (0, 3): 0.5, (1, 2): 1.5, (1, 3): math.sqrt(0.2), (2, 3): math.sqrt(3.05)}
RAW_L2 = dict(distance=LpDistance(normalize_embeddings=False))


def dist(i, j):
    return D[(min(i, j), max(i, j))]


def all_triplets():
    return [(a, p, n) for a in range(4) for p in range(4) for n in range(4)
            if a != p and LABELS[a] == LABELS[p] and LABELS[a] != LABELS[n]]


def expected_terms(margin, beta):
    pos = [max(0.0, dist(a, p) - beta + margin) for a, p, _ in all_triplets()]
    neg = [max(0.0, beta - dist(a, n) + margin) for a, _, n in all_triplets()]
    return pos, neg


def points(dtype=torch.float64):
    return torch.tensor(POINTS, dtype=dtype, requires_grad=True), torch.tensor(LABELS)


def test_hand_computed_value_divides_by_nonzero_terms(dtype):
    emb, labels = points(dtype)
    pos, neg = expected_terms(0.2, 1.0)
    divisor = sum(x > 0 for x in pos) + sum(x > 0 for x in neg)
    assert divisor == 8
    out = MarginLoss(margin=0.2, beta=1.0, **RAW_L2)(emb, labels)
    assert out.item() == pytest.approx((sum(pos) + sum(neg)) / divisor, rel=1e-6)


def test_loss_dict_lists_triplets_and_divisor():
    emb, labels = points()
    out = MarginLoss(margin=0.2, beta=1.0, reducer=DoNothingReducer(), **RAW_L2)(emb, labels)
    entry = out["margin_loss"]
    assert entry["reduction_type"] == "triplet"
    a, p, n = entry["indices"]
    assert list(zip(a.tolist(), p.tolist(), n.tolist())) == all_triplets()
    pos, neg = expected_terms(0.2, 1.0)
    torch.testing.assert_close(entry["losses"], torch.tensor([x + y for x, y in zip(pos, neg)], dtype=torch.float64))
    assert int(entry["divisor"]) == 8
    assert out["beta_reg_loss"]["losses"] == 0


def test_similarity_flips_the_band():
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    out = MarginLoss(margin=0.1, beta=0.5, distance=CosineSimilarity(), reducer=DoNothingReducer())(emb, labels)
    c = 1 / math.sqrt(2)
    # triplet (0, 1, 2): pos [beta - s_ap + m]+ = [0.6 - c]+ = 0, neg [s_an - beta + m]+ = [0 - 0.4]+ = 0
    # triplet (1, 0, 2): pos 0, neg [c - 0.4]+
    torch.testing.assert_close(out["margin_loss"]["losses"], torch.tensor([0.0, c - 0.4], dtype=torch.float64))


def test_learned_beta_is_a_parameter_with_regularization():
    loss = MarginLoss(learn_beta=True, beta=0.9, nu=0.5)
    assert list(loss.state_dict()) == ["beta"]
    assert isinstance(loss.beta, torch.nn.Parameter) and loss.beta.shape == (1,)
    emb, labels = points()
    plain = MarginLoss(beta=0.9)(emb, labels)
    out = loss(emb, labels)
    assert out.item() == pytest.approx(plain.item() + 0.9 * 0.5, rel=1e-6)
    out.backward()
    assert loss.beta.grad is not None and torch.isfinite(loss.beta.grad).all()


def test_per_class_beta_uses_the_anchor_label():
    loss = MarginLoss(margin=0.2, num_classes=2, reducer=DoNothingReducer(), **RAW_L2)
    loss.beta[:] = torch.tensor([1.0, 2.0])
    emb, labels = points()
    out = loss(emb, labels)["margin_loss"]["losses"]
    expected = [max(0.0, dist(a, p) - b + 0.2) + max(0.0, b - dist(a, n) + 0.2)
                for a, p, n in all_triplets() for b in [[1.0, 2.0][LABELS[a]]]]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))


def test_per_class_learned_beta_regularization_is_per_triplet():
    loss = MarginLoss(learn_beta=True, nu=0.3, num_classes=3, reducer=DoNothingReducer())
    emb, labels = points()
    reg = loss(emb, labels)["beta_reg_loss"]
    assert reg["reduction_type"] == "element" and len(reg["losses"]) == 8
    torch.testing.assert_close(reg["losses"], torch.full((8,), 1.2 * 0.3, dtype=torch.float64))


@pytest.mark.parametrize("reducer", [None, MeanReducer(), SumReducer(), AvgNonZeroReducer()],
                         ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("kwargs", [
    {}, {"learn_beta": True, "nu": 0.2}, {"learn_beta": True, "nu": 0.2, "num_classes": 4},
    {"distance": CosineSimilarity(), "beta": 0.3}, {"num_classes": 4, "margin": 0.5},
])
def test_dense_path_equals_per_triplet_path(reducer, kwargs, dtype):
    torch.manual_seed(0)
    emb = torch.randn(24, 5, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 4, (24,))
    loss = MarginLoss(reducer=reducer, **kwargs)
    dense = loss(emb, labels)
    g_dense = torch.autograd.grad(dense, [emb] + list(loss.parameters()))
    listed = loss(emb, labels, indices_tuple=lmu.get_all_triplets_indices(labels))
    g_listed = torch.autograd.grad(listed, [emb] + list(loss.parameters()))
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(dense, listed, rtol=rtol * 10, atol=atol * 10)
    for a, b in zip(g_dense, g_listed):
        # beta stays a float32 parameter whatever the embeddings' dtype
        rtol, atol = tolerance(a.dtype)
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)


def test_reference_set(dtype):
    torch.manual_seed(1)
    emb = torch.randn(8, 5, dtype=dtype, requires_grad=True)
    ref = torch.randn(10, 5, dtype=dtype, requires_grad=True)
    labels, ref_labels = torch.randint(0, 3, (8,)), torch.randint(0, 3, (10,))
    loss = MarginLoss(margin=0.3, beta=1.0)
    dense = loss(emb, labels, ref_emb=ref, ref_labels=ref_labels)
    trip = lmu.get_all_triplets_indices(labels, ref_labels)
    listed = loss(emb, labels, indices_tuple=trip, ref_emb=ref, ref_labels=ref_labels)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(dense, listed, rtol=rtol * 10, atol=atol * 10)


def test_indices_tuple_without_labels():
    emb, _ = points()
    trip = (torch.tensor([3]), torch.tensor([2]), torch.tensor([1]))
    out = MarginLoss(margin=0.2, beta=1.0, reducer=DoNothingReducer(), **RAW_L2)(emb, indices_tuple=trip)
    expected = max(0.0, dist(3, 2) - 0.8) + max(0.0, 1.2 - dist(3, 1))
    assert out["margin_loss"]["losses"].item() == pytest.approx(expected)


def test_per_class_beta_without_labels_is_rejected():
    emb, _ = points()
    trip = (torch.tensor([3]), torch.tensor([2]), torch.tensor([1]))
    with pytest.raises(ValueError, match="needs labels"):
        MarginLoss(num_classes=2)(emb, indices_tuple=trip)


def test_random_triplets_per_anchor():
    torch.manual_seed(3)
    emb = torch.randn(12, 4)
    labels = torch.arange(12) % 3
    out = MarginLoss(triplets_per_anchor=4, reducer=DoNothingReducer())(emb, labels)
    a, p, n = out["margin_loss"]["indices"]
    assert len(a) == 12 * 4 and torch.all(labels[a] == labels[p]) and torch.all(labels[a] != labels[n])


@pytest.mark.parametrize("labels", [[0, 1, 2], [0, 0, 0], [5]], ids=["no-positives", "single-class", "batch-of-1"])
def test_no_triplets_gives_attached_zero(labels):
    emb = torch.randn(len(labels), 4, requires_grad=True)
    out = MarginLoss(learn_beta=True, nu=0.1, num_classes=6)(emb, torch.tensor(labels))
    assert out.item() == 0
    out.backward()
    assert torch.all(emb.grad == 0)


def test_all_terms_zero_gives_zero_not_nan():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    out = MarginLoss(margin=0.1, beta=1.0)(emb, torch.tensor([0, 0, 1, 1]))
    assert out.item() == 0
    out.backward()
    assert torch.isfinite(emb.grad).all()


def test_gradcheck():
    torch.manual_seed(2)
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = MarginLoss(margin=0.4, beta=0.8)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


def test_float16_is_close_to_float32():
    torch.manual_seed(4)
    emb = torch.randn(32, 8)
    labels = torch.randint(0, 4, (32,))
    full = MarginLoss()(emb, labels)
    half = MarginLoss()(emb.half(), labels)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=2e-2)


def test_records_hyper_parameters():
    assert {"margin", "nu", "beta"} <= set(MarginLoss()._record_these)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="labels or indices_tuple"):
        MarginLoss()(torch.randn(4, 3))
    with pytest.raises(ValueError):
        MarginLoss()(torch.randn(4, 3), torch.tensor([0, 1, 0]))


def _oracle_case(kwargs, use_miner, use_ref, seed=0):
    from pytorch_metric_learning import losses as ref_losses
    from pytorch_metric_learning import miners as ref_miners

    torch.manual_seed(seed)
    emb = torch.randn(32, 6, dtype=torch.float64)
    labels = torch.randint(0, 4, (32,))
    ref = torch.randn(20, 6, dtype=torch.float64) if use_ref else None
    ref_labels = torch.randint(0, 4, (20,)) if use_ref else None
    tup = None
    if use_miner:
        tup = ref_miners.TripletMarginMiner(margin=0.3)(emb, labels, ref, ref_labels)
    results = []
    for lib_loss in (MarginLoss(**kwargs), ref_losses.MarginLoss(**kwargs)):
        e = emb.clone().requires_grad_(True)
        r = ref.clone().requires_grad_(True) if use_ref else None
        out = lib_loss(e, labels, tup, r, ref_labels)
        params = list(lib_loss.parameters())
        grads = torch.autograd.grad(out, [e] + ([r] if use_ref else []) + params)
        results.append((out, grads))
    return results


@requires_reference
@pytest.mark.parametrize("use_miner", [False, True], ids=["all", "miner"])
@pytest.mark.parametrize("use_ref", [False, True], ids=["self", "ref"])
@pytest.mark.parametrize("kwargs", [
    {}, {"learn_beta": True, "nu": 0.1}, {"learn_beta": True, "nu": 0.1, "num_classes": 4},
    {"distance": CosineSimilarity(), "beta": 0.4, "margin": 0.1}, {"reducer": MeanReducer()},
], ids=["default", "learn", "learn-per-class", "cosine", "mean"])
def test_matches_reference(kwargs, use_miner, use_ref):
    (ours, g_ours), (theirs, g_theirs) = _oracle_case(kwargs, use_miner, use_ref)
    torch.testing.assert_close(ours, theirs.to(ours.dtype))
    for a, b in zip(g_ours, g_theirs):
        rtol, atol = (1e-5, 1e-6) if a.dtype == torch.float32 else (1e-6, 1e-9)
        torch.testing.assert_close(a, b.to(a.dtype), rtol=rtol, atol=atol)


def test_large_batch_does_not_list_triplets(monkeypatch):
    # 1024 samples in 4 classes have ~200 million triplets; the label path must not list them.
    def fail(*args, **kwargs):
        raise AssertionError("triplets were listed")

    monkeypatch.setattr(lmu, "convert_to_triplets", fail)
    torch.manual_seed(5)
    emb = torch.randn(1024, 16, requires_grad=True)
    out = MarginLoss(learn_beta=True, nu=0.1, num_classes=4)(emb, torch.arange(1024) % 4)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(emb.grad).all()
