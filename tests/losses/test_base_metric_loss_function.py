"""The loss machinery: validation, reference handling, reducers per sub-loss, regularizers,
GenericPairLoss and BaseLossWrapper."""

import pytest
import torch

from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.losses import (
    BaseLossWrapper,
    BaseMetricLossFunction,
    ContrastiveLoss,
    GenericPairLoss,
    TripletMarginLoss,
    WeightRegularizerMixin,
)
from deepmetric.reducers import (
    AvgNonZeroReducer,
    DoNothingReducer,
    MeanReducer,
    MultipleReducers,
    ThresholdReducer,
)
from deepmetric.regularizers import LpRegularizer
from deepmetric.utils import loss_and_miner_utils as lmu


class MeanEmbeddingLoss(BaseMetricLossFunction):
    """The spec's minimal custom loss."""

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        return {"loss": {"losses": torch.mean(embeddings), "indices": None,
                         "reduction_type": "already_reduced"}}


def batch(n=6, d=4, dtype=torch.float32):
    torch.manual_seed(0)
    return torch.randn(n, d, dtype=dtype), torch.tensor([0, 0, 1, 1, 2, 2][:n])


def test_minimal_custom_loss():
    emb = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    assert MeanEmbeddingLoss()(emb).item() == 3.0


def test_defaults():
    loss = MeanEmbeddingLoss()
    assert isinstance(loss.distance, LpDistance) and loss.distance.p == 2
    assert loss.distance.normalize_embeddings and loss.distance.power == 1
    assert isinstance(loss.reducer, MeanReducer)
    assert loss.sub_loss_names() == ["loss"]
    assert loss.embedding_regularizer is None


def test_embedding_regularizer_adds_an_entry_and_a_reducer_per_name():
    reg = LpRegularizer()
    loss = MeanEmbeddingLoss(embedding_regularizer=reg, embedding_reg_weight=0.5)
    assert loss.sub_loss_names() == ["loss", "embedding_reg_loss"]
    assert isinstance(loss.reducer, MultipleReducers)
    assert set(loss.reducer.reducers.keys()) == {"loss", "embedding_reg_loss"}
    assert "embedding_reg_weight" in loss._record_these
    emb = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    # mean(emb) = 2, regularizer mean norm = 3, weighted 1.5
    assert loss(emb).item() == pytest.approx(3.5)


def test_embedding_regularization_still_counts_when_the_main_loss_is_empty():
    loss = TripletMarginLoss(embedding_regularizer=LpRegularizer())
    emb = torch.tensor([[3.0, 4.0], [0.0, 1.0]], requires_grad=True)
    out = loss(emb, torch.tensor([0, 1]))  # no triplets
    assert out.item() == pytest.approx(3.0)
    reducers = loss.reducer.reducers
    assert isinstance(reducers["loss"], AvgNonZeroReducer)
    assert isinstance(reducers["embedding_reg_loss"], AvgNonZeroReducer)


def test_weight_regularizer_names_come_before_embedding_names():
    class WithWeights(WeightRegularizerMixin, BaseMetricLossFunction):
        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            return {"loss": self.zero_loss()}

    loss = WithWeights(weight_regularizer=LpRegularizer(), embedding_regularizer=LpRegularizer())
    assert loss.sub_loss_names() == ["loss", "weight_reg_loss", "embedding_reg_loss"]
    assert WithWeights().sub_loss_names() == ["loss"]
    assert callable(WithWeights().weight_init_func)


def test_reducer_is_copied_unless_multiple_or_do_nothing():
    r = ThresholdReducer(low=0.1)
    loss = MeanEmbeddingLoss(reducer=r)
    assert isinstance(loss.reducer, ThresholdReducer) and loss.reducer is not r
    m = MultipleReducers({"loss": MeanReducer()})
    assert MeanEmbeddingLoss(reducer=m).reducer is m
    d = DoNothingReducer()
    assert MeanEmbeddingLoss(reducer=d).reducer is d
    c = ContrastiveLoss(reducer=r)
    assert isinstance(c.reducer, MultipleReducers)
    assert c.reducer.reducers["pos_loss"] is not c.reducer.reducers["neg_loss"]


def test_do_nothing_reducer_returns_the_loss_dict():
    emb, labels = batch()
    out = ContrastiveLoss(reducer=DoNothingReducer())(emb, labels)
    assert set(out) == {"pos_loss", "neg_loss"}
    assert out["pos_loss"]["reduction_type"] == "pos_pair"


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        ContrastiveLoss(margin=0.3)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"labels": torch.tensor([0, 1, 2])}, ValueError, "labels has 3 entries"),
        ({"labels": torch.tensor([[0, 1, 1, 0]])}, ValueError, "labels has 1 entries"),
        ({"labels": torch.zeros(4, 1, 1)}, ValueError, "1-D .* or 2-D multi-hot"),
        ({"labels": torch.tensor([0j, 1j, 1j, 0j])}, TypeError, "real dtype"),
        ({"labels": [0, 1, 1, 0]}, TypeError, "torch.Tensor"),
    ],
)
def test_bad_labels_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        ContrastiveLoss()(torch.randn(4, 3), **kwargs)


def test_bad_embeddings_are_rejected():
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="2-D"):
        ContrastiveLoss()(torch.randn(2), labels)
    with pytest.raises(TypeError, match="floating-point"):
        ContrastiveLoss()(torch.ones(2, 3, dtype=torch.long), labels)
    with pytest.raises(ValueError, match="empty"):
        ContrastiveLoss()(torch.randn(0, 3), torch.tensor([], dtype=torch.long))
    bad = torch.randn(2, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"embeddings contains NaN or Inf values \(in 1 of 2"):
        ContrastiveLoss()(bad, labels)
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        TripletMarginLoss()(bad, labels)


def test_bad_reference_inputs_are_rejected():
    emb, labels = batch()
    ref, ref_labels = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(IndexError, match="without ref_labels"):
        ContrastiveLoss()(emb, labels, ref_emb=ref)
    with pytest.raises(ValueError, match="same width"):
        ContrastiveLoss()(emb, labels, ref_emb=torch.randn(3, 5), ref_labels=ref_labels)
    with pytest.raises(ValueError, match="ref_labels has 2 entries"):
        ContrastiveLoss()(emb, labels, ref_emb=ref, ref_labels=ref_labels[:2])
    nan_ref = ref.clone()
    nan_ref[0, 0] = float("nan")
    with pytest.raises(ValueError, match="ref_emb contains NaN"):
        ContrastiveLoss()(emb, labels, ref_emb=nan_ref, ref_labels=ref_labels)


def test_labels_or_indices_tuple_required():
    with pytest.raises(ValueError, match="labels or indices_tuple"):
        ContrastiveLoss()(torch.randn(4, 3))


def test_indices_tuple_and_ref_emb_without_labels_are_allowed():
    emb, ref = torch.randn(2, 3), torch.randn(3, 3)
    pairs = (torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([0, 1]), torch.tensor([1, 0]))
    assert torch.isfinite(ContrastiveLoss()(emb, indices_tuple=pairs, ref_emb=ref))


# ---------------------------------------------------------------- GenericPairLoss


class SumOfMaskedDistances(GenericPairLoss):
    """sum(pos distances) - sum(neg distances), to expose the masks and pair values."""

    def __init__(self, mat_based_loss, **kwargs):
        super().__init__(mat_based_loss=mat_based_loss, **kwargs)

    def _compute_loss(self, *args):
        if self.loss_method == self.mat_based_loss:
            mat, pos_mask, neg_mask = args
            value = (mat * pos_mask).sum() - (mat * neg_mask).sum()
        else:
            pos_pair, neg_pair, _ = args
            value = sum(x.sum() for x in [pos_pair] if len(pos_pair)) - sum(
                x.sum() for x in [neg_pair] if len(neg_pair)
            )
        return {"loss": {"losses": value, "indices": None, "reduction_type": "already_reduced"}}


@pytest.mark.parametrize("mat_based", [True, False])
def test_generic_pair_loss_mask_path_equals_index_path(mat_based, dtype):
    emb, labels = batch(dtype=dtype)
    emb.requires_grad_(True)
    loss = SumOfMaskedDistances(mat_based)
    dense = loss(emb, labels)
    (g_dense,) = torch.autograd.grad(dense, emb)
    listed = loss(emb, labels, indices_tuple=lmu.get_all_pairs_indices(labels))
    (g_listed,) = torch.autograd.grad(listed, emb)
    torch.testing.assert_close(dense, listed)
    torch.testing.assert_close(g_dense, g_listed)


def test_generic_pair_loss_accepts_triplets_as_pairs():
    emb, labels = batch()
    trip = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([4, 5]))
    pairs = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([0, 2]), torch.tensor([4, 5]))
    loss = SumOfMaskedDistances(True)
    torch.testing.assert_close(loss(emb, indices_tuple=trip), loss(emb, indices_tuple=pairs))


def test_generic_pair_loss_is_zero_with_at_most_one_pair_per_list():
    emb = torch.randn(2, 3, requires_grad=True)
    out = SumOfMaskedDistances(True)(emb, torch.tensor([0, 1]))  # one negative pair each way
    # same-set mode: (0,1) and (1,0) are both negatives -> 2 pairs, so not zero
    assert out.item() != 0
    single = (torch.tensor([0]), torch.tensor([1]), torch.tensor([1]), torch.tensor([0]))
    zero = SumOfMaskedDistances(True)(emb, indices_tuple=single)
    assert zero.item() == 0 and zero.requires_grad


def test_generic_pair_loss_rejects_a_pair_marked_positive_and_negative():
    emb = torch.randn(3, 2)
    both = (torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([0, 2]), torch.tensor([1, 0]))
    with pytest.raises(AssertionError, match="either"):
        SumOfMaskedDistances(True)(emb, indices_tuple=both)


def test_same_set_mode_excludes_self_pairs_but_a_separate_reference_does_not():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    loss = SumOfMaskedDistances(True, distance=CosineSimilarity())
    # same set: positives (0,1), (1,0) with cos 0 -> 0
    assert loss(emb, labels).item() == 0
    # separate reference equal in value: diagonal positives count too (cos 1 each)
    assert loss(emb, labels, ref_emb=emb.clone(), ref_labels=labels.clone()).item() == 2


# ---------------------------------------------------------------- BaseLossWrapper


def test_base_loss_wrapper_checks_support_by_exact_class_name():
    class OnlyContrastive(BaseLossWrapper):
        def __init__(self, loss):
            super().__init__(loss)
            self.loss = loss

        @staticmethod
        def supported_losses():
            return ["ContrastiveLoss"]

        @classmethod
        def check_loss_support(cls, loss_name):
            if loss_name not in cls.supported_losses():
                raise Exception(f"{loss_name} not supported")

    class MyContrastive(ContrastiveLoss):
        pass

    assert isinstance(OnlyContrastive(ContrastiveLoss()).loss, ContrastiveLoss)
    with pytest.raises(Exception, match="MyContrastive not supported"):
        OnlyContrastive(MyContrastive())
