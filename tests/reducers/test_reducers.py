import pytest
import torch

from deepmetric.reducers import (
    AvgNonZeroReducer,
    BaseReducer,
    ClassWeightedReducer,
    DivisorReducer,
    DoNothingReducer,
    MeanReducer,
    MultipleReducers,
    PerAnchorReducer,
    SumReducer,
    ThresholdReducer,
)
from deepmetric.reducers.per_anchor_reducer import aggregation_func


def element_dict(values, dtype=torch.float64):
    losses = torch.tensor(values, dtype=dtype, requires_grad=True)
    return {
        "loss": {
            "losses": losses,
            "indices": torch.arange(len(values)),
            "reduction_type": "element",
        }
    }, losses


def embeddings_like(n=5, dtype=torch.float64):
    return torch.randn(n, 3, dtype=dtype, requires_grad=True)


LOSSES = [3.0, 7.0, 1.0, 13.0, 5.0]


def test_mean_and_sum(dtype):
    d, _ = element_dict(LOSSES, dtype)
    assert MeanReducer()(d, embeddings_like(dtype=dtype), None).item() == pytest.approx(5.8)
    assert SumReducer()(d, embeddings_like(dtype=dtype), None).item() == pytest.approx(29.0)


@pytest.mark.parametrize(
    "kwargs,expected",
    [({"low": 6}, (7 + 13) / 2), ({"high": 6}, (3 + 1 + 5) / 3), ({"low": 6, "high": 12}, 7.0)],
)
def test_threshold_reducer_examples_from_the_docs(kwargs, expected, dtype):
    d, _ = element_dict(LOSSES, dtype)
    assert ThresholdReducer(**kwargs)(d, embeddings_like(dtype=dtype), None).item() == expected


def test_threshold_reducer_needs_a_bound():
    with pytest.raises(ValueError, match="low and high"):
        ThresholdReducer()


def test_threshold_statistics():
    reducer = ThresholdReducer(low=2, high=10, collect_stats=True)
    d, _ = element_dict(LOSSES)
    reducer(d, embeddings_like(), None)
    assert reducer.num_past_filter == 3  # 3, 7, 5
    assert reducer.num_above_low == 4  # 3, 7, 13, 5
    assert reducer.num_below_high == 4  # 3, 7, 1, 5
    # the reference's count under this name: the losses above low that are also below high
    assert reducer.num_above_high == 3
    assert reducer.losses_size == 5


def test_avg_non_zero_reducer(dtype):
    d, losses = element_dict([0.0, 2.0, 0.0, 3.0], dtype)
    emb = embeddings_like(dtype=dtype)
    out = AvgNonZeroReducer()(d, emb, None)
    assert out.item() == 2.5
    out.backward()
    torch.testing.assert_close(losses.grad, torch.tensor([0.0, 0.5, 0.0, 0.5], dtype=dtype))
    with pytest.raises(TypeError):
        AvgNonZeroReducer(low=1)


def test_all_zero_losses_give_graph_attached_zero():
    d, _ = element_dict([0.0, 0.0])
    emb = embeddings_like()
    out = AvgNonZeroReducer()(d, emb, None)
    assert out.item() == 0 and out.requires_grad
    out.backward()
    assert torch.all(emb.grad == 0)


def test_plain_zero_loss_returns_zero_of_embeddings_dtype():
    emb = embeddings_like(dtype=torch.float32)
    d = {"loss": {"losses": 0, "indices": None, "reduction_type": "already_reduced"}}
    for reducer in [MeanReducer(), SumReducer(), AvgNonZeroReducer(), DivisorReducer()]:
        out = reducer(d, emb, None)
        assert out.dtype == torch.float32 and out.item() == 0 and out.requires_grad


def test_already_reduced_passes_through_and_checks_size():
    emb = embeddings_like()
    value = torch.tensor(4.0)
    d = {"loss": {"losses": value, "indices": None, "reduction_type": "already_reduced"}}
    assert MeanReducer()(d, emb, None) is value
    d["loss"]["losses"] = torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="already_reduced"):
        MeanReducer()(d, emb, None)


def test_pair_and_triplet_types_check_index_sizes():
    losses = torch.tensor([1.0, 2.0])
    good = {"loss": {"losses": losses, "indices": (torch.tensor([0, 1]), torch.tensor([2, 3])),
                     "reduction_type": "pos_pair"}}
    assert MeanReducer()(good, embeddings_like(), None).item() == 1.5
    bad = {"loss": {"losses": losses, "indices": (torch.tensor([0]), torch.tensor([2])),
                    "reduction_type": "neg_pair"}}
    with pytest.raises(AssertionError):
        MeanReducer()(bad, embeddings_like(), None)
    triplet = {"loss": {"losses": losses, "indices": (torch.tensor([0, 1]),) * 2,
                        "reduction_type": "triplet"}}
    with pytest.raises(ValueError, match="3 index tensors"):
        MeanReducer()(triplet, embeddings_like(), None)


def test_unknown_reduction_type_and_multiple_entries_are_rejected():
    emb = embeddings_like()
    d = {"loss": {"losses": torch.tensor([1.0]), "indices": torch.tensor([0]),
                  "reduction_type": "quadruplet"}}
    with pytest.raises(ValueError, match="quadruplet"):
        MeanReducer()(d, emb, None)
    two = {"a": d["loss"], "b": d["loss"]}
    with pytest.raises(ValueError, match="MultipleReducers"):
        MeanReducer()(two, emb, None)


def test_divisor_reducer(dtype):
    losses = torch.tensor([1.0, 2.0, 3.0], dtype=dtype)
    d = {"loss": {"losses": losses, "indices": torch.arange(3), "reduction_type": "element",
                  "divisor": 4}}
    reducer = DivisorReducer(collect_stats=True)
    assert reducer(d, embeddings_like(dtype=dtype), None).item() == 1.5
    assert reducer.divisor == 4
    d["loss"]["divisor"] = 0
    assert reducer(d, embeddings_like(dtype=dtype), None).item() == 0
    del d["loss"]["divisor"]
    with pytest.raises(KeyError):
        reducer(d, embeddings_like(dtype=dtype), None)


def test_divisor_reducer_recovers_float16_overflow():
    losses = torch.full((4,), 60000.0, dtype=torch.float16)
    d = {"loss": {"losses": losses, "indices": torch.arange(4), "reduction_type": "element",
                  "divisor": 8}}
    out = DivisorReducer()(d, embeddings_like(dtype=torch.float16), None)
    assert out.dtype == torch.float16 and out.item() == 30000.0


def test_do_nothing_reducer_returns_the_dict():
    d, _ = element_dict(LOSSES)
    assert DoNothingReducer()(d, embeddings_like(), None) is d


def test_class_weighted_reducer(dtype):
    labels = torch.tensor([0, 1, 1, 2])
    weights = torch.tensor([1.0, 0.5, 2.0])
    losses = torch.tensor([4.0, 2.0, 6.0, 1.0], dtype=dtype)
    d = {"loss": {"losses": losses, "indices": torch.arange(4), "reduction_type": "element"}}
    # (4*1 + 2*0.5 + 6*0.5 + 1*2) / 4 = 10 / 4
    out = ClassWeightedReducer(weights)(d, embeddings_like(4, dtype), labels)
    assert out.item() == pytest.approx(2.5)
    pairs = {"loss": {"losses": losses[:2], "indices": (torch.tensor([3, 0]), torch.tensor([1, 2])),
                      "reduction_type": "pos_pair"}}
    # anchors 3 (class 2, w=2) and 0 (class 0, w=1): (4*2 + 2*1) / 2
    assert ClassWeightedReducer(weights)(pairs, embeddings_like(4, dtype), labels).item() == 5.0
    with pytest.raises(ValueError, match="labels"):
        ClassWeightedReducer(weights)(d, embeddings_like(4, dtype), None)


def test_multiple_reducers_sum_their_results():
    pos = torch.tensor([0.05, 0.3, 0.5])
    neg = torch.tensor([1.0, 3.0])
    loss_dict = {
        "pos_loss": {"losses": pos, "indices": (torch.arange(3), torch.arange(3)),
                     "reduction_type": "pos_pair"},
        "neg_loss": {"losses": neg, "indices": (torch.arange(2), torch.arange(2)),
                     "reduction_type": "neg_pair"},
        "extra": {"losses": torch.tensor(10.0), "indices": None,
                  "reduction_type": "already_reduced"},
    }
    reducer = MultipleReducers({"pos_loss": ThresholdReducer(0.1), "neg_loss": SumReducer()})
    # pos: mean(0.3, 0.5) = 0.4; neg: 4; extra (default MeanReducer, passthrough): 10
    out = reducer(loss_dict, embeddings_like(dtype=torch.float32), None)
    assert out.item() == pytest.approx(14.4)
    assert isinstance(reducer.default_reducer, MeanReducer)


def test_per_anchor_reducer_averages_each_anchors_pairs():
    # anchor 0 has pairs with losses 1 and 3, anchor 2 has one pair with loss 4, others none
    losses = torch.tensor([1.0, 3.0, 4.0], dtype=torch.float64, requires_grad=True)
    d = {"loss": {"losses": losses, "indices": (torch.tensor([0, 0, 2]), torch.tensor([1, 2, 3])),
                  "reduction_type": "pos_pair"}}
    emb = embeddings_like(4)
    # per-anchor means: [2, 0, 4, 0] -> inner MeanReducer -> 1.5
    out = PerAnchorReducer()(d, emb, None)
    assert out.item() == 1.5
    out.backward()
    torch.testing.assert_close(losses.grad, torch.tensor([0.125, 0.125, 0.25], dtype=torch.float64))


def test_per_anchor_reducer_with_inner_reducer_and_larger_reference():
    losses = torch.tensor([2.0, 6.0])
    d = {"loss": {"losses": losses, "indices": (torch.tensor([0, 1]), torch.tensor([5, 9])),
                  "reduction_type": "neg_pair"}}
    out = PerAnchorReducer(AvgNonZeroReducer())(d, embeddings_like(3), None)
    assert out.item() == 4.0
    with pytest.raises(NotImplementedError):
        trip = {"loss": {"losses": losses, "indices": (torch.arange(2),) * 3,
                         "reduction_type": "triplet"}}
        PerAnchorReducer()(trip, embeddings_like(3), None)


def test_aggregation_func_rows_without_pairs_are_zero():
    x = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    out = aggregation_func(x, torch.tensor([2, 0]))
    torch.testing.assert_close(out, torch.tensor([2.0, 0.0]))


def test_custom_reducer_implements_only_what_it_supports():
    class MaxReducer(BaseReducer):
        def element_reduction(self, losses, loss_indices, embeddings, labels):
            return torch.max(losses)

    d, _ = element_dict(LOSSES)
    assert MaxReducer()(d, embeddings_like(), None).item() == 13.0
    pairs = {"loss": {"losses": torch.tensor([1.0]), "indices": (torch.tensor([0]),) * 2,
                      "reduction_type": "pos_pair"}}
    with pytest.raises(NotImplementedError):
        MaxReducer()(pairs, embeddings_like(), None)


def test_reducers_keep_float16():
    d, _ = element_dict(LOSSES, torch.float16)
    for reducer in [MeanReducer(), SumReducer(), AvgNonZeroReducer(), ThresholdReducer(high=10)]:
        assert reducer(d, embeddings_like(dtype=torch.float16), None).dtype == torch.float16
