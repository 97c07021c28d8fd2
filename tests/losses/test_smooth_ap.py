"""SmoothAPLoss and the blocked sigmoid rank sums: hand-computed values, the reference's
block layout, blocking, dtypes, gradients, edge cases and the reference library as an oracle."""

import math

import pytest
import torch
from _ranking_helpers import assert_same_as_reference, grad_of

import deepmetric.ops.sigmoid_ranks as ranks_module
from conftest import requires_reference, tolerance
from deepmetric.distances import DotProductSimilarity, LpDistance
from deepmetric.losses import SmoothAPLoss
from deepmetric.miners import MultiSimilarityMiner
from deepmetric.ops.sigmoid_ranks import sigmoid_rank_sums
from deepmetric.reducers import DoNothingReducer


def circle(degrees, dtype=torch.float64):
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).to(dtype).requires_grad_(True)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def smooth_ap_by_formula(sims, group_size, temperature):
    """Per-query losses straight from the definition, with Python loops."""
    n = len(sims)
    losses = []
    for q in range(n):
        block = range(q // group_size * group_size, (q // group_size + 1) * group_size)
        ap = 0.0
        for i in block:
            above_all = sum(sigmoid((sims[q][j] - sims[q][i]) / temperature) for j in range(n) if j != i)
            above_pos = sum(sigmoid((sims[q][j] - sims[q][i]) / temperature) for j in block if j != i)
            ap += (1 + above_pos) / (1 + above_all)
        losses.append(1 - ap / group_size)
    return losses


def test_two_of_one_class_hand_computed():
    emb = circle([0, 90])
    out = SmoothAPLoss(temperature=1)(emb, torch.tensor([3, 3]))
    # one label -> blocks of one row: AP_q = 1 / (1 + sigma(cos 90 - 1)) for both rows
    expected = 1 - 1 / (1 + sigmoid(-1.0))
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_four_points_match_the_formula(dtype):
    degrees = [0, 60, 120, 180]
    emb = circle(degrees, dtype)
    sims = [[math.cos(math.radians(a - b)) for b in degrees] for a in degrees]
    out = SmoothAPLoss(temperature=0.5, reducer=DoNothingReducer())(emb, torch.tensor([0, 1, 0, 1]))
    entry = out["ap_loss"]
    assert entry["reduction_type"] == "element" and entry["indices"].tolist() == [0, 1, 2, 3]
    expected = torch.tensor(smooth_ap_by_formula(sims, 2, 0.5))
    torch.testing.assert_close(entry["losses"], expected, rtol=1e-5, atol=1e-6)


def test_groups_are_consecutive_blocks_whatever_the_label_values():
    torch.manual_seed(0)
    emb = torch.randn(6, 4)
    a = SmoothAPLoss(temperature=0.1)(emb, torch.tensor([0, 1, 2, 0, 1, 2]))
    b = SmoothAPLoss(temperature=0.1)(emb, torch.tensor([9, 9, 4, 4, 7, 7]))
    torch.testing.assert_close(a, b)


def test_all_distinct_labels_form_one_block_with_perfect_ap():
    emb = torch.randn(5, 3, requires_grad=True)
    out = SmoothAPLoss()(emb, torch.arange(5))
    assert out.item() == pytest.approx(0, abs=1e-6)


def test_batch_of_one_is_an_attached_zero():
    emb = torch.randn(1, 4, requires_grad=True)
    out = SmoothAPLoss()(emb, torch.tensor([2]))
    assert out.item() == 0 and out.requires_grad
    assert torch.all(grad_of(out, emb) == 0)


def test_result_is_float32_for_every_input_dtype(any_dtype):
    torch.manual_seed(1)
    emb = torch.randn(8, 4).to(any_dtype)
    out = SmoothAPLoss(temperature=0.1)(emb, torch.arange(8) % 4)
    assert out.dtype == torch.float32
    full = SmoothAPLoss(temperature=0.1)(emb.double(), torch.arange(8) % 4)
    rtol, atol = tolerance(any_dtype)
    torch.testing.assert_close(out, full, rtol=max(rtol, 1e-5), atol=max(atol, 1e-6))


def test_miner_weights_scale_each_query():
    emb = circle([0, 60, 120, 180])
    labels = torch.tensor([0, 1, 0, 1])
    plain = SmoothAPLoss(temperature=0.5, reducer=DoNothingReducer())(emb, labels)["ap_loss"]["losses"]
    pairs = (torch.tensor([0, 0]), torch.tensor([2, 2]), torch.tensor([1]), torch.tensor([0]))
    weighted = SmoothAPLoss(temperature=0.5, reducer=DoNothingReducer())(emb, labels, pairs)["ap_loss"]["losses"]
    # counts: 0 -> 3, 2 -> 2, 1 -> 1, 3 -> 0
    torch.testing.assert_close(weighted, plain * torch.tensor([1, 1 / 3, 2 / 3, 0]))


def test_unequal_class_sizes_are_rejected():
    with pytest.raises(ValueError, match="MPerClassSampler"):
        SmoothAPLoss()(torch.randn(5, 3), torch.tensor([0, 0, 0, 1, 1]))


def test_negative_labels_are_accepted():
    out = SmoothAPLoss()(torch.randn(4, 3), torch.tensor([-1, -2, -1, -2]))
    assert torch.isfinite(out)


def test_distance_must_be_cosine():
    with pytest.raises(AssertionError, match="SmoothAPLoss"):
        SmoothAPLoss(distance=LpDistance())
    with pytest.raises(AssertionError, match="SmoothAPLoss"):
        SmoothAPLoss(distance=DotProductSimilarity())


def test_reference_set_is_rejected():
    with pytest.raises(ValueError, match="ref_emb"):
        SmoothAPLoss()(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), ref_emb=torch.randn(2, 3),
                       ref_labels=torch.tensor([0, 1]))


def test_labels_are_required():
    with pytest.raises(ValueError, match="labels"):
        SmoothAPLoss()(torch.randn(4, 3))


def test_gradient_matches_dense_autograd_formula():
    torch.manual_seed(2)
    n, group = 12, 3
    emb = torch.randn(n, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(n) % group
    out = SmoothAPLoss(temperature=0.2)(emb, labels)
    # dense N x N x N version of the definition, differentiated by autograd
    x = torch.nn.functional.normalize(emb, dim=1)
    sims = x @ x.t()
    diff = torch.sigmoid((sims.unsqueeze(1) - sims.unsqueeze(2)) / 0.2)  # [q, i, j]
    not_self = ~torch.eye(n, dtype=torch.bool)
    block = torch.arange(n) // group
    same_block = block.unsqueeze(0) == block.unsqueeze(1)
    rank_all = 1 + (diff * not_self).sum(2)
    rank_pos = 1 + (diff * (not_self & same_block).unsqueeze(0)).sum(2)
    ap = ((rank_pos / rank_all) * same_block).sum(1) / group
    dense = (1 - ap).mean()
    torch.testing.assert_close(out.double(), dense, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad_of(out, emb), grad_of(dense, emb), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("clamp", [None, 2.0])
def test_sigmoid_rank_sums_gradcheck(clamp):
    torch.manual_seed(3)
    sims = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    pivots = torch.randint(0, 7, (5, 3))
    masks = [None, torch.rand(5, 7) > 0.4]
    assert torch.autograd.gradcheck(lambda s: sigmoid_rank_sums(s, pivots, masks, 0.3, clamp), (sims,))


def test_sigmoid_rank_sums_match_dense_definition():
    torch.manual_seed(4)
    sims = torch.randn(4, 6, dtype=torch.float64)
    pivots = torch.randint(0, 6, (4, 2))
    mask = torch.rand(4, 6) > 0.5
    out = sigmoid_rank_sums(sims, pivots, [mask], 0.5, clamp=1.0)
    z = ((sims.unsqueeze(1) - sims.gather(1, pivots).unsqueeze(2)) / 0.5).clamp(-1, 1)
    torch.testing.assert_close(out[0], (torch.sigmoid(z) * mask.unsqueeze(1)).sum(2))


def test_blocked_queries_give_the_same_values_and_gradients(monkeypatch):
    torch.manual_seed(5)
    emb = torch.randn(24, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(24) % 4
    whole = SmoothAPLoss(temperature=0.05)(emb, labels)
    g_whole = grad_of(whole, emb)
    monkeypatch.setattr(ranks_module, "_BLOCK_ELEMENTS", 200)  # two queries per block
    blocked = SmoothAPLoss(temperature=0.05)(emb, labels)
    torch.testing.assert_close(blocked, whole)
    torch.testing.assert_close(grad_of(blocked, emb), g_whole)


# ---------------------------------------------------------------- oracle


def shuffled_balanced_labels(n, num_classes, seed):
    labels = torch.arange(n) % num_classes
    return labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


@requires_reference
@pytest.mark.parametrize("num_classes", [1, 2, 6, 24])
@pytest.mark.parametrize("temperature", [0.01, 0.1])
@pytest.mark.parametrize("with_miner", [False, True])
def test_matches_reference(num_classes, temperature, with_miner, dtype):
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(6)
    emb = torch.randn(24, 8, dtype=dtype, requires_grad=True)
    labels = shuffled_balanced_labels(24, num_classes, seed=num_classes)
    call = {"indices_tuple": MultiSimilarityMiner(epsilon=0.3)(emb, labels)} if with_miner else {}
    assert_same_as_reference(SmoothAPLoss(temperature=temperature),
                             ref_losses.SmoothAPLoss(temperature=temperature),
                             (emb, labels), torch.float32, scale=20, **call)


@requires_reference
def test_matches_reference_in_float16():
    import pytorch_metric_learning.losses as ref_losses

    torch.manual_seed(7)
    emb = torch.randn(16, 8).half()
    labels = shuffled_balanced_labels(16, 4, seed=0)
    rtol, atol = tolerance(torch.float16)
    torch.testing.assert_close(SmoothAPLoss(temperature=0.1)(emb, labels),
                               ref_losses.SmoothAPLoss(temperature=0.1)(emb, labels), rtol=rtol, atol=atol)

