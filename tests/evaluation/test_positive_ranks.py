"""Sort-free positive ranks (evaluation/positive_ranks.py): the AccuracyCalculator's long-ranking
engine must give what the blockwise k-NN search gives, ties and own entries included."""

import math

import numpy as np
import pytest
import torch

import deepmetric.evaluation.knn as knn_module
import deepmetric.evaluation.positive_ranks as pr
from deepmetric.distances import CosineSimilarity, DotProductSimilarity, LpDistance, SNRDistance
from deepmetric.evaluation.accuracy_calculator import AccuracyCalculator
from deepmetric.evaluation.knn import ExactKNN, default_distance

CPU = torch.device("cpu")
NO_CLUSTERING = ("NMI", "AMI")


class Spy:
    """Counts calls of a function (to prove which engine ran), wherever it was imported."""

    def __init__(self, monkeypatch, name):
        self.calls = 0
        original = getattr(pr, name, None)

        def wrapped(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        if name == "_blockwise":
            original = AccuracyCalculator._blockwise

            def method(self, *args, **kwargs):
                self_spy.calls += 1
                return original(self, *args, **kwargs)

            self_spy = self
            monkeypatch.setattr(AccuracyCalculator, name, method)
            return
        for module in (pr, knn_module):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, wrapped)


@pytest.fixture(params=["searchsorted", "bins"])
def counting(request, monkeypatch):
    """Run a test with every candidate placed by searchsorted, then with counting by bins."""
    monkeypatch.setattr(pr, "_DENSE_FRACTION", 1.0 if request.param == "searchsorted" else 0.0)
    return request.param


class SearchOnly:
    """An ExactKNN's search without its ``positive_ranks``: the calculator then searches every
    query's neighbours, block by block, and computes the metrics from them."""

    def __init__(self, knn):
        self.knn = knn

    def __call__(self, query, k, reference, ref_includes_query=False):
        return self.knn.search(query, k, reference, ref_includes_query)


def both_engines(args, **options):
    """Results of the positive-rank engine and of the plain blockwise search."""
    options.setdefault("exclude", NO_CLUSTERING)
    options.setdefault("device", CPU)
    fast = AccuracyCalculator(**options)
    plain = dict(options, knn_func=SearchOnly(options.get("knn_func", ExactKNN())))
    slow = AccuracyCalculator(**plain)
    return fast.get_accuracy(*args), slow.get_accuracy(*args)


def assert_same(fast, slow):
    assert list(fast) == list(slow)
    for key in slow:
        np.testing.assert_allclose(np.array(fast[key]), np.array(slow[key]), rtol=1e-12, atol=1e-14, err_msg=key)


def uneven_data(n, d, seed, classes=9, noise=1.0):
    gen = torch.Generator().manual_seed(seed)
    # Class sizes from 1 to many: probabilities grow geometrically.
    weights = torch.tensor([1.6**i for i in range(classes)])
    labels = torch.multinomial(weights, n, replacement=True, generator=gen)
    centres = torch.randn(classes, d, generator=gen)
    return centres[labels] + noise * torch.randn(n, d, generator=gen), labels


# ------------------------------------------------------------------------------ hand-computed
def test_hand_computed_metrics_on_a_line(counting):
    # Query 0.0 (label 0); references at 1..5 with labels 0,1,0,1,0: positives at ranks 1, 3, 5.
    query, query_labels = torch.tensor([[0.0]]), torch.tensor([0])
    reference = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    reference_labels = torch.tensor([0, 1, 0, 1, 0])
    fast, slow = both_engines((query, query_labels, reference, reference_labels))
    expected = {
        "mean_average_precision": (1 + 2 / 3 + 3 / 5) / 3,
        "mean_average_precision_at_r": (1 + 2 / 3) / 3,
        "mean_reciprocal_rank": 1.0,
        "precision_at_1": 1.0,
        "r_precision": 2 / 3,
    }
    for key, value in expected.items():
        assert fast[key] == pytest.approx(value, abs=1e-15), key
    assert_same(fast, slow)


@pytest.mark.parametrize("negative_first", [True, False])
def test_negative_tied_with_positive_ranks_by_reference_index(negative_first, counting):
    # Both references are at distance 1: the lower reference index is ranked first.
    query, query_labels = torch.tensor([[0.0]]), torch.tensor([0])
    reference = torch.tensor([[1.0], [-1.0]])
    reference_labels = torch.tensor([1, 0]) if negative_first else torch.tensor([0, 1])
    fast, slow = both_engines((query, query_labels, reference, reference_labels))
    assert fast["mean_reciprocal_rank"] == (0.5 if negative_first else 1.0)
    assert fast["precision_at_1"] == (0.0 if negative_first else 1.0)
    assert_same(fast, slow)


def test_positive_ranks_directly_with_own_entries_and_ties(counting):
    # Points on a line, the set is its own reference; references 1 and 2 are duplicates.
    x = torch.tensor([[0.0], [1.0], [1.0], [3.0], [4.0]])
    ids = torch.tensor([0, 0, 1, 0, 1])
    blocks = list(pr.positive_ranks(x, x, ids, ids, torch.arange(5), default_distance(), 2))
    ranks = {}
    for rows, r, unresolved in blocks:
        assert not unresolved.any()
        for row, values in zip(rows.tolist(), r.tolist()):
            ranks[row] = [v for v in values if math.isfinite(v)]
    # Query 0: others in order 1, 2 (tie, index order), 3, 4 -> positives 1 and 3 at ranks 1, 3.
    # Query 1: 2 (distance 0), 0, 3, 4 -> positives 0 and 3 at ranks 2, 3.
    # Query 2: 1 (distance 0), 0, 3, 4 -> positive 4 at rank 4.
    # Query 3: 4, then 1 and 2 (tie), 0 -> positives 1 and 0 at ranks 2, 4.
    # Query 4: 3, 1 and 2 (tie), 0 -> positive 2 at rank 3.
    assert ranks == {0: [1, 3], 1: [2, 3], 2: [4], 3: [2, 4], 4: [3]}


# ---------------------------------------------------------------------- equal to the k-NN search
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", [{}, {"avg_of_avgs": True}, {"return_per_class": True}])
def test_own_reference_matches_search(monkeypatch, seed, mode, counting):
    spy = Spy(monkeypatch, "positive_ranks")
    x, labels = uneven_data(300, 6, seed)
    fast, slow = both_engines((x, labels), knn_block_entries=3000, **mode)
    assert spy.calls == 1
    assert_same(fast, slow)


@pytest.mark.parametrize("mode", [{}, {"avg_of_avgs": True}, {"return_per_class": True}])
def test_separate_sets_with_lone_queries_match_search(mode, counting):
    x, labels = uneven_data(400, 5, seed=3)
    query, query_labels = x[:150], labels[:150]
    keep = labels[100:] != 4  # label 4 has no reference: its queries are lone
    reference, reference_labels = x[100:][keep], labels[100:][keep]
    assert bool((query_labels == 4).any())
    fast, slow = both_engines((query, query_labels, reference, reference_labels), knn_block_entries=2000, **mode)
    assert_same(fast, slow)


def test_query_inside_longer_reference_matches_search(counting):
    x, labels = uneven_data(260, 4, seed=4)
    args = (x[:120], labels[:120], x, labels, True)
    assert_same(*both_engines(args, knn_block_entries=1000))


@pytest.mark.parametrize(
    "distance",
    [
        CosineSimilarity(),
        DotProductSimilarity(),
        LpDistance(),
        LpDistance(power=1, normalize_embeddings=False),
        LpDistance(p=1, normalize_embeddings=False),
        SNRDistance(),
    ],
    ids=["cosine", "dot", "l2_normalised", "l2_power1", "l1", "snr"],
)
def test_every_builtin_distance_matches_search(monkeypatch, distance, counting):
    spy = Spy(monkeypatch, "positive_ranks")
    x, labels = uneven_data(250, 6, seed=5)
    fast, slow = both_engines((x, labels), knn_func=ExactKNN(distance))
    assert spy.calls == 1
    assert_same(fast, slow)


def test_k_values_metrics_match_search(counting):
    x, labels = uneven_data(200, 4, seed=6)
    fast, slow = both_engines((x, labels), k_values=(1, 3, 25, 199))
    assert "mean_average_precision_at_25" in fast
    assert_same(fast, slow)


def test_multi_column_and_negative_zero_labels_match_search(counting):
    x, labels = uneven_data(200, 4, seed=7, classes=6)
    two_col = torch.stack([labels // 2, labels % 2], dim=1).float()
    two_col[two_col == 0] = -0.0  # equal to 0.0 for ==
    assert_same(*both_engines((x, two_col)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_many_exact_ties_match_search(monkeypatch, seed, counting):
    spy = Spy(monkeypatch, "_close_positives_before")
    gen = torch.Generator().manual_seed(seed)
    # Few distinct points: nearly every key is tied, across and within classes.
    x = torch.randint(0, 3, (240, 3), generator=gen).float()
    labels = torch.randint(0, 4, (240,), generator=gen)
    # Exact duplicates of queries, with their own and with other labels.
    x[200:220], labels[200:210] = x[:20], labels[:10]
    assert_same(*both_engines((x, labels), knn_block_entries=5000))
    assert_same(*both_engines((x[:100], labels[:100], x[50:], labels[50:])))
    assert_same(*both_engines((x, labels), knn_func=ExactKNN(CosineSimilarity())))
    assert spy.calls > 0


def test_overflowing_keys_fall_back_to_the_search(monkeypatch, counting):
    # Squares of 1e20 overflow float32: the keys hold inf - inf = NaN in some rows.
    x, labels = uneven_data(80, 3, seed=8)
    x[:5] *= 1e20
    fast, slow = both_engines((x, labels))
    assert_same(fast, slow)


def brute_force_ranks(x, ids):
    """Stable sort of exact squared distances, own entry removed: ranks of the positives."""
    out = {}
    for i in range(len(x)):
        d = ((x.double() - x[i].double()) ** 2).sum(dim=1)
        order = [j for j in torch.sort(d, stable=True).indices.tolist() if j != i]
        out[i] = [rank + 1 for rank, j in enumerate(order) if ids[j] == ids[i]]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ranks_equal_a_stable_sort_for_float32_and_float64_keys(dtype, counting):
    x, labels = uneven_data(150, 3, seed=9)
    x = (x * 2).round() / 2  # halves: every squared distance is exact, and many are tied
    expected = brute_force_ranks(x, labels)
    ranks = {}
    blocks = pr.positive_ranks(x.to(dtype), x.to(dtype), labels, labels, torch.arange(150), default_distance(), 32)
    for rows, r, unresolved in blocks:
        for row, values, lone in zip(rows.tolist(), r.tolist(), unresolved.tolist()):
            assert lone == (expected[row] == [])  # only queries without positives
            ranks[row] = [v for v in values if math.isfinite(v)] if not lone else []
    assert ranks == expected


# ---------------------------------------------------------------------------- when it applies
class SearchWithoutRanks(ExactKNN):
    """A subclass that changes the search opts out of the engine by giving no positive ranks."""

    positive_ranks = None


@pytest.mark.parametrize(
    "options",
    [
        {"k": 5},
        {"knn_func": SearchWithoutRanks()},
        {"knn_func": SearchOnly(ExactKNN())},
        {"label_comparison_fn": lambda a, b: a == b},
        {"include": ("precision_at_1",), "k": 1},
    ],
    ids=["small_k", "ranks_opted_out", "knn_without_ranks", "custom_comparison", "k1"],
)
def test_engine_not_used_where_it_does_not_apply(monkeypatch, options):
    spy = Spy(monkeypatch, "positive_ranks")
    x, labels = uneven_data(120, 4, seed=10)
    AccuracyCalculator(exclude=NO_CLUSTERING, device=CPU, **options).get_accuracy(x, labels)
    assert spy.calls == 0


def test_overridden_builtin_metric_keeps_its_own_implementation():

    class Custom(AccuracyCalculator):
        def calculate_r_precision(self, knn_labels, **kwargs):
            return float(knn_labels.shape[1])

    x, labels = uneven_data(100, 4, seed=11)
    result = Custom(exclude=NO_CLUSTERING, device=CPU).get_accuracy(x, labels)
    assert result["r_precision"] == 99.0
    plain = AccuracyCalculator(exclude=NO_CLUSTERING, device=CPU).get_accuracy(x, labels)
    assert result["mean_average_precision"] == pytest.approx(plain["mean_average_precision"], rel=1e-12)


def test_own_entry_with_a_different_label_goes_through_the_search(monkeypatch, counting):
    # allclose accepts 1000.0 vs 1000.0078125 as "the same labels", so the query's own entry is
    # not one of its positives: such rows are settled by the search.
    spy = Spy(monkeypatch, "_blockwise")
    x, labels = uneven_data(90, 3, seed=12)
    query_labels = (labels.float() + 1) * 1000
    reference_labels = query_labels.clone()
    reference_labels[:4] += 2.0**-7
    args = (x, query_labels, x, reference_labels, True)
    assert_same(*both_engines(args))
    assert spy.calls > 0


@pytest.mark.parametrize("k", ["max_bin_count", 60, 79])
def test_large_k_uses_the_engine_and_matches_search(monkeypatch, k):
    spy = Spy(monkeypatch, "positive_ranks")
    x, labels = uneven_data(80, 3, seed=13, classes=3)
    fast, slow = both_engines((x, labels), k=k)
    assert_same(fast, slow)
    assert spy.calls == 1


@pytest.mark.parametrize("n, classes", [(120, 2), (1200, 4)], ids=["long_runs", "crowded"])
def test_collapsed_embeddings_match_search(monkeypatch, counting, n, classes):
    # Two distinct points only: runs of equal positives longer than the walk, and (with more
    # rows) more tied negatives per row than the engine places; both are left to the search.
    spy = Spy(monkeypatch, "_blockwise")
    gen = torch.Generator().manual_seed(14)
    x = torch.randint(0, 2, (n, 1), generator=gen).float().expand(n, 3).contiguous()
    labels = torch.randint(0, classes, (n,), generator=gen)
    assert_same(*both_engines((x, labels)))
    assert spy.calls >= 2  # the engine's fallback, and the reference run with the engine off


# ------------------------------------------------------------------------------- near ties
def twins(n=150, dim=16, offset=3.0, seed=15):
    """Points with a twin 1e-5 away carrying another label: a positive and a negative whose
    distances to a query differ by less than a float32 matmul's rounding."""
    gen = torch.Generator().manual_seed(seed)
    x = offset + 0.3 * torch.randn(n, dim, generator=gen)
    labels = torch.randint(0, 5, (n,), generator=gen)
    twin = x + 1e-5 * torch.randn(n, dim, generator=gen)
    return torch.cat([x, twin]), torch.cat([labels, (labels + 1) % 5])


def ranks_by(keys, ids, i):
    order = [j for j in torch.sort(keys, stable=True).indices.tolist() if j != i]
    return [rank + 1 for rank, j in enumerate(order) if ids[j] == ids[i]]


def test_near_ties_rank_by_exact_distances(counting):
    x, labels = twins()
    n = len(x)
    exact = ((x.double()[:, None] - x.double()[None]) ** 2).sum(dim=2)
    fast = torch.addmm((x * x).sum(dim=1)[None], x, x.t(), alpha=-2)
    expected = {i: ranks_by(exact[i], labels, i) for i in range(n)}
    # The float32 expansion misranks some positives: the data is hard.
    assert sum(ranks_by(fast[i], labels, i) != expected[i] for i in range(n)) > 5
    blocks = pr.positive_ranks(x, x, labels, labels, torch.arange(n), default_distance(), 64)
    checked = 0
    for rows, r, unresolved in blocks:
        for row, values, lone in zip(rows.tolist(), r.tolist(), unresolved.tolist()):
            if not lone:
                assert [v for v in values if math.isfinite(v)] == expected[row], row
                checked += 1
    assert checked > 0.9 * n


def test_near_ties_same_metrics_as_the_search(monkeypatch, counting):
    spy = Spy(monkeypatch, "_close_positives_before")
    x, labels = twins(seed=16)
    assert_same(*both_engines((x, labels)))
    assert_same(*both_engines((x[:100], labels[:100], x[50:], labels[50:])))
    assert spy.calls > 0


# ------------------------------------------------------------------ the rule, stated publicly
def test_a_subclass_of_exact_knn_keeps_the_engine_and_its_results(monkeypatch):
    spy = Spy(monkeypatch, "positive_ranks")

    class Renamed(ExactKNN):
        pass

    x, labels = uneven_data(150, 4, seed=21)
    fast, slow = both_engines((x, labels), knn_func=Renamed())
    assert spy.calls == 1
    assert_same(fast, slow)


def test_a_distance_the_engine_cannot_rank_goes_through_the_search(monkeypatch):
    class Shifted(LpDistance):
        """A user distance: its order is its own, so ExactKNN gives no positive ranks for it."""

        def compute_mat(self, query_emb, ref_emb):
            return super().compute_mat(query_emb, ref_emb) + 1.0

    knn = ExactKNN(Shifted(normalize_embeddings=False))
    assert knn.positive_ranks(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(2).long(), torch.zeros(4).long(), None, 2) is None
    spy = Spy(monkeypatch, "_blockwise")
    x, labels = uneven_data(100, 3, seed=22)
    fast, slow = both_engines((x, labels), knn_func=knn)
    assert spy.calls == 2  # both calculators searched
    assert_same(fast, slow)
