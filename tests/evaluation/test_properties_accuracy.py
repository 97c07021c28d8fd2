"""Property-based checks of AccuracyCalculator (hypothesis): random set sizes, label layouts,
widths, k modes and reference sets.

Every metric is a number in [0, 1] (NaN only when every query's label is absent from the
reference, as documented), precision@1 equals a brute-force nearest neighbour, the blocked
computation equals the one-block computation, and bad input raises only ValueError/TypeError.
"""

import math
import os
import sys

import pytest
import torch

from deepmetric.utils.accuracy_calculator import AccuracyCalculator

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("long", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

KNN_METRICS = (
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    "mean_average_precision",
    "mean_reciprocal_rank",
)


@st.composite
def evaluation_sets(draw):
    nq = draw(st.integers(1, 15))
    nr = draw(st.integers(2, 15))
    d = draw(st.integers(1, 4))
    classes = draw(st.integers(1, 4))
    same_set = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    k = draw(st.sampled_from([None, "max_bin_count", 1]))
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(nq, d, generator=g)
    query_labels = torch.randint(0, classes, (nq,), generator=g)
    if same_set:
        return query, query_labels, None, None, k
    return (
        query,
        query_labels,
        torch.randn(nr, d, generator=g),
        torch.randint(0, classes, (nr,), generator=g),
        k,
    )


def run(calculator, query, query_labels, reference, reference_labels):
    try:
        return calculator.get_accuracy(query, query_labels, reference, reference_labels)
    except (ValueError, TypeError) as err:
        assert str(err)
        return None


@given(case=evaluation_sets())
def test_metrics_are_fractions_and_blocking_changes_nothing(case):
    query, query_labels, reference, reference_labels, k = case
    whole = run(
        AccuracyCalculator(include=KNN_METRICS, k=k), query, query_labels, reference, reference_labels
    )
    blocked = run(
        AccuracyCalculator(include=KNN_METRICS, k=k, knn_block_entries=3),
        query,
        query_labels,
        reference,
        reference_labels,
    )
    if whole is None:
        assert blocked is None
        return
    for name, value in whole.items():
        assert math.isnan(value) or 0.0 <= value <= 1.0 + 1e-12, f"{name}={value}"
        other = blocked[name]
        assert (math.isnan(value) and math.isnan(other)) or other == pytest.approx(value, abs=1e-12), name


@given(case=evaluation_sets())
def test_precision_at_1_is_the_brute_force_nearest_neighbour(case):
    query, query_labels, reference, reference_labels, _ = case
    own = reference is None
    result = run(
        AccuracyCalculator(include=("precision_at_1",)), query, query_labels, reference, reference_labels
    )
    if own:
        reference, reference_labels = query, query_labels
    if result is None:
        return
    dists = torch.cdist(query.double(), reference.double()) ** 2
    if own:
        dists.fill_diagonal_(float("inf"))
    counts = {int(c): int((reference_labels == c).sum()) - (1 if own else 0) for c in query_labels.unique()}
    keep = torch.tensor([counts[int(c)] > 0 for c in query_labels])
    if not keep.any():
        assert math.isnan(result["precision_at_1"])
        return
    nearest = dists.argmin(dim=1)  # first minimum = lowest index among ties
    hits = (reference_labels[nearest] == query_labels)[keep].double().mean().item()
    assert result["precision_at_1"] == pytest.approx(hits, abs=1e-12), (query.tolist(), query_labels.tolist())


def test_works_when_faiss_cannot_be_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # "import faiss" now raises ImportError
    emb = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    labels = torch.tensor([0, 0, 1, 1])
    result = AccuracyCalculator().get_accuracy(emb, labels)
    assert result["precision_at_1"] == 1.0 and result["NMI"] == pytest.approx(1.0)
