"""AccuracyCalculator: hand-computed metrics, lone queries, blocks, custom metrics, oracle, bad inputs."""

import logging
import math

import numpy as np
import pytest
import torch

from conftest import requires_reference
from deepmetric.evaluation.kmeans import TorchKMeans
from deepmetric.utils import accuracy_calculator as ac
from deepmetric.utils import common_functions as c_f
from deepmetric.utils.accuracy_calculator import AccuracyCalculator

CPU = torch.device("cpu")
KNN_METRICS = (
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)

# The worked example of the spec: 6 queries, 5 neighbours each, reference match counts given.
EX_QUERY = torch.tensor([1, 1, 2, 3, 4, 0], dtype=torch.float)
EX_KNN = torch.tensor(
    [[0, 1, 1, 2, 2], [1, 0, 1, 1, 3], [4, 4, 4, 4, 2], [3, 1, 3, 1, 3], [0, 0, 4, 2, 2], [1, 2, 3, 4, 5]],
    dtype=torch.float,
)
EX_COUNTS = (torch.tensor([0, 1, 2, 3, 4], dtype=torch.float), torch.tensor([2, 3, 5, 4, 5]))
EX_EXPECTED = {
    "precision_at_1": [0, 1, 0, 1, 0, 0],
    "r_precision": [2 / 3, 2 / 3, 1 / 5, 2 / 4, 1 / 5, 0],
    "mean_average_precision_at_r": [
        (1 / 2 + 2 / 3) / 3,
        (1 + 2 / 3) / 3,
        (1 / 5) / 5,
        (1 + 2 / 3) / 4,
        (1 / 3) / 5,
        0,
    ],
    "mean_average_precision": [
        (1 / 2 + 2 / 3) / 3,
        (1 + 2 / 3 + 3 / 4) / 3,
        (1 / 5) / 5,
        (1 + 2 / 3 + 3 / 5) / 4,
        (1 / 3) / 5,
        0,
    ],
    "mean_reciprocal_rank": [1 / 2, 1, 1 / 5, 1, 1 / 3, 0],
    "precision_at_3": [2 / 3, 2 / 3, 0, 2 / 3, 1 / 3, 0],
    "recall_at_3": [1, 1, 0, 1, 1, 0],
    "mean_average_precision_at_3": [(1 / 2 + 2 / 3) / 3, (1 + 2 / 3) / 3, 0, (1 + 2 / 3) / 3, (1 / 3) / 3, 0],
}
# Query rows per class of EX_QUERY (labels 0..4).
EX_CLASSES = [[5], [0, 1], [2], [3], [4]]


def calc(**kwargs):
    kwargs.setdefault("device", CPU)
    return AccuracyCalculator(**kwargs)


def ex_kwargs():
    return {
        "knn_labels": EX_KNN,
        "query_labels": EX_QUERY,
        "not_lone_query_mask": torch.ones(6, dtype=torch.bool),
        "ref_includes_query": False,
        "label_counts": EX_COUNTS,
    }


def mean(values):
    return sum(values) / len(values)


# ------------------------------------------------------------------------ hand-computed values
@pytest.mark.parametrize("name", KNN_METRICS)
def test_spec_example_each_metric(name):
    got = getattr(calc(), "calculate_" + name)(**ex_kwargs())
    assert got == pytest.approx(mean(EX_EXPECTED[name]), abs=1e-12)


def test_spec_example_precision_at_1_is_two_sixths():
    assert calc().calculate_precision_at_1(**ex_kwargs()) == pytest.approx(2 / 6)


@pytest.mark.parametrize("name", KNN_METRICS)
def test_spec_example_avg_of_avgs_and_per_class(name):
    per_class = [mean([EX_EXPECTED[name][i] for i in rows]) for rows in EX_CLASSES]
    got_avg = getattr(calc(avg_of_avgs=True), "calculate_" + name)(**ex_kwargs())
    got_per_class = getattr(calc(return_per_class=True), "calculate_" + name)(**ex_kwargs())
    assert got_avg == pytest.approx(mean(per_class), abs=1e-12)
    assert got_per_class == pytest.approx(per_class, abs=1e-12)


@pytest.mark.parametrize("kind", ["precision", "recall", "mean_average_precision"])
def test_spec_example_new_metrics_at_3(kind):
    name = f"{kind}_at_3"
    calculator = calc(k_values=(3,))
    got = calculator.original_function_dict[name](**ex_kwargs())
    assert got == pytest.approx(mean(EX_EXPECTED[name]), abs=1e-12)


def test_module_functions_on_spec_example():
    gt = EX_QUERY[:, None]
    assert ac.precision_at_k(EX_KNN, gt, 1) == pytest.approx(2 / 6)
    assert ac.precision_at_k(EX_KNN, gt, 3) == pytest.approx(mean(EX_EXPECTED["precision_at_3"]))
    assert ac.recall_at_k(EX_KNN, gt, 3) == pytest.approx(4 / 6)
    assert ac.mean_reciprocal_rank(EX_KNN, gt) == pytest.approx(mean(EX_EXPECTED["mean_reciprocal_rank"]))
    assert ac.r_precision(EX_KNN, gt, False, EX_COUNTS) == pytest.approx(mean(EX_EXPECTED["r_precision"]))
    map_r = ac.mean_average_precision(EX_KNN, gt, False, EX_COUNTS, at_r=True)
    assert map_r == pytest.approx(mean(EX_EXPECTED["mean_average_precision_at_r"]))
    map_3 = ac.mean_average_precision_at_k(EX_KNN, gt, 3, False, EX_COUNTS)
    assert map_3 == pytest.approx(mean(EX_EXPECTED["mean_average_precision_at_3"]))


def test_precision_at_k_beyond_retrieved_counts_missing_slots_as_misses():
    knn = torch.tensor([[1.0, 1.0]])
    assert ac.precision_at_k(knn, torch.tensor([[1.0]]), 4) == pytest.approx(0.5)


def test_relevance_mask_and_ref_includes_query_subtracts_self():
    mask, relevant = ac.get_relevance_mask((6, 5), EX_QUERY[:, None], True, EX_COUNTS)
    assert relevant.tolist() == [2, 2, 4, 3, 4, 1]
    assert mask.sum(dim=1).tolist() == [2, 2, 4, 3, 4, 1]
    assert mask[0].tolist() == [True, True, False, False, False]


def test_label_match_counts_and_lone_labels_spec_example():
    query_labels = torch.tensor([0.0, 0, 1, 1])
    counts = ac.get_label_match_counts(query_labels, torch.tensor([1.0, 1, 1, 2, 2]), ac.EQUALITY)
    assert counts[0].tolist() == [0, 1] and counts[1].tolist() == [0, 3]
    lone, mask = ac.get_lone_query_labels(query_labels, counts, False, ac.EQUALITY)
    assert lone.tolist() == [0] and mask.tolist() == [False, False, True, True]
    # With the reference containing the queries, a label matched only by itself is lone too.
    counts = (torch.tensor([0.0, 1.0]), torch.tensor([1, 2]))
    lone, mask = ac.get_lone_query_labels(torch.tensor([0.0, 1, 1]), counts, True, ac.EQUALITY)
    assert lone.tolist() == [0] and mask.tolist() == [False, True, True]


def test_try_getting_not_lone_labels_and_nan_accuracy():
    assert ac.try_getting_not_lone_labels(EX_KNN, EX_QUERY, torch.zeros(6, dtype=torch.bool)) == (None, None)
    knn, q = ac.try_getting_not_lone_labels(EX_KNN, EX_QUERY, torch.tensor([True, False] * 3))
    assert q.tolist() == [1, 2, 4] and knn.shape == (3, 5)
    assert math.isnan(ac.nan_accuracy(torch.arange(3), False))
    assert len(ac.nan_accuracy(torch.arange(3), True)) == 3


def test_ties_broken_by_reference_index():
    # Query at 1: reference items 1 and 2 are tied at distance 0; index 1 (wrong label) ranks first.
    reference = torch.tensor([[0.0], [1.0], [1.0], [3.0]])
    result = calc(include=KNN_METRICS).get_accuracy(
        torch.tensor([[1.0]]), torch.tensor([0]), reference, torch.tensor([0, 1, 0, 1])
    )
    assert result["precision_at_1"] == 0
    assert result["mean_reciprocal_rank"] == pytest.approx(1 / 2)
    assert result["mean_average_precision"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["r_precision"] == pytest.approx(1 / 2)


def test_reference_none_excludes_each_query_itself(dtype):
    x = torch.tensor([[0.0], [1.0], [2.0], [4.0]], dtype=dtype)
    result = calc(include=KNN_METRICS).get_accuracy(x, torch.tensor([0, 1, 0, 1]))
    assert result["precision_at_1"] == 0
    assert result["mean_reciprocal_rank"] == pytest.approx(11 / 24)
    assert result["mean_average_precision"] == pytest.approx(11 / 24)


def test_explicit_ref_includes_query_equals_reference_none():
    torch.manual_seed(0)
    x, labels = torch.randn(30, 4), torch.randint(0, 3, (30,))
    extra, extra_labels = torch.randn(10, 4), torch.randint(0, 3, (10,))
    c = calc(include=KNN_METRICS)
    assert c.get_accuracy(x, labels) == c.get_accuracy(x, labels, x, labels, ref_includes_query=True)
    both = c.get_accuracy(x, labels, torch.cat([x, extra]), torch.cat([labels, extra_labels]), True)
    assert set(both) == set(KNN_METRICS)


def test_lone_queries_are_left_out():
    reference = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    reference_labels = torch.tensor([1, 1, 1, 2, 2])
    query = torch.tensor([[0.1], [5.0], [0.4], [10.4]])
    query_labels = torch.tensor([0, 0, 1, 1])
    c = calc(include=KNN_METRICS)
    result = c.get_accuracy(query, query_labels, reference, reference_labels)
    assert result["precision_at_1"] == pytest.approx(1 / 2)
    assert result["mean_reciprocal_rank"] == pytest.approx((1 + 1 / 3) / 2)
    assert result["r_precision"] == pytest.approx((1 + 1 / 3) / 2)
    assert result["mean_average_precision_at_r"] == pytest.approx((1 + 1 / 9) / 2)
    assert result["mean_average_precision"] == pytest.approx((1 + (1 / 3 + 2 / 4 + 3 / 5) / 3) / 2)
    per_class = calc(include=KNN_METRICS, return_per_class=True).get_accuracy(
        query, query_labels, reference, reference_labels
    )
    assert per_class["precision_at_1"] == [0.5]


def test_all_queries_lone_gives_nan_and_a_warning(caplog):
    query, reference = torch.randn(2, 3), torch.randn(4, 3)
    with caplog.at_level(logging.WARNING, logger=c_f.LOGGER_NAME):
        result = calc(exclude=("NMI", "AMI"), k_values=(2,)).get_accuracy(
            query, torch.tensor([5, 6]), reference, torch.tensor([1, 1, 2, 2])
        )
    assert all(math.isnan(v) for v in result.values())
    assert "None of the query labels are in the reference set." in caplog.text
    per_class = calc(include=("precision_at_1",), return_per_class=True).get_accuracy(
        query, torch.tensor([5, 6]), reference, torch.tensor([1, 1, 2, 2])
    )
    assert len(per_class["precision_at_1"]) == 2 and all(math.isnan(v) for v in per_class["precision_at_1"])


def test_label_comparison_fn_with_two_column_labels():
    def fn(x, y):
        return (x[..., 0] == y[..., 0]) & (x[..., 1] != y[..., 1])

    query = torch.tensor([[0.0], [10.0]])
    reference = torch.tensor([[0.1], [0.2], [10.1], [10.2]])
    query_labels = torch.tensor([[0, 0], [1, 0]])
    reference_labels = torch.tensor([[0, 0], [0, 1], [1, 1], [2, 0]])
    c = calc(exclude=("NMI", "AMI"), label_comparison_fn=fn)
    result = c.get_accuracy(query, query_labels, reference, reference_labels)
    assert result["precision_at_1"] == pytest.approx(0.5)
    assert result["mean_reciprocal_rank"] == pytest.approx(0.75)
    assert result["mean_average_precision"] == pytest.approx(0.75)


def test_label_comparison_fn_float_labels_within_one():
    counts = ac.get_label_match_counts(
        torch.tensor([0.0, 5.0]), torch.tensor([0.5, 5.2, 9.0, -0.2]), lambda x, y: (x - y).abs() < 1
    )
    assert counts[1].tolist() == [2, 1]


def test_multi_column_labels_with_default_equality_need_all_columns():
    knn = torch.tensor([[[1.0, 2.0], [1.0, 3.0]]])
    assert ac.precision_at_k(knn, torch.tensor([[[1.0, 3.0]]]), 1) == 0
    assert ac.mean_reciprocal_rank(knn, torch.tensor([[[1.0, 3.0]]])) == pytest.approx(1 / 2)


class WithCustomMetrics(AccuracyCalculator):
    def calculate_precision_at_2(self, knn_labels, query_labels, not_lone_query_mask, **kwargs):
        self.seen_shape = tuple(knn_labels.shape)
        return ac.precision_at_k(knn_labels[not_lone_query_mask], query_labels[not_lone_query_mask, None], 2)

    def calculate_num_queries(self, query, **kwargs):
        return len(query)

    def requires_knn(self):
        return super().requires_knn() + ["precision_at_2"]


def test_custom_calculate_methods_are_discovered_and_get_knn_labels():
    c = WithCustomMetrics(device=CPU)
    assert c.get_curr_metrics() == [
        "AMI",
        "NMI",
        "mean_average_precision",
        "mean_average_precision_at_r",
        "mean_reciprocal_rank",
        "num_queries",
        "precision_at_1",
        "precision_at_2",
        "r_precision",
    ]
    x = torch.tensor([[0.0], [1.0], [2.0], [4.0]])
    result = c.get_accuracy(x, torch.tensor([0, 1, 0, 1]), include=("num_queries", "precision_at_2"))
    assert list(result) == ["num_queries", "precision_at_2"]
    assert result["num_queries"] == 4
    # Neighbour labels (see test_reference_none_excludes_each_query_itself): rows 1,0 | 0,0 | 1,0 | 0,1.
    assert result["precision_at_2"] == pytest.approx((1 / 2 + 0 + 1 / 2 + 1 / 2) / 4)
    assert c.seen_shape == (4, 3)


def test_overridden_builtin_metric_is_used():
    class Doubled(AccuracyCalculator):
        def calculate_precision_at_1(self, **kwargs):
            return 2 * super().calculate_precision_at_1(**kwargs)

    x = torch.tensor([[0.0], [1.0], [3.0], [4.0]])
    result = Doubled(device=CPU, include=("precision_at_1",)).get_accuracy(x, torch.tensor([0, 0, 1, 1]))
    assert result == {"precision_at_1": 2.0}


def test_mean_reciprocal_rank_alone_runs_knn():
    x = torch.tensor([[0.0], [1.0], [2.0], [4.0]])
    result = calc(include=("mean_reciprocal_rank",)).get_accuracy(x, torch.tensor([0, 1, 0, 1]))
    assert result["mean_reciprocal_rank"] == pytest.approx(11 / 24)


def test_at_k_metrics_by_k_values_or_by_name():
    c = calc(k_values=(2, 1))
    names = c.get_curr_metrics()
    assert names[-5:] == [
        "recall_at_1",
        "mean_average_precision_at_1",
        "precision_at_2",
        "recall_at_2",
        "mean_average_precision_at_2",
    ]
    assert names.count("precision_at_1") == 1
    assert calc(include=("recall_at_7",)).get_curr_metrics() == ["recall_at_7"]
    assert "recall_at_7" in calc(include=("recall_at_7",)).requires_knn()


def test_at_k_metrics_do_not_change_builtin_values():
    torch.manual_seed(1)
    x, labels = torch.randn(40, 3), torch.randint(0, 4, (40,))
    plain = calc(include=KNN_METRICS, k=3).get_accuracy(x, labels)
    extra = calc(exclude=("NMI", "AMI"), k=3, k_values=(20,)).get_accuracy(x, labels)
    assert {k: extra[k] for k in plain} == plain
    assert 0 <= extra["precision_at_20"] <= 1 and extra["recall_at_20"] >= extra["precision_at_1"]


def test_perfect_ranking_gives_one_for_every_knn_metric():
    x = torch.tensor([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    result = calc(exclude=("NMI", "AMI"), k_values=(1, 4)).get_accuracy(x, labels)
    for name in KNN_METRICS + ("recall_at_4", "mean_average_precision_at_4", "mean_average_precision_at_1"):
        assert result[name] == pytest.approx(1.0), name
    assert result["precision_at_4"] == pytest.approx(2 / 4)


# ------------------------------------------------------------------------- blocks and memory
class RecordingKNN:
    def __init__(self):
        self.inner = ac.ExactKNN()
        self.rows = []

    def __call__(self, query, k, reference=None, ref_includes_query=False):
        self.rows.append(len(query) * k)
        return self.inner(query, k, reference, ref_includes_query)


@pytest.mark.parametrize("k", [None, "max_bin_count", 4])
@pytest.mark.parametrize("separate_reference", [False, True])
def test_blocks_bound_the_neighbour_entries_and_match_one_block(k, separate_reference):
    torch.manual_seed(2)
    x, labels = torch.randn(90, 5), torch.randint(0, 6, (90,))
    args = (x[:50], labels[:50], x[20:], labels[20:], False) if separate_reference else (x, labels)
    knn = RecordingKNN()
    blocked = calc(exclude=("NMI", "AMI"), k=k, k_values=(3,), knn_func=knn, knn_block_entries=100)
    one = calc(exclude=("NMI", "AMI"), k=k, k_values=(3,))
    got, expected = blocked.get_accuracy(*args), one.get_accuracy(*args)
    assert got.keys() == expected.keys()
    for key in got:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    assert len(knn.rows) > 1
    # Each call holds at most the block budget, plus one own entry per row (at most doubling it).
    assert max(knn.rows) <= 2 * 100


# ------------------------------------------------------------------------------------ inputs
def test_numpy_and_any_dtype_inputs_give_the_same_result(any_dtype):
    x = torch.tensor([[0.0], [1.0], [2.0], [4.0]])
    labels = torch.tensor([0, 1, 0, 1])
    c = calc(include=KNN_METRICS)
    expected = c.get_accuracy(x, labels)
    assert c.get_accuracy(x.to(any_dtype), labels) == expected
    assert c.get_accuracy(x.numpy(), labels.numpy()) == expected


def test_large_integer_labels_stay_distinct():
    big = 2**25
    x = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    labels = torch.tensor([big, big + 1, big + 1, big])
    assert calc(include=("precision_at_1",)).get_accuracy(x, labels)["precision_at_1"] == 0


def test_nmi_ami_match_sklearn_on_the_clustering():
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    torch.manual_seed(3)
    x, labels = torch.randn(60, 4), torch.randint(0, 3, (60,))
    clusters = TorchKMeans(niter=20)(x, 3)
    result = calc(include=("NMI", "AMI")).get_accuracy(x, labels)
    assert result["NMI"] == pytest.approx(normalized_mutual_info_score(labels.numpy(), clusters.numpy()))
    assert result["AMI"] == pytest.approx(adjusted_mutual_info_score(labels.numpy(), clusters.numpy()))


def test_defaults_and_api_lists():
    c = calc()
    assert c.requires_clustering() == ["NMI", "AMI"]
    assert c.requires_knn() == ["precision_at_1", "mean_average_precision", "mean_average_precision_at_r", "r_precision"]
    assert c.description() == "" and calc(avg_of_avgs=True).description() == "avg_of_avgs"
    assert c.k is None and c.label_comparison_fn is ac.EQUALITY
    assert isinstance(c.knn_func, ac.ExactKNN)
    assert c.determine_k(torch.tensor([3, 7]), 20, True) == 19
    assert calc(k="max_bin_count").determine_k(torch.tensor([3, 7]), 20, True) == 6
    assert calc(k=5).determine_k(torch.tensor([3, 7]), 20, False) == 5


def test_get_accuracy_include_narrows_and_persists():
    c = calc(include=KNN_METRICS)
    x, labels = torch.tensor([[0.0], [1.0], [2.0], [4.0]]), torch.tensor([0, 1, 0, 1])
    assert list(c.get_accuracy(x, labels, include=("r_precision", "NMI"))) == ["r_precision"]
    assert c.get_curr_metrics() == ["r_precision"]
    assert list(c.get_accuracy(x, labels, exclude=("r_precision",))) == sorted(set(KNN_METRICS) - {"r_precision"})


# -------------------------------------------------------------------------------- bad inputs
def test_unknown_metric_names_list_the_allowed_ones():
    with pytest.raises(ValueError, match="precision_at_1"):
        calc(include=("precision_at_one",))
    with pytest.raises(ValueError, match="Unknown metric"):
        calc(exclude=("bogus",))
    with pytest.raises(TypeError):
        calc(include="NMI")


@pytest.mark.parametrize("k", [0, -1, 1.5, "max", True])
def test_bad_k_rejected(k):
    with pytest.raises(ValueError, match="k must be"):
        calc(k=k)


@pytest.mark.parametrize("k_values", [(0,), (2.5,), (True,)])
def test_bad_k_values_rejected(k_values):
    with pytest.raises(ValueError, match="k_values"):
        calc(k_values=k_values)
    with pytest.raises(TypeError, match="k_values"):
        calc(k_values=5)


def test_conflicting_options_rejected():
    with pytest.raises(ValueError, match="mutually exclusive"):
        calc(avg_of_avgs=True, return_per_class=True)
    with pytest.raises(NotImplementedError, match="clustering"):
        calc(label_comparison_fn=torch.eq)


def test_k_larger_than_the_reference_set_uses_the_neighbours_that_exist(caplog):
    x, labels = clustered(40, 3, 4, seed=20)
    query, query_labels, reference, reference_labels = x[:10], labels[:10], x[10:], labels[10:]
    with caplog.at_level(logging.WARNING, logger=c_f.LOGGER_NAME):
        clamped = calc(exclude=("NMI", "AMI"), k=100, k_values=(100,)).get_accuracy(
            query, query_labels, reference, reference_labels
        )
    assert "k=100 is more than the 30 reference embeddings" in caplog.text
    whole = calc(exclude=("NMI", "AMI"), k=None, k_values=(30,)).get_accuracy(
        query, query_labels, reference, reference_labels
    )
    for name in KNN_METRICS:
        assert clamped[name] == whole[name], name
    assert clamped["recall_at_100"] == whole["recall_at_30"]
    assert clamped["mean_average_precision_at_100"] == whole["mean_average_precision_at_30"]
    # precision_at_100 still divides by 100: all R positives of a query are among the 30.
    positives = [int((reference_labels == y).sum()) for y in query_labels.tolist()]
    assert clamped["precision_at_100"] == pytest.approx(mean(positives) / 100, abs=1e-12)
    # With the query inside the reference set, k counts references other than the query.
    own = calc(exclude=("NMI", "AMI"), k=50).get_accuracy(x, labels)
    assert own == calc(exclude=("NMI", "AMI"), k=None).get_accuracy(x, labels)


@requires_reference
def test_k_larger_than_the_reference_set_same_as_reference():
    # The reference pads faiss' missing neighbours with index -1, read as the label of the last
    # reference: every metric but MAP (which sums over all k columns) ignores the padding.
    pytest.importorskip("faiss")
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as Reference

    for seed in range(3):
        x, labels = clustered(60, 4, 5, seed=30 + seed)
        args = (x[:20], labels[:20], x[20:], labels[20:])
        options = {"exclude": ("NMI", "AMI"), "device": CPU}
        ours = calc(k=100, **options).get_accuracy(*args)
        theirs = Reference(k=100, **options).get_accuracy(*args)
        theirs_whole = Reference(k=None, **options).get_accuracy(*args)
        for name in ("precision_at_1", "r_precision", "mean_average_precision_at_r", "mean_reciprocal_rank"):
            assert ours[name] == pytest.approx(theirs[name], rel=1e-6, abs=1e-7), name
        assert ours["mean_average_precision"] == pytest.approx(theirs_whole["mean_average_precision"], rel=1e-6)


def test_mismatched_shapes_and_non_finite_rejected():
    c = calc(include=KNN_METRICS)
    x, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="same length"):
        c.get_accuracy(x, labels[:5])
    with pytest.raises(ValueError, match="same length"):
        c.get_accuracy(x, labels, x, labels[:4])
    # The reference fails there in faiss (AssertionError), torch (RuntimeError) or by indexing
    # (IndexError): these errors are also of those types.
    with pytest.raises(AssertionError, match="width"):
        c.get_accuracy(x, labels, torch.randn(6, 4), labels)
    with pytest.raises(IndexError, match="2-D"):
        c.get_accuracy(x[:, 0], labels)
    with pytest.raises(RuntimeError, match="at least one embedding"):
        c.get_accuracy(torch.randn(0, 3), torch.zeros(0))
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        c.get_accuracy(bad, labels)
    with pytest.raises(ValueError, match="ref_includes_query"):
        c.get_accuracy(x, labels, torch.randn(6, 3), labels, ref_includes_query=True)
    with pytest.raises(TypeError, match="numeric"):
        c.get_accuracy(x, labels.bool())


# ------------------------------------------------------------------------------------ oracle
def clustered(n, d, classes, seed, noise=1.0):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=gen) * 2
    labels = torch.randint(0, classes, (n,), generator=gen)
    return centers[labels] + noise * torch.randn(n, d, generator=gen), labels


def assert_same(ours, theirs):
    assert list(ours) == list(theirs)
    for key in theirs:
        np.testing.assert_allclose(np.array(ours[key]), np.array(theirs[key]), rtol=1e-6, atol=1e-7, err_msg=key)


@requires_reference
@pytest.mark.parametrize("k", [None, "max_bin_count", 1, 7])
@pytest.mark.parametrize("mode", ["mean", "avg_of_avgs", "return_per_class"])
def test_oracle_default_backends(k, mode):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as Reference

    x, labels = clustered(400, 8, 12, seed=10)
    options = {"k": k, "device": CPU, "kmeans_func": TorchKMeans(niter=20)}
    if mode != "mean":
        options[mode] = True
    ours, theirs = AccuracyCalculator(**options), Reference(**options)
    assert_same(ours.get_accuracy(x, labels), theirs.get_accuracy(x, labels))
    # Separate query and reference, with a query class absent from the reference (lone queries).
    query, query_labels = x[:150], labels[:150]
    keep = labels[100:] != 3
    reference, reference_labels = x[100:][keep], labels[100:][keep]
    assert_same(
        ours.get_accuracy(query, query_labels, reference, reference_labels),
        theirs.get_accuracy(query, query_labels, reference, reference_labels),
    )
    assert_same(
        ours.get_accuracy(x[:200], labels[:200], x, labels, ref_includes_query=True),
        theirs.get_accuracy(x[:200], labels[:200], x, labels, ref_includes_query=True),
    )


@requires_reference
@pytest.mark.parametrize("k", [None, "max_bin_count", 5])
def test_oracle_blocked_with_custom_label_comparison(k):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as Reference

    def fn(x, y):
        return (x[..., 0] == y[..., 0]) & (x[..., 1] != y[..., 1])

    x, labels = clustered(300, 6, 10, seed=11)
    two_col = torch.stack([labels // 3, labels % 3], dim=1)
    knn = ac.ExactKNN()  # the same neighbours on both sides isolates the metric code
    options = {"k": k, "device": CPU, "exclude": ("NMI", "AMI"), "label_comparison_fn": fn, "knn_func": knn}
    ours = AccuracyCalculator(knn_block_entries=500, **options)
    assert_same(ours.get_accuracy(x, two_col), Reference(**options).get_accuracy(x, two_col))


@requires_reference
def test_oracle_module_functions():
    from pytorch_metric_learning.utils import accuracy_calculator as ref

    gen = torch.Generator().manual_seed(12)
    knn = torch.randint(0, 4, (50, 9), generator=gen).float()
    gt = torch.randint(0, 4, (50,), generator=gen).float()[:, None]
    counts = ref.get_label_match_counts(gt[:, 0], torch.randint(0, 4, (80,), generator=gen).float(), ref.EQUALITY)
    counts = (counts[0], counts[1] + 9)  # every label has at least 9 relevant items
    ours_counts = ac.get_label_match_counts(gt[:, 0], knn.flatten(), ac.EQUALITY)
    theirs_counts = ref.get_label_match_counts(gt[:, 0], knn.flatten(), ref.EQUALITY)
    assert [t.tolist() for t in ours_counts] == [t.tolist() for t in theirs_counts]
    for avg, per_class in [(False, False), (True, False), (False, True)]:
        tail = (avg, per_class, torch.eq)
        pairs = [
            (ac.precision_at_k(knn, gt, 3, *tail), ref.precision_at_k(knn, gt, 3, *tail)),
            (ac.mean_reciprocal_rank(knn, gt, *tail), ref.mean_reciprocal_rank(knn, gt, *tail)),
            (ac.r_precision(knn, gt, True, counts, *tail), ref.r_precision(knn, gt, True, counts, *tail)),
            (
                ac.mean_average_precision(knn, gt, False, counts, *tail, at_r=True),
                ref.mean_average_precision(knn, gt, False, counts, *tail, at_r=True),
            ),
            (
                ac.mean_average_precision(knn, gt, False, counts, *tail),
                ref.mean_average_precision(knn, gt, False, counts, *tail),
            ),
        ]
        for ours, theirs in pairs:
            np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-6)


def brute_force_at_k(knn_labels, query_labels, relevant, k):
    """Plain-loop reference for the new metrics (a test oracle, clarity over speed)."""
    precision, recall, average_precision = [], [], []
    for row, label, r in zip(knn_labels.tolist(), query_labels.tolist(), relevant):
        rel = [1.0 if x == label else 0.0 for x in row[:k]]
        hits, ap = 0.0, 0.0
        for i, is_rel in enumerate(rel, start=1):
            hits += is_rel
            ap += is_rel * hits / i
        precision.append(sum(rel) / k)
        recall.append(1.0 if any(rel) else 0.0)
        average_precision.append(ap / min(r, k))
    return mean(precision), mean(recall), mean(average_precision)


@pytest.mark.parametrize("k", [1, 4, 25])
def test_new_metrics_match_a_plain_loop_with_lone_queries(k):
    x, labels = clustered(160, 5, 8, seed=13, noise=2.0)
    query, query_labels = x[:60], labels[:60]
    keep = labels[60:] != 2  # class 2 has no reference items: its queries are lone
    reference, reference_labels = x[60:][keep], labels[60:][keep]
    result = calc(include=(f"precision_at_{k}", f"recall_at_{k}", f"mean_average_precision_at_{k}")).get_accuracy(
        query, query_labels, reference, reference_labels
    )
    _, indices = ac.ExactKNN()(query, k, reference)
    valid = query_labels != 2
    relevant = [int((reference_labels == y).sum()) for y in query_labels[valid].tolist()]
    expected = brute_force_at_k(reference_labels[indices][valid], query_labels[valid], relevant, k)
    got = (result[f"precision_at_{k}"], result[f"recall_at_{k}"], result[f"mean_average_precision_at_{k}"])
    assert got == pytest.approx(expected, abs=1e-12)


def test_map_at_k_beyond_retrieved_divides_by_min_r_k():
    # 2 neighbours retrieved, both relevant, R = 5: MAP@4 = (1 + 1) / min(5, 4).
    counts = (torch.tensor([1.0]), torch.tensor([5]))
    got = ac.mean_average_precision_at_k(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0]]), 4, False, counts)
    assert got == pytest.approx(2 / 4)


# ------------------------------------------------------------------- reference conformance
def test_module_functions_take_label_counts_as_lists():
    # The reference's own tests pass label_counts as Python lists.
    gt = EX_QUERY[:, None]
    counts = ([0, 1, 2, 3, 4], [2, 3, 5, 4, 5])
    assert ac.r_precision(EX_KNN, gt, False, counts) == pytest.approx(mean(EX_EXPECTED["r_precision"]))
    map_r = ac.mean_average_precision(EX_KNN, gt, False, counts, at_r=True)
    assert map_r == pytest.approx(mean(EX_EXPECTED["mean_average_precision_at_r"]))
    assert ac.mean_average_precision(EX_KNN, gt, False, tuple(np.array(c) for c in counts)) == pytest.approx(
        mean(EX_EXPECTED["mean_average_precision"])
    )
    lone, mask = ac.get_lone_query_labels(EX_QUERY, ([0, 1, 9], [0, 2, 1]), False, ac.EQUALITY)
    assert lone.tolist() == [0] and mask.tolist() == [True, True, True, True, True, False]
    with pytest.raises(ValueError, match="one count"):
        ac.r_precision(EX_KNN, gt, False, ([0, 1], [2]))


def test_k_below_the_largest_class_warns_through_logging(caplog):
    x, labels = clustered(200, 4, 3, seed=21)
    with caplog.at_level(logging.INFO, logger=c_f.LOGGER_NAME):
        calc(k=10, exclude=("NMI", "AMI")).get_accuracy(x, labels)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "k='max_bin_count'" in warnings[0].getMessage()
    # Like the reference's FaissKNN, the search logs k and the width at INFO, once.
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["running k-nn with k=11", "embedding dimensionality is 4"]


@pytest.mark.parametrize("k", [None, "max_bin_count", 150])
def test_search_logs_at_info_whatever_the_engine(caplog, k):
    x, labels = clustered(200, 4, 3, seed=22)
    with caplog.at_level(logging.INFO, logger=c_f.LOGGER_NAME):
        calc(k=k, include=("precision_at_1", "mean_average_precision")).get_accuracy(x, labels)
    assert sum("running k-nn with k=" in r.getMessage() for r in caplog.records) == 1


def overlapping(n, dim, classes, seed):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    return (torch.randn(classes, dim, generator=gen) * 0.6)[labels] + torch.randn(n, dim, generator=gen), labels


def test_default_k_means_is_faiss_when_installed_else_torch(monkeypatch):
    import sys

    from deepmetric.utils.inference import FaissKMeans

    if importlib_util_find("faiss"):
        kmeans = calc().kmeans_func
        assert isinstance(kmeans, FaissKMeans) and kmeans.kwargs == {"niter": 20, "gpu": False}
    monkeypatch.setitem(sys.modules, "faiss", None)  # "import faiss" now raises ImportError
    kmeans = calc().kmeans_func
    assert isinstance(kmeans, TorchKMeans) and kmeans.niter == 20 and kmeans.seed == 1234


def importlib_util_find(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


@requires_reference
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nmi_ami_equal_to_the_references_with_faiss(seed):
    pytest.importorskip("faiss")
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as Reference

    for n, dim, classes in ((1500, 16, 12), (4000, 32, 30)):
        x, labels = overlapping(n, dim, classes, seed)
        ours = calc(include=("NMI", "AMI")).get_accuracy(x, labels)
        theirs = Reference(include=("NMI", "AMI"), device=CPU).get_accuracy(x, labels)
        assert ours == theirs


@requires_reference
def test_nmi_without_faiss_within_half_a_percent_of_the_references_on_average(monkeypatch):
    import sys

    pytest.importorskip("faiss")
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as Reference

    reference = Reference(include=("NMI", "AMI"), device=CPU)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "faiss", None)
        ours = calc(include=("NMI", "AMI"))
    assert isinstance(ours.kmeans_func, TorchKMeans)
    gaps = {"NMI": [], "AMI": []}
    for seed in range(5):
        for n, dim, classes in ((1500, 16, 12), (3000, 8, 25)):
            x, labels = overlapping(n, dim, classes, seed)
            a, b = ours.get_accuracy(x, labels), reference.get_accuracy(x, labels)
            for name in gaps:
                gaps[name].append(abs(a[name] - b[name]))
    assert mean(gaps["NMI"]) <= 0.005 and mean(gaps["AMI"]) <= 0.005


# ------------------------------------------------------------------- per-query metrics, public
def test_per_query_accuracy_from_neighbours_and_from_ranks_is_the_worked_example():
    # The spec's example; the last query (label 0) has no positive among its neighbours.
    c = calc()
    names = ["precision_at_1", "r_precision", "mean_average_precision_at_r"]
    from_labels = c.per_query_accuracy(names, 5, EX_QUERY, EX_COUNTS, False, knn_labels=EX_KNN)
    # Ranks of each query's relevant neighbours among its five (the rest lie beyond them).
    inf = float("inf")
    ranks = torch.tensor(
        [[2, 3, inf], [1, 3, 4], [5, inf, inf], [1, 3, 5], [3, inf, inf], [inf, inf, inf]], dtype=torch.float64
    )
    from_ranks = c.per_query_accuracy(names, 5, EX_QUERY, EX_COUNTS, False, ranks=ranks)
    for name in names:
        np.testing.assert_allclose(from_labels[name].numpy(), EX_EXPECTED[name], rtol=1e-15, err_msg=name)
        assert torch.equal(from_labels[name], from_ranks[name]), name


def test_per_query_accuracy_refuses_metrics_without_a_formula_and_ambiguous_inputs():
    c = WithCustomMetrics(device=CPU, exclude=("NMI", "AMI"))
    assert c.computes_per_query("precision_at_1") and not c.computes_per_query("precision_at_2")
    with pytest.raises(ValueError, match="precision_at_2"):
        c.per_query_accuracy(["precision_at_2"], 5, EX_QUERY, EX_COUNTS, False, knn_labels=EX_KNN)
    with pytest.raises(ValueError, match="exactly one of knn_labels and ranks"):
        c.per_query_accuracy(["precision_at_1"], 5, EX_QUERY, EX_COUNTS, False)


def test_a_metric_marked_computed_per_query_is_computed_without_calling_its_method():
    from deepmetric.evaluation.retrieval_metrics import computed_per_query

    class Marked(AccuracyCalculator):
        @computed_per_query("recall", 3)
        def calculate_hit_at_three(self, **kwargs):
            raise AssertionError("a marked metric is computed from ranks, not called")

        def requires_knn(self):
            return super().requires_knn() + ["hit_at_three"]

    x, labels = clustered(90, 4, 5, seed=3, noise=2.0)
    marked = Marked(device=CPU, include=("hit_at_three",)).get_accuracy(x, labels)
    plain = calc(include=("recall_at_3",)).get_accuracy(x, labels)
    assert marked["hit_at_three"] == plain["recall_at_3"]
    assert 0 < plain["recall_at_3"] < 1


def test_an_unmarked_override_receives_the_references_arguments():
    seen = {}

    class Spy(AccuracyCalculator):
        def calculate_mean_average_precision_at_r(self, **kwargs):
            seen.update(kwargs)
            return super().calculate_mean_average_precision_at_r(**kwargs)

    x, labels = clustered(60, 3, 4, seed=5, noise=2.0)
    ours = Spy(device=CPU, include=("mean_average_precision_at_r",), k="max_bin_count").get_accuracy(x, labels)
    plain = calc(include=("mean_average_precision_at_r",), k="max_bin_count").get_accuracy(x, labels)
    expected = {"knn_labels", "knn_distances", "query_labels", "label_counts", "not_lone_query_mask",
                "lone_query_labels", "ref_includes_query", "query", "reference", "reference_labels",
                "label_comparison_fn"}
    assert expected <= set(seen)
    assert seen["knn_labels"].shape == (60, int(seen["label_counts"][1].max()) - 1)
    assert ours == pytest.approx(plain, rel=1e-12)
