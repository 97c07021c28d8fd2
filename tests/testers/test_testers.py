import importlib.util

import numpy as np
import pytest
import torch

from conftest import requires_reference
from deepmetric import testers

DIM = 6


class FakeCalculator:
    """precision@1 by brute force, recording every call (the real AccuracyCalculator is tested
    on its own)."""

    def __init__(self):
        self.calls = []

    def get_accuracy(self, query, query_labels, reference, reference_labels, ref_includes_query=False):
        self.calls.append(
            dict(query=query, query_labels=query_labels, reference=reference,
                 reference_labels=reference_labels, ref_includes_query=ref_includes_query)
        )
        d = torch.cdist(query.float(), reference.float())
        if ref_includes_query:
            # queries are the first rows of the reference: never retrieve yourself
            d[torch.arange(len(query)), torch.arange(len(query))] = float("inf")
        nearest = d.argmin(dim=1)
        return {"precision_at_1": float((reference_labels[nearest] == query_labels).float().mean())}

    def get_curr_metrics(self):
        return ["precision_at_1"]

    def description(self):
        return ""


def make_split(seed, n=12, levels=1, classes=3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat(n // classes)
    x = torch.nn.functional.one_hot(labels, DIM).float() * 3 + 0.3 * torch.randn(n, DIM, generator=g)
    if levels == 2:
        labels = torch.stack([labels, labels % 2], dim=1)
    return torch.utils.data.TensorDataset(x, labels)


def make_tester(cls=testers.GlobalEmbeddingSpaceTester, **kwargs):
    args = dict(accuracy_calculator=FakeCalculator(), dataloader_num_workers=0, batch_size=5,
                data_device=torch.device("cpu"), progress_bar=False)
    args.update(kwargs)
    return cls(**args)


TRUNK = torch.nn.Identity()


def test_default_splits_evaluate_each_split_against_itself():
    t = make_tester()
    ds = {"train": make_split(0), "val": make_split(1)}
    acc = t.test(ds, 3, TRUNK)
    assert set(acc) == {"train", "val"}
    assert acc["val"] == {"epoch": 3, "precision_at_1_level0": 1.0}
    assert t.reference_split_names == {"train": ["train"], "val": ["val"]}
    assert all(c["ref_includes_query"] for c in t.accuracy_calculator.calls)
    assert not hasattr(t, "embeddings_and_labels")


def test_query_against_another_split():
    t = make_tester()
    ds = {"a": make_split(0), "b": make_split(1, n=6)}
    t.test(ds, 1, TRUNK, splits_to_eval=[("a", ["b"])])
    (call,) = t.accuracy_calculator.calls
    assert call["ref_includes_query"] is False
    assert len(call["query"]) == 12 and len(call["reference"]) == 6


def test_query_split_among_references_is_moved_first_in_place():
    t = make_tester()
    ds = {"a": make_split(0), "b": make_split(1, n=6)}
    splits = [("a", ["b", "a"])]
    t.test(ds, 1, TRUNK, splits_to_eval=splits)
    assert splits == [("a", ["a", "b"])]
    (call,) = t.accuracy_calculator.calls
    assert call["ref_includes_query"] is True
    assert len(call["reference"]) == 18
    assert torch.equal(call["reference"][:12], call["query"])
    assert t.reference_split_names["a"] == ["a", "b"]


def test_a_query_split_may_appear_only_once():
    with pytest.raises(AssertionError, match="more than once"):
        make_tester().test({"a": make_split(0)}, 1, TRUNK, splits_to_eval=[("a", ["a"]), ("a", ["a"])])


def test_unknown_split_names_are_rejected():
    with pytest.raises(ValueError, match="'c'"):
        make_tester().test({"a": make_split(0)}, 1, TRUNK, splits_to_eval=[("a", ["c"])])


def test_all_label_levels_give_per_level_and_average_keys():
    t = make_tester(label_hierarchy_level="all")
    acc = t.test({"val": make_split(0, levels=2)}, 1, TRUNK)["val"]
    assert set(acc) == {"epoch", "precision_at_1_level0", "precision_at_1_level1", "AVERAGE_precision_at_1"}
    assert acc["AVERAGE_precision_at_1"] == pytest.approx(
        (acc["precision_at_1_level0"] + acc["precision_at_1_level1"]) / 2
    )


def test_a_single_level_in_a_list_collapses_to_that_level():
    t = make_tester(label_hierarchy_level=[1])
    acc = t.test({"val": make_split(0, levels=2)}, 1, TRUNK)["val"]
    assert set(acc) == {"epoch", "precision_at_1_level1"}


def test_label_level_out_of_range_is_rejected():
    with pytest.raises(AssertionError, match="label_hierarchy_level"):
        make_tester(label_hierarchy_level=1).test({"val": make_split(0)}, 1, TRUNK)


def test_get_all_embeddings_returns_2d_labels_normalized_embeddings_and_numpy():
    t = make_tester()
    emb, labels = t.get_all_embeddings(make_split(0), torch.nn.Linear(DIM, 4))
    assert emb.shape == (12, 4) and labels.shape == (12, 1)
    assert torch.allclose(emb.norm(dim=1), torch.ones(12))
    emb_np, labels_np = t.get_all_embeddings(make_split(0), TRUNK, return_as_numpy=True)
    assert isinstance(emb_np, np.ndarray) and isinstance(labels_np, np.ndarray)


def test_use_trunk_output_skips_the_embedder_and_models_are_put_in_eval_mode():
    trunk = torch.nn.Sequential(torch.nn.Linear(DIM, 5), torch.nn.Dropout(0.5))
    embedder = torch.nn.Linear(5, 2)
    t = make_tester(use_trunk_output=True, normalize_embeddings=False)
    emb, _ = t.get_all_embeddings(make_split(0), trunk, embedder)
    assert emb.shape == (12, 5)
    assert not trunk.training and not embedder.training
    with torch.no_grad():
        assert torch.allclose(emb, trunk(make_split(0).tensors[0]))


def test_dtype_casts_batches():
    t = make_tester(dtype=torch.float64, normalize_embeddings=False)
    emb, _ = t.get_all_embeddings(make_split(0), torch.nn.Linear(DIM, 3).double())
    assert emb.dtype == torch.float64


def test_set_min_label_to_zero_maps_labels():
    x, y = make_split(0).tensors
    raw = torch.tensor([10, 20, 30])[y]
    t = make_tester(dataset_labels=raw.numpy(), set_min_label_to_zero=True)
    _, labels = t.get_all_embeddings(torch.utils.data.TensorDataset(x, raw), TRUNK)
    assert set(labels.flatten().tolist()) == {0, 1, 2}


def test_end_of_testing_hook_sees_accuracies_and_embeddings():
    seen = {}

    def hook(t):
        seen["acc"] = dict(t.all_accuracies)
        seen["splits"] = set(t.embeddings_and_labels)

    t = make_tester(end_of_testing_hook=hook)
    t.test({"val": make_split(0)}, 2, TRUNK)
    assert seen["splits"] == {"val"} and seen["acc"]["val"]["epoch"] == 2


def test_visualizer_hook_gets_the_2d_points_per_split_and_level():
    class Visualizer:
        def fit_transform(self, x):
            return x[:, :2]

    calls = []
    t = make_tester(visualizer=Visualizer(), visualizer_hook=lambda *a: calls.append(a), label_hierarchy_level="all")
    t.test({"a": make_split(0, levels=2), "b": make_split(1, levels=2)}, 5, TRUNK)
    assert [(c[3], c[4], c[5]) for c in calls] == [
        ("a", "Visualizer_level0", 5), ("a", "Visualizer_level1", 5),
        ("b", "Visualizer_level0", 5), ("b", "Visualizer_level1", 5),
    ]
    assert calls[0][1].shape == (12, 2) and calls[0][2].shape == (12,)


def test_description_suffixes():
    class Described(FakeCalculator):
        def description(self):
            return "avg_of_avgs"

    assert make_tester().description_suffixes("accuracies") == "accuracies_normalized_GlobalEmbeddingSpaceTester_level_0"
    t = make_tester(pca=3, use_trunk_output=True, label_hierarchy_level=[0, 1], accuracy_calculator=Described())
    assert t.description_suffixes("x") == "x_pca3_normalized_trunk_GlobalEmbeddingSpaceTester_level_0_1_avg_of_avgs"


def test_with_same_parent_label_restricts_to_each_parent_and_averages():
    t = make_tester(cls=testers.WithSameParentLabelTester)
    ds = make_split(0, n=12, levels=2)
    acc = t.test({"val": ds}, 1, TRUNK)["val"]
    calls = t.accuracy_calculator.calls
    assert len(calls) == 2  # parents 0 and 1
    labels = ds.tensors[1]
    for call, parent in zip(calls, (0, 1)):
        assert len(call["query"]) == int((labels[:, 1] == parent).sum())
        assert set(call["query_labels"].tolist()) <= set(labels[labels[:, 1] == parent, 0].tolist())
    assert acc["precision_at_1_level0"] == pytest.approx(1.0)


def test_with_same_parent_label_needs_a_parent_column():
    t = make_tester(cls=testers.WithSameParentLabelTester, label_hierarchy_level=1)
    with pytest.raises(AssertionError, match="no valid label levels"):
        t.test({"val": make_split(0, levels=2)}, 1, TRUNK)


class TwoStream(torch.utils.data.Dataset):
    def __init__(self):
        self.x, self.y = make_split(0).tensors
        self.other = self.x + 0.05

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.other[i], self.y[i]


def test_two_stream_tester_queries_anchors_against_posnegs():
    t = make_tester(cls=testers.GlobalTwoStreamEmbeddingSpaceTester, normalize_embeddings=False)
    acc = t.test({"val": TwoStream()}, 1, TRUNK)["val"]
    (call,) = t.accuracy_calculator.calls
    assert call["ref_includes_query"] is False
    assert torch.allclose(call["query"], TwoStream().x) and torch.allclose(call["reference"], TwoStream().other)
    assert call["query_labels"].dtype == torch.float32
    assert acc["precision_at_1_level0"] == 1.0


def test_two_stream_tester_rejects_other_reference_splits():
    t = make_tester(cls=testers.GlobalTwoStreamEmbeddingSpaceTester)
    with pytest.raises(AssertionError, match="does not support"):
        t.test({"a": TwoStream(), "b": TwoStream()}, 1, TRUNK, splits_to_eval=[("a", ["b"])])


@pytest.mark.skipif(importlib.util.find_spec("deepmetric.utils.inference") is None, reason="inference not merged")
def test_pca_reduces_the_dimension():
    t = make_tester(pca=2)
    emb, _ = t.get_all_embeddings(make_split(0), TRUNK)
    assert emb.shape == (12, 2)


@pytest.mark.skipif(
    importlib.util.find_spec("deepmetric.utils.accuracy_calculator") is None, reason="calculator not merged"
)
def test_default_accuracy_calculator():
    from deepmetric.utils.accuracy_calculator import AccuracyCalculator

    assert isinstance(testers.GlobalEmbeddingSpaceTester().accuracy_calculator, AccuracyCalculator)


@requires_reference
@pytest.mark.parametrize(
    "cls_name, levels, splits, level",
    [
        ("GlobalEmbeddingSpaceTester", 1, None, 0),
        ("GlobalEmbeddingSpaceTester", 2, [("a", ["b", "a"]), ("b", ["a"])], "all"),
        ("WithSameParentLabelTester", 2, None, 0),
    ],
)
def test_same_accuracies_as_the_reference_tester(cls_name, levels, splits, level):
    import pytorch_metric_learning.testers as pml_testers

    ds = {"a": make_split(0, levels=levels), "b": make_split(1, n=9, levels=levels)}
    trunk = torch.nn.Linear(DIM, 4)
    results = []
    for module in (testers, pml_testers):
        kwargs = dict(accuracy_calculator=FakeCalculator(), dataloader_num_workers=0, batch_size=5,
                      data_device=torch.device("cpu"), label_hierarchy_level=level)
        if module is testers:
            kwargs["progress_bar"] = False
        t = getattr(module, cls_name)(**kwargs)
        split_copy = None if splits is None else [(q, list(r)) for q, r in splits]
        results.append({k: dict(v) for k, v in t.test(ds, 4, trunk, splits_to_eval=split_copy).items()})
    assert results[0].keys() == results[1].keys()
    for split in results[0]:
        assert results[0][split] == pytest.approx(results[1][split])


@requires_reference
@pytest.mark.parametrize("splits", [None, [("a", ["a", "b"]), ("b", ["a"])]])
def test_real_calculator_matches_the_reference_tester_and_calculator(splits):
    import pytorch_metric_learning.testers as pml_testers
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as PMLCalculator

    from deepmetric.utils.accuracy_calculator import AccuracyCalculator

    g = torch.Generator().manual_seed(0)
    labels_a = torch.randint(0, 4, (40,), generator=g)
    labels_b = torch.randint(0, 4, (30,), generator=g)
    ds = {
        "a": torch.utils.data.TensorDataset(torch.randn(40, DIM, generator=g) + labels_a[:, None], labels_a),
        "b": torch.utils.data.TensorDataset(torch.randn(30, DIM, generator=g) + labels_b[:, None], labels_b),
    }
    include = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
    ours = testers.GlobalEmbeddingSpaceTester(
        accuracy_calculator=AccuracyCalculator(include=include, k="max_bin_count"),
        dataloader_num_workers=0, data_device=torch.device("cpu"), progress_bar=False,
    ).test(ds, 1, TRUNK, splits_to_eval=None if splits is None else [(q, list(r)) for q, r in splits])
    theirs = pml_testers.GlobalEmbeddingSpaceTester(
        accuracy_calculator=PMLCalculator(include=include, k="max_bin_count"),
        dataloader_num_workers=0, data_device=torch.device("cpu"),
    ).test(ds, 1, TRUNK, splits_to_eval=None if splits is None else [(q, list(r)) for q, r in splits])
    assert ours.keys() == theirs.keys()
    for split in ours:
        assert set(ours[split]) == set(theirs[split])
        for k in ours[split]:
            assert ours[split][k] == pytest.approx(theirs[split][k], abs=1e-6), (split, k)
