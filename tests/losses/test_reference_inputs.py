"""Calls that work in the reference work here with the same result (floating labels, ``ref_emb``
without ``ref_labels``, mixed float dtypes), and bad input gets a clear error of (a subclass of)
the type the reference raises instead of an error from deep inside torch."""

import warnings

import _reference_sweep as sweep
import pytest
import torch

import deepmetric.losses as losses
import deepmetric.miners as miners
from conftest import requires_reference
from deepmetric.distances import SNRDistance
from deepmetric.reducers import ThresholdReducer
from deepmetric.utils.errors import ArgumentError, IndexArgumentError

MINERS = (
    "AngularMiner", "BatchEasyHardMiner", "BatchHardMiner", "HDCMiner", "MultiSimilarityMiner",
    "PairMarginMiner", "TripletMarginMiner",
)  # the deterministic miners (the random ones are compared with their draws elsewhere)

# Losses whose labels index classes: the reference fails deep inside torch on floating labels.
CLASS_LOSSES = (
    "ArcFaceLoss", "CosFaceLoss", "LargeMarginSoftmaxLoss", "NormalizedSoftmaxLoss", "P2SGradLoss",
    "ProxyAnchorLoss", "SoftTripleLoss", "SphereFaceLoss", "SubCenterArcFaceLoss",
)
PLAIN_LOSSES = [
    name for name, spec in sweep.LOSSES.items()
    if "[" not in name and spec[1] is not None and name not in CLASS_LOSSES + ("ManifoldLoss",)
]


def _pair(library_loss, name, data, dtype, **call):
    """``(reference outcome, our outcome)`` of calling loss ``name`` (default reducer)."""
    data.setdefault("thresholds", {})[name] = (0.1, 0.2, 1.0)
    outcomes, state = [], None
    for library in sweep.LIBRARIES:
        torch.manual_seed(0)
        try:
            loss = sweep.build_loss(library, name, data, lambda names: None)
            if state is not None:
                loss.load_state_dict(state)
            state = loss.state_dict()
            loss = loss.to(dtype)
            emb = data["embeddings"].to(dtype).clone().requires_grad_(True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = library_loss(loss, emb, call)
            grad = torch.autograd.grad(value, emb, allow_unused=True)[0] if value.requires_grad else None
            outcomes.append(sweep.Outcome(value, grad, stats={}))
        except Exception as e:  # noqa: BLE001 - compared below
            outcomes.append(sweep.Outcome(error=e))
    return outcomes


# ----------------------------------------------------------------------------- floating labels


@requires_reference
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", PLAIN_LOSSES + ["ProxyNCALoss"])
def test_floating_labels_give_the_reference_result(name, dtype):
    data = sweep.make_data(0, dtype)
    labels = data["labels"].to(dtype)
    ref, ours = _pair(lambda loss, emb, call: loss(emb, labels), name, data, dtype)
    if name == "SmoothAPLoss":  # the reference fails in bincount; ours equals the integer case
        assert isinstance(ref.error, NotImplementedError)
        int_ref, _ = _pair(lambda loss, emb, call: loss(emb, data["labels"]), name, data, dtype)
        assert sweep.compare(ours, int_ref, dtype) == []
        return
    assert sweep.compare(ours, ref, dtype) == []


@requires_reference
@pytest.mark.parametrize("name", CLASS_LOSSES)
def test_floating_class_labels_are_an_index_error(name):
    data = sweep.make_data(0, torch.float32)
    labels = data["labels"].float()
    ref, ours = _pair(lambda loss, emb, call: loss(emb, labels), name, data, torch.float32)
    assert ref.error is not None and isinstance(ours.error, type(ref.error))
    assert isinstance(ours.error, IndexArgumentError)
    assert "class indices" in str(ours.error) and "torch.float32" in str(ours.error)


def test_proxy_nca_rejects_fractional_labels():
    loss = losses.ProxyNCALoss(num_classes=3, embedding_size=4)
    with pytest.raises(IndexArgumentError, match="whole numbers, got 0.5"):
        loss(torch.randn(3, 4), torch.tensor([0.0, 0.5, 2.0]))


@requires_reference
@pytest.mark.parametrize("name", MINERS)
def test_floating_labels_give_the_reference_tuples_in_miners(name):
    import pytorch_metric_learning.miners as ref_miners

    data = sweep.make_data(1, torch.float64)
    emb, labels = data["embeddings"], data["labels"].double()
    expected = getattr(ref_miners, name)()(emb, labels)
    got = getattr(miners, name)()(emb, labels)
    assert len(got) == len(expected)
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


# ----------------------------------------------------------------------------- ref_emb without ref_labels


@requires_reference
@pytest.mark.parametrize("name", PLAIN_LOSSES)
def test_ref_emb_without_ref_labels_uses_labels_as_the_reference(name):
    data = sweep.make_data(2, torch.float64)
    ref_emb = sweep.make_data(3, torch.float64)["embeddings"]
    ref, ours = _pair(
        lambda loss, emb, call: loss(emb, data["labels"], ref_emb=ref_emb), name, data, torch.float64
    )
    if ref.error is not None and ours.error is None:
        # The reference fails (it reads ref_labels, which it left None); ours compares with labels.
        assert isinstance(ref.error, AttributeError)
        return
    assert sweep.compare(ours, ref, torch.float64) == []


def test_ref_emb_without_ref_labels_warns_and_pairs_row_i_with_label_i():
    emb, ref = torch.randn(6, 4), torch.randn(6, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.warns(UserWarning, match="without ref_labels"):
        implicit = losses.ContrastiveLoss()(emb, labels, ref_emb=ref)
    # the same pairs as the reference: label i for row i of ref_emb, the diagonal left out
    same = labels[:, None] == labels[None]
    pos = same & ~torch.eye(6, dtype=torch.bool)
    pairs = (*torch.where(pos), *torch.where(~same))
    assert torch.equal(implicit, losses.ContrastiveLoss()(emb, indices_tuple=pairs, ref_emb=ref))


def test_ref_emb_without_ref_labels_of_another_size_is_an_index_error():
    emb, labels = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    for loss in (losses.TripletMarginLoss(), miners.TripletMarginMiner()):
        with pytest.raises(IndexError, match="ref_emb has 4 rows and labels has 6 entries"):
            loss(emb, labels, ref_emb=torch.randn(4, 4))


@requires_reference
@pytest.mark.parametrize("name", MINERS)
def test_ref_emb_without_ref_labels_in_miners(name):
    import pytorch_metric_learning.miners as ref_miners

    data = sweep.make_data(4, torch.float64)
    ref_emb = sweep.make_data(5, torch.float64)["embeddings"]
    expected = getattr(ref_miners, name)()(data["embeddings"], data["labels"], ref_emb)
    with pytest.warns(UserWarning, match="without ref_labels"):
        got = getattr(miners, name)()(data["embeddings"], data["labels"], ref_emb)
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


# ----------------------------------------------------------------------------- mixed float dtypes


@requires_reference
@pytest.mark.parametrize(
    "name", ["TripletMarginLoss", "ContrastiveLoss", "MultiSimilarityLoss", "NTXentLoss", "SupConLoss",
             "MarginLoss", "NCALoss", "LiftedStructureLoss"],
)
def test_mixed_dtypes_with_snr_give_the_reference_result(name):
    """SNRDistance mixes the dtypes by elementwise promotion in the reference: same value and
    dtype here."""
    import pytorch_metric_learning.distances as ref_distances
    import pytorch_metric_learning.losses as ref_losses

    data = sweep.make_data(6, torch.float32)
    emb = data["embeddings"].clone().requires_grad_(True)
    ref_emb = sweep.make_data(7, torch.float64)["embeddings"]
    ref_labels = sweep.make_data(7, torch.float64)["labels"]
    call = {"ref_emb": ref_emb, "ref_labels": ref_labels}
    expected = getattr(ref_losses, name)(distance=ref_distances.SNRDistance())(emb, data["labels"], **call)
    got = getattr(losses, name)(distance=SNRDistance())(emb, data["labels"], **call)
    assert got.dtype == expected.dtype
    assert torch.allclose(got.double(), expected.double(), rtol=1e-6)


@pytest.mark.parametrize("name", ["TripletMarginLoss", "ContrastiveLoss", "MultiSimilarityLoss", "NTXentLoss"])
def test_mixed_dtypes_are_promoted(name):
    """The reference's matrix products fail on float32 against float64 (RuntimeError); here both
    sides are promoted to float64, as elementwise operations would."""
    g = torch.Generator().manual_seed(0)
    emb, ref = torch.randn(8, 4, generator=g), torch.randn(6, 4, generator=g, dtype=torch.float64)
    labels, ref_labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.tensor([0, 1, 2, 3, 0, 1])
    got = getattr(losses, name)()(emb, labels, ref_emb=ref, ref_labels=ref_labels)
    promoted = getattr(losses, name)()(emb.double(), labels, ref_emb=ref, ref_labels=ref_labels)
    # (a loss whose sub-losses are combined by MultipleReducers returns the embeddings' dtype,
    # as the reference does with SNRDistance)
    assert torch.isfinite(got) and torch.allclose(got.double(), promoted, rtol=1e-6)
    mined = miners.TripletMarginMiner()(emb, labels, ref, ref_labels)
    expected = miners.TripletMarginMiner()(emb.double(), labels, ref, ref_labels)
    assert all(torch.equal(a, b) for a, b in zip(mined, expected))


# ----------------------------------------------------------------------------- bad indices_tuple

_t = torch.tensor
BAD_TUPLES = {
    "triplet index out of range": (_t([0, 1]), _t([1, 9]), _t([2, 3])),
    "triplet lists of different lengths": (_t([0, 1, 2]), _t([1, 0]), _t([2, 3])),
    "floating indices": (_t([0.0, 1.0]), _t([1.0, 0.0]), _t([2.0, 3.0])),
    "pair index out of range": (_t([0, 1]), _t([1, 0]), _t([0, 1]), _t([20, 2])),
    "pair lists of different lengths": (_t([0, 1]), _t([1]), _t([0]), _t([2])),
    "two lists": (_t([0]), _t([1])),
    "negative index": (_t([0, 1]), _t([1, -1]), _t([2, 3])),
}
TUPLE_LOSSES = (
    "TripletMarginLoss", "ContrastiveLoss", "MultiSimilarityLoss", "NTXentLoss", "LiftedStructureLoss",
    "MarginLoss", "SupConLoss", "AngularLoss", "TupletMarginLoss", "CircleLoss",
    "GeneralizedLiftedStructureLoss", "IntraPairVarianceLoss", "SignalToNoiseRatioContrastiveLoss",
    "NPairsLoss", "HistogramLoss",
)


@requires_reference
@pytest.mark.parametrize("case", list(BAD_TUPLES))
@pytest.mark.parametrize("name", TUPLE_LOSSES)
def test_bad_indices_tuple_is_a_clear_error_of_the_reference_type(name, case):
    data = sweep.make_data(0, torch.float32)
    data["embeddings"], data["labels"] = data["embeddings"][:8], data["labels"][:8]
    indices = BAD_TUPLES[case]
    ref, ours = _pair(lambda loss, emb, call: loss(emb, data["labels"], indices), name, data, torch.float32)
    assert isinstance(ours.error, IndexArgumentError), ours.error
    assert "indices_tuple" in str(ours.error)
    if ref.error is not None:
        assert isinstance(ours.error, type(ref.error))


def test_negative_indices_are_out_of_range():
    """The reference indexes with some of them and compares others with anchors, so they have
    no consistent meaning: an error naming the entry."""
    emb, labels = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    indices = (_t([0, 1, 2]), _t([1, -8, 3]), _t([4, 4, 5]))
    with pytest.raises(IndexError, match=r"entry 'p' holds index -8, out of range \[0, 8\)"):
        losses.TripletMarginLoss()(emb, labels, indices)


# ----------------------------------------------------------------------------- reducer arguments


@pytest.mark.parametrize("low, high", [(0.5, 0.1), (0.2, 0.2)])
def test_threshold_reducer_rejects_an_empty_interval(low, high):
    with pytest.raises(ArgumentError, match=f"needs low < high, got low={low}, high={high}"):
        ThresholdReducer(low=low, high=high)
    with pytest.raises(AssertionError):  # what the reference's own checks raise
        ThresholdReducer(low=low, high=high)
