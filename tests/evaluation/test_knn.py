"""ExactKNN: exact neighbours for every distance, bounded memory, deterministic ties."""

import numpy as np
import pytest
import torch

from conftest import requires_reference
from deepmetric.distances import (
    CosineSimilarity,
    DotProductSimilarity,
    LpDistance,
    SNRDistance,
)
from deepmetric.evaluation.knn import ExactKNN, exact_knn


def brute_force(distance, query, k, reference, ref_includes_query=False):
    """Full matrix, stable sort (lower index first on ties); with ref_includes_query the k+1
    best are taken and the own index (else the last entry) removed, the reference's rule."""
    mat = distance(query.double(), reference.double())
    values, indices = torch.sort(mat, dim=1, descending=distance.is_inverted, stable=True)
    if not ref_includes_query:
        return values[:, :k], indices[:, :k]
    values, indices = values[:, : k + 1], indices[:, : k + 1]
    rows_v, rows_i = [], []
    for row in range(len(query)):  # test oracle: a plain loop is clearest
        own = (indices[row] == row).nonzero()
        drop = int(own[0]) if len(own) else k
        keep = [j for j in range(k + 1) if j != drop]
        rows_v.append(values[row, keep])
        rows_i.append(indices[row, keep])
    return torch.stack(rows_v), torch.stack(rows_i)


DISTANCES = {
    "default": None,
    "lp": LpDistance(),
    "lp_raw": LpDistance(normalize_embeddings=False),
    "lp_p1": LpDistance(p=1, normalize_embeddings=False),
    "cosine": CosineSimilarity(),
    "dot_raw": DotProductSimilarity(normalize_embeddings=False),
    "snr": SNRDistance(),
}


@pytest.mark.parametrize("name", list(DISTANCES))
@pytest.mark.parametrize("ref_includes_query", [False, True])
def test_matches_brute_force_for_every_distance(name, ref_includes_query):
    torch.manual_seed(0)
    query = torch.randn(70, 12, dtype=torch.float64)
    reference = torch.cat([query, torch.randn(90, 12, dtype=torch.float64)])
    if not ref_includes_query:
        reference = reference[70:]
    distance = DISTANCES[name]
    knn = ExactKNN(distance, block_size=16)
    d, i = knn(query, 9, reference, ref_includes_query)
    expected_distance = distance if distance is not None else LpDistance(normalize_embeddings=False, power=2)
    ev, ei = brute_force(expected_distance, query, 9, reference, ref_includes_query)
    assert d.shape == (70, 9) and i.shape == (70, 9) and i.dtype == torch.long
    assert torch.equal(i, ei)
    torch.testing.assert_close(d, ev, rtol=1e-9, atol=1e-9)


def test_default_distance_is_squared_euclidean():
    query = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    reference = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    d, i = ExactKNN()(query, 2, reference)
    assert torch.equal(i, torch.tensor([[2, 1], [0, 1]]))
    torch.testing.assert_close(d, torch.tensor([[0.0, 1.0], [0.0, 20.0]]))


def test_similarity_sorted_descending():
    query = torch.tensor([[1.0, 0.0]])
    reference = torch.tensor([[0.0, 1.0], [1.0, 0.1], [-1.0, 0.0], [1.0, 1.0]])
    d, i = ExactKNN(CosineSimilarity())(query, 4, reference)
    assert torch.equal(i, torch.tensor([[1, 3, 0, 2]]))
    assert torch.all(d[:, :-1] >= d[:, 1:])


def test_ties_break_by_lower_reference_index_whatever_the_block_layout():
    x = torch.tensor([[0.0], [1.0], [1.0], [0.0], [1.0], [0.0], [0.0]])
    expected = torch.tensor([[0, 3, 5], [1, 2, 4], [1, 2, 4], [0, 3, 5], [1, 2, 4], [0, 3, 5], [0, 3, 5]])
    for budget in (None, 1, 200):
        for block in (None, 1, 3):
            _, i = exact_knn(x, 3, x, block_size=block, memory_budget_bytes=budget)
            assert torch.equal(i, expected), (budget, block)


def test_reference_chunking_gives_the_same_result_as_one_pass():
    torch.manual_seed(1)
    query, reference = torch.randn(50, 8), torch.randn(3000, 8)
    d1, i1 = exact_knn(query, 20, reference)
    d2, i2 = exact_knn(query, 20, reference, memory_budget_bytes=20_000)
    assert torch.equal(i1, i2)
    torch.testing.assert_close(d1, d2)


def test_ref_includes_query_removes_own_index_and_returns_k_columns():
    x = torch.tensor([[0.0], [10.0], [11.0], [30.0]])
    d, i = exact_knn(x, 2, x, ref_includes_query=True)
    assert torch.equal(i, torch.tensor([[1, 2], [2, 0], [1, 0], [2, 1]]))
    torch.testing.assert_close(d, torch.tensor([[100.0, 121.0], [1.0, 100.0], [1.0, 121.0], [361.0, 400.0]]))


def test_ref_includes_query_with_duplicates_drops_last_when_own_index_missing():
    # Four identical points: k+1=2 best by index are [0, 1]; query 3 lacks itself -> drop last.
    x = torch.zeros(4, 2)
    _, i = exact_knn(x, 1, x, ref_includes_query=True)
    assert torch.equal(i, torch.tensor([[1], [0], [0], [0]]))


def test_reference_none_searches_query_set():
    torch.manual_seed(2)
    x = torch.randn(30, 4)
    assert torch.equal(exact_knn(x, 5)[1], exact_knn(x, 5, x)[1])
    assert torch.equal(ExactKNN()(x, 5)[1], exact_knn(x, 5, x)[1])


def test_trained_index_is_searched_when_reference_is_none(tmp_path):
    torch.manual_seed(3)
    data, extra, query = torch.randn(40, 6), torch.randn(10, 6), torch.randn(5, 6)
    knn = ExactKNN()
    knn.train(data)
    knn.add(extra)
    _, i = knn(query, 4)
    assert torch.equal(i, exact_knn(query, 4, torch.cat([data, extra]))[1])
    path = str(tmp_path / "index.pt")
    knn.save(path)
    loaded = ExactKNN()
    loaded.load(path)
    assert torch.equal(loaded(query, 4)[1], i)
    knn.reset()
    assert knn.index is None


def test_half_precision_input_is_computed_in_float32():
    torch.manual_seed(4)
    q, r = torch.randn(20, 8), torch.randn(60, 8)
    d16, i16 = exact_knn(q.half(), 5, r.half())
    d32, i32 = exact_knn(q.half().float(), 5, r.half().float())
    assert d16.dtype == torch.float32
    assert torch.equal(i16, i32)
    torch.testing.assert_close(d16, d32)


def test_float64_stays_float64(dtype):
    d, _ = exact_knn(torch.randn(5, 3, dtype=dtype), 2, torch.randn(7, 3, dtype=dtype))
    assert d.dtype == dtype


def test_numpy_input_accepted():
    x = np.random.RandomState(0).randn(10, 3).astype(np.float32)
    d, i = exact_knn(x, 2, x)
    assert isinstance(d, torch.Tensor) and torch.equal(i[:, 0], torch.arange(10))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k=0), "at least 1"),
        (dict(k=1.5), "positive int"),
        (dict(k=True), "positive int"),
        (dict(k=11), "exceeds"),
        (dict(k=10, ref_includes_query=True), "own entry"),
        (dict(reference=torch.randn(10, 4)), "same width"),
        (dict(reference=torch.randn(0, 3)), "empty"),
        (dict(query=torch.randn(0, 3)), "empty"),
        (dict(query=torch.randn(3)), "2-D"),
        (dict(query=torch.tensor([[float("nan"), 0.0, 0.0]])), "NaN"),
        (dict(query=torch.randn(12, 3), ref_includes_query=True), "first rows"),
    ],
)
def test_bad_inputs_are_rejected(kwargs, message):
    args = dict(query=torch.randn(5, 3), k=2, reference=torch.randn(10, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        exact_knn(args.pop("query"), args.pop("k"), **args)


def test_bad_constructor_arguments_are_rejected():
    with pytest.raises(ValueError, match="block_size"):
        ExactKNN(block_size=0)
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        ExactKNN(memory_budget_bytes=-1)
    with pytest.raises(TypeError, match="distance"):
        ExactKNN(distance="cosine")


def test_block_size_bounds_the_score_matrix(monkeypatch):
    import deepmetric.evaluation.knn as knn_module
    from deepmetric.evaluation._knn_scores import Scorer

    shapes = []
    original = Scorer.ascending_keys

    def spy(self, q, c0, c1, precise=False):
        keys = original(self, q, c0, c1, precise)
        shapes.append((tuple(keys.shape), keys.element_size()))
        return keys

    monkeypatch.setattr(Scorer, "ascending_keys", spy)
    exact_knn(torch.randn(100, 4), 3, torch.randn(500, 4), block_size=16)
    assert max(rows for (rows, _), _ in shapes) == 16 and len(shapes) == 7
    shapes.clear()
    budget = 1_000_000
    exact_knn(torch.randn(100, 4), 3, torch.randn(5000, 4), memory_budget_bytes=budget)
    # float32 keys: _BYTES_PER_ENTRY bytes of scratch each (the key and topk's workspace)
    assert all(size == 4 for _, size in shapes)
    assert max(rows * cols for (rows, cols), _ in shapes) <= budget // knn_module._BYTES_PER_ENTRY
    assert max(cols for (_, cols), _ in shapes) < 5000  # the reference set was chunked


@requires_reference
@pytest.mark.parametrize("ref_includes_query", [False, True])
def test_same_as_reference_faiss_knn(ref_includes_query):
    pytest.importorskip("faiss")
    from pytorch_metric_learning.utils.inference import FaissKNN

    torch.manual_seed(5)
    query = torch.randn(200, 16)
    reference = torch.cat([query, torch.randn(300, 16)]) if ref_includes_query else torch.randn(300, 16)
    d, i = ExactKNN()(query, 10, reference, ref_includes_query)
    rd, ri = FaissKNN()(query, 10, reference, ref_includes_query)
    assert torch.equal(i, ri)
    torch.testing.assert_close(d, rd, rtol=1e-4, atol=1e-4)


@requires_reference
@pytest.mark.parametrize("name", ["lp", "cosine", "snr"])
def test_same_as_reference_custom_knn(name):
    from pytorch_metric_learning import distances as ref_distances
    from pytorch_metric_learning.utils.inference import CustomKNN

    ref_distance = {
        "lp": ref_distances.LpDistance(),
        "cosine": ref_distances.CosineSimilarity(),
        "snr": ref_distances.SNRDistance(),
    }[name]
    torch.manual_seed(6)
    query = torch.randn(100, 8)
    reference = torch.cat([query, torch.randn(150, 8)])
    d, i = ExactKNN(DISTANCES[name])(query, 7, reference, True)
    rd, ri = CustomKNN(ref_distance, batch_size=32)(query, 7, reference, True)
    assert torch.equal(i, ri)
    torch.testing.assert_close(d, rd, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["default", "lp_p1", "cosine", "dot_raw"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_many_ties_match_stable_brute_force_for_any_block_layout(name, seed):
    # Small integer coordinates make many exactly equal distances.
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, (40, 3), generator=g).double()
    distance = DISTANCES[name]
    expected_distance = distance if distance is not None else LpDistance(normalize_embeddings=False, power=2)
    for ref_includes_query in (False, True):
        ev, ei = brute_force(expected_distance, x, 6, x, ref_includes_query)
        for block, budget in ((None, None), (3, None), (None, 3000)):
            d, i = exact_knn(x, 6, x, ref_includes_query, distance, block, budget)
            torch.testing.assert_close(d, ev)
            if name != "cosine":  # integer arithmetic: the ties are exact, so is the order
                assert torch.equal(i, ei), (block, budget)


def test_k_may_be_a_numpy_or_tensor_integer():
    x = torch.randn(8, 2)
    expected = exact_knn(x, 3, x)[1]
    assert torch.equal(exact_knn(x, np.int64(3), x)[1], expected)
    assert torch.equal(exact_knn(x, torch.tensor(3), x)[1], expected)


def test_bfloat16_input():
    torch.manual_seed(7)
    q, r = torch.randn(10, 4).bfloat16(), torch.randn(30, 4).bfloat16()
    d, i = exact_knn(q, 3, r)
    assert d.dtype == torch.float32
    assert torch.equal(i, exact_knn(q.float(), 3, r.float())[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(8)
    q, r = torch.randn(300, 32), torch.randn(2000, 32)
    d, i = exact_knn(q.cuda(), 10, r.cuda(), block_size=64)
    assert d.device.type == "cuda"
    dc, ic = exact_knn(q, 10, r)
    assert torch.equal(i.cpu(), ic)
    torch.testing.assert_close(d.cpu(), dc, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------- exact order on near ties
def near_tie_data(nq=40, nr=400, dim=16, offset=30.0, seed=0):
    """Points in a tiny ball far from the origin: |q|^2 + |r|^2 - 2 q.r in float32 loses the
    distances (~1e-3) in the rounding of terms ~1e4, so a float32 matmul misorders them."""
    g = torch.Generator().manual_seed(seed)
    base = torch.full((dim,), offset)
    return base + 0.01 * torch.randn(nq, dim, generator=g), base + 0.01 * torch.randn(nr, dim, generator=g)


def exact_order(query, reference):
    exact = ((query.double()[:, None] - reference.double()[None]) ** 2).sum(dim=2)
    return torch.sort(exact, dim=1, stable=True)


def test_near_ties_follow_the_exact_order_where_a_float32_matmul_does_not():
    query, reference = near_tie_data()
    expected_values, expected = exact_order(query, reference)
    # The data is hard: ranking by the float32 expansion gets most rows wrong.
    keys = torch.addmm((reference * reference).sum(dim=1)[None], query, reference.t(), alpha=-2)
    assert (torch.sort(keys, dim=1, stable=True).indices[:, :10] != expected[:, :10]).any(dim=1).sum() > 20
    values, indices = exact_knn(query, 10, reference)
    assert torch.equal(indices, expected[:, :10])
    torch.testing.assert_close(values, expected_values[:, :10].float(), rtol=1e-6, atol=0)
    # Blocks and reference chunks change nothing.
    _, chunked = exact_knn(query, 10, reference, block_size=7, memory_budget_bytes=20_000)
    assert torch.equal(chunked, indices)


def test_near_ties_with_self_exclusion_and_whole_rows():
    query, reference = near_tie_data(nq=60, nr=60, seed=1)
    reference = torch.cat([query, reference])
    _, expected = exact_order(query, reference)
    _, indices = exact_knn(query, 119, reference, ref_includes_query=True)
    assert torch.equal(indices, expected[:, 1:])  # own entry (distance 0) first, then the rest


def test_near_ties_same_as_faiss_flat_direct_distances():
    # faiss computes small searches (queries x dims < 128000) by direct differences, which order
    # this data correctly; its matmul path (larger searches) does not.
    faiss = pytest.importorskip("faiss")
    query, reference = near_tie_data(seed=2)
    index = faiss.IndexFlatL2(16)
    index.add(reference.numpy())
    _, expected = index.search(query.numpy(), 10)
    assert torch.equal(exact_knn(query, 10, reference)[1], torch.from_numpy(expected))


def test_cosine_near_ties_follow_the_exact_products():
    g = torch.Generator().manual_seed(3)
    query = torch.randn(30, 8, generator=g)
    # Directions within 1e-4 of the queries': cosines 1 - O(1e-8), below float32 resolution.
    reference = query.repeat(10, 1) + 1e-4 * torch.randn(300, 8, generator=g)
    cosine = CosineSimilarity()
    q, r = cosine.maybe_normalize(query).double(), cosine.maybe_normalize(reference).double()
    expected = torch.sort(q @ r.t(), dim=1, descending=True, stable=True).indices[:, :5]
    assert torch.equal(ExactKNN(cosine)(query, 5, reference)[1], expected)


def test_exact_values_are_computed_for_the_candidates_only(monkeypatch):
    from deepmetric.evaluation._knn_scores import Scorer

    pairs = []
    original = Scorer.exact_values

    def spy(self, q, rows, columns):
        pairs.append(len(columns))
        return original(self, q, rows, columns)

    monkeypatch.setattr(Scorer, "exact_values", spy)
    for query, reference in (near_tie_data(nq=100, nr=3000), (torch.randn(100, 16), torch.randn(3000, 16))):
        pairs.clear()
        exact_knn(query, 10, reference)
        # At most the k + 8 candidates of each row, and far fewer on ordinary data.
        assert sum(pairs) <= 100 * (10 + knn_module_margin())
    assert sum(pairs) < 100


def knn_module_margin():
    import deepmetric.evaluation.knn as knn_module

    return knn_module._MARGIN


def test_more_tied_duplicates_than_candidates_keep_the_lowest_indices():
    g = torch.Generator().manual_seed(4)
    point = torch.randn(1, 6, generator=g)
    others = torch.randn(100, 6, generator=g) + 5
    # 40 copies of the query scattered among other points: more ties than k + margin.
    reference = torch.cat([others[:50], point.repeat(20, 1), others[50:], point.repeat(20, 1)])
    _, indices = exact_knn(point.repeat(3, 1), 12, reference)
    expected = list(range(50, 70)) + list(range(120, 140))
    assert indices.tolist() == [expected[:12]] * 3


def test_tied_duplicates_like_faiss():
    faiss = pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(5)
    base = torch.randn(30, 8, generator=g)
    reference = base[torch.randint(0, 30, (400,), generator=g)]
    query = base[torch.randint(0, 30, (50,), generator=g)]
    index = faiss.IndexFlatL2(8)
    index.add(reference.numpy())
    for k in (1, 5, 20):
        _, expected = index.search(query.numpy(), k)
        assert torch.equal(exact_knn(query, k, reference)[1], torch.from_numpy(expected)), k


@requires_reference
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_as_reference_faiss_knn_on_random_data(seed):
    pytest.importorskip("faiss")
    from pytorch_metric_learning.utils.inference import FaissKNN

    g = torch.Generator().manual_seed(seed)
    query = torch.randn(150, 24, generator=g)
    reference = torch.cat([query, torch.randn(600, 24, generator=g), query[:20]])  # with duplicates
    for ref_includes_query in (False, True):
        d, i = ExactKNN()(query, 15, reference, ref_includes_query)
        rd, ri = FaissKNN()(query, 15, reference, ref_includes_query)
        assert torch.equal(i, ri)
        torch.testing.assert_close(d, rd, rtol=1e-4, atol=1e-4)  # faiss rounds |q|^2 + |r|^2 - 2 q.r


def test_call_logs_like_the_references_faiss_knn(caplog):
    import logging

    knn = ExactKNN()
    x = torch.randn(20, 5)
    with caplog.at_level(logging.INFO, logger="PML"):
        knn(x, 3, x, True)
    assert [r.getMessage() for r in caplog.records] == ["running k-nn with k=4", "embedding dimensionality is 5"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="PML"):
        knn.search(x, 3, x, True)
    assert caplog.records == []


def test_bad_inputs_subclass_what_the_reference_raises():
    # The reference's CustomKNN fails in torch (RuntimeError), its FaissKNN in faiss' assertions.
    from deepmetric.utils.errors import SearchInputError

    for kwargs in ({"k": 9}, {"k": 0}, {"reference": torch.randn(4, 3)}, {"query": torch.randn(5)}):
        args = {"query": torch.randn(5, 2), "k": 2, "reference": torch.randn(8, 2), **kwargs}
        with pytest.raises(SearchInputError) as info:
            exact_knn(**args)
        assert isinstance(info.value, RuntimeError) and isinstance(info.value, AssertionError)
