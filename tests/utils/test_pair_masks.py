"""PairMasks: dense (anchor, reference) pair masks that stand for a listed pair tuple. Every pair
loss must give the same values and gradients from the masks as from the pairs they list."""

import pytest
import torch

from conftest import tolerance
from deepmetric import losses, reducers
from deepmetric.utils import loss_and_miner_utils as lmu
from deepmetric.utils.pair_masks import PairMasks

PAIR_LOSSES = [
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TupletMarginLoss",
]


def random_masks(n, m, seed):
    """Disjoint positive / negative masks with some cells in neither, one anchor without any
    positive and one without any negative."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.randint(0, 3, (n, m), generator=g)  # 0 positive, 1 negative, 2 neither
    kind[0] = torch.where(kind[0] == 0, 1, kind[0])
    kind[1] = torch.where(kind[1] == 1, 0, kind[1])
    return PairMasks(kind == 0, kind == 1)


def test_masks_must_be_two_dimensional_booleans_of_one_shape():
    good = torch.zeros(2, 3, dtype=torch.bool)
    with pytest.raises(TypeError, match=r"PairMasks\.pos must be a 2-D torch\.bool"):
        PairMasks(good.float(), good)
    with pytest.raises(TypeError, match=r"PairMasks\.neg must be a 2-D torch\.bool"):
        PairMasks(good, good[0])
    with pytest.raises(ValueError, match=r"one shape, got \(2, 3\) and \(3, 2\)"):
        PairMasks(good, good.T)


def test_to_pairs_lists_the_cells_row_major_like_all_pairs():
    labels, ref_labels = torch.tensor([0, 1, 0]), torch.tensor([1, 0, 0, 2])
    masks = PairMasks(*lmu.get_label_masks(labels, ref_labels))
    listed = masks.to_pairs()
    assert [x.tolist() for x in listed] == [
        [0, 0, 1, 2, 2],
        [1, 2, 0, 1, 2],
        [0, 0, 1, 1, 1, 2, 2],
        [0, 3, 1, 2, 3, 0, 3],
    ]
    for got, expected in zip(lmu.convert_to_pairs(masks, labels, ref_labels), listed):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("name", PAIR_LOSSES)
@pytest.mark.parametrize("reducer", [None, "MeanReducer"], ids=["default_reducer", "mean"])
def test_pair_losses_give_the_same_result_from_masks_as_from_the_listed_pairs(name, reducer, dtype, monkeypatch):
    kwargs = {} if reducer is None else {"reducer": getattr(reducers, reducer)()}
    loss = getattr(losses, name)(**kwargs)
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(6, 5, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    ref = torch.randn(9, 5, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    labels, ref_labels = torch.randint(0, 3, (6,), generator=g), torch.randint(0, 3, (9,), generator=g)
    masks = random_masks(6, 9, seed=4)

    def value_and_grads(indices_tuple):
        value = loss(emb, labels, indices_tuple, ref, ref_labels)
        return (value, *torch.autograd.grad(value, (emb, ref), allow_unused=True))

    from_pairs = value_and_grads(masks.to_pairs())
    with monkeypatch.context() as patch:  # the masks are reduced as they are, never listed
        patch.setattr(PairMasks, "to_pairs", lambda self: pytest.fail("the loss listed the masks"))
        from_masks = value_and_grads(masks)
    assert from_pairs[0].item() != 0  # the comparison is not between two zeros
    rtol, atol = tolerance(dtype)
    for got, expected in zip(from_masks, from_pairs):
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_empty_masks_give_an_attached_zero(name):
    emb = torch.randn(3, 4, requires_grad=True)
    empty = torch.zeros(3, 5, dtype=torch.bool)
    out = getattr(losses, name)()(emb, torch.tensor([0, 1, 2]), PairMasks(empty, empty), torch.randn(5, 4),
                                  torch.zeros(5, dtype=torch.long))
    assert out.item() == 0 and out.requires_grad
