"""utils.inference: MatchFinder, InferenceModel, FaissKNN/FaissKMeans, CustomKNN, helpers."""

import builtins
import importlib

import numpy as np
import pytest
import torch

from conftest import requires_reference
from deepmetric.distances import CosineSimilarity, LpDistance, SNRDistance
from deepmetric.evaluation.knn import ExactKNN
from deepmetric.utils import inference
from deepmetric.utils.inference import (
    CustomKNN,
    FaissKMeans,
    FaissKNN,
    InferenceModel,
    MatchFinder,
    return_results,
)

needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss not installed")


# ------------------------------------------------------------------------------- MatchFinder
def test_match_finder_similarity_threshold_is_inclusive_lower_bound():
    mf = MatchFinder(CosineSimilarity(), threshold=0.5)
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    expected = np.array([[True, True, False], [False, True, False]])
    assert np.array_equal(mf.get_matching_pairs(q, r), expected)
    assert mf.get_matching_pairs(q, r, return_tuples=True) == [(0, 0), (0, 1), (1, 1)]
    # A call-time threshold overrides the stored one.
    assert mf.get_matching_pairs(q, r, threshold=0.9).sum() == 1


def test_match_finder_distance_threshold_is_upper_bound_and_ref_defaults_to_query():
    mf = MatchFinder(LpDistance(normalize_embeddings=False), threshold=1.0)
    x = torch.tensor([[0.0], [1.0], [3.0]])
    expected = np.array([[True, True, False], [True, True, False], [False, False, True]])
    assert np.array_equal(mf.get_matching_pairs(x), expected)


def test_match_finder_is_match_returns_bool_for_one_pair_and_array_otherwise():
    mf = MatchFinder(LpDistance(normalize_embeddings=False), threshold=1.0)
    assert mf.is_match(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.5]])) is True
    out = mf.is_match(torch.tensor([[0.0], [0.0]]), torch.tensor([[0.5], [2.0]]))
    assert isinstance(out, np.ndarray) and out.tolist() == [True, False]


def test_match_finder_defaults_to_cosine_and_requires_a_threshold():
    mf = MatchFinder()
    assert isinstance(mf.distance, CosineSimilarity)
    with pytest.raises(ValueError, match="threshold"):
        mf.get_matching_pairs(torch.randn(2, 3))


# ------------------------------------------------------------------------------- InferenceModel
class Scale(torch.nn.Module):
    def forward(self, x):
        return x * 2


def make_model(**kwargs):
    return InferenceModel(Scale(), data_device=torch.device("cpu"), **kwargs)


def test_inference_model_defaults():
    model = make_model()
    assert isinstance(model.knn_func, ExactKNN)
    assert isinstance(model.match_finder.distance, CosineSimilarity) and model.match_finder.threshold == 0.9
    assert isinstance(model.embedder, torch.nn.Identity)


def test_get_embeddings_normalizes_and_stacks_lists():
    model = make_model()
    emb = model.get_embeddings([torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])])
    torch.testing.assert_close(emb, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    raw = make_model(normalize_embeddings=False).get_embeddings(torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(raw, torch.tensor([[6.0, 8.0]]))


def test_train_knn_then_nearest_neighbors():
    torch.manual_seed(0)
    data = torch.randn(50, 4)
    model = make_model()
    model.train_knn(data, batch_size=16)
    d, i = model.get_nearest_neighbors(data[:5], k=3)
    assert d.shape == (5, 3) and torch.equal(i[:, 0], torch.arange(5))
    model.add_to_knn([torch.ones(4)])
    _, i = model.get_nearest_neighbors(torch.ones(1, 4), k=1)
    assert i.item() == 50


def test_train_knn_from_dataset():
    torch.manual_seed(1)
    data = torch.randn(20, 3)
    dataset = torch.utils.data.TensorDataset(data, torch.zeros(20))
    model = make_model()
    model.train_knn(dataset, batch_size=8)
    assert model.knn_func.index.shape == (20, 3)
    with pytest.raises(TypeError, match="not supported"):
        model.train_knn("not data")


def test_nearest_neighbors_before_training_is_an_error():
    with pytest.raises(ValueError, match="train_knn"):
        make_model().get_nearest_neighbors(torch.randn(2, 3), k=1)


def test_save_and_load_knn_func(tmp_path):
    torch.manual_seed(2)
    data = torch.randn(30, 4)
    model = make_model()
    model.train_knn(data)
    path = str(tmp_path / "knn.pt")
    model.save_knn_func(path)
    other = make_model()
    other.load_knn_func(path)
    assert torch.equal(other.get_nearest_neighbors(data[:3], 2)[1], model.get_nearest_neighbors(data[:3], 2)[1])


def test_get_matches_and_is_match():
    model = make_model(match_finder=MatchFinder(CosineSimilarity(), threshold=0.99))
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert model.get_matches(x).tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    assert model.get_matches(x[:1], ref=x[2:], return_tuples=True) == []
    assert model.is_match(x[:1], x[1:2]) is True


# ------------------------------------------------------------------------------- CustomKNN
def test_custom_knn_matches_exact_knn_with_and_without_batches():
    torch.manual_seed(3)
    query = torch.randn(40, 6)
    reference = torch.cat([query, torch.randn(30, 6)])
    for batch_size in (None, 7):
        knn = CustomKNN(SNRDistance(), batch_size=batch_size)
        d, i = knn(query, 5, reference, ref_includes_query=True)
        mat = SNRDistance()(query, reference)
        mat[torch.arange(40), torch.arange(40)] = float("inf")
        ev, ei = mat.sort(dim=1, stable=True)
        assert torch.equal(i, ei[:, :5])
        torch.testing.assert_close(d, ev[:, :5])


# ------------------------------------------------------------------------------- return_results
def test_return_results_removes_own_index_or_last_column():
    indices = torch.tensor([[0, 2, 1], [0, 2, 3], [2, 0, 1]])
    distances = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 5.0], [0.0, 0.5, 0.75]])
    d, i = return_results(distances, indices, True)
    assert i.tolist() == [[2, 1], [0, 2], [0, 1]]
    assert d.tolist() == [[1.0, 2.0], [0.0, 0.0], [0.5, 0.75]]
    assert return_results(distances, indices, False)[1] is indices


# ------------------------------------------------------------------------------- faiss
@needs_faiss
def test_faiss_knn_returns_squared_l2_and_matches_exact_knn():
    torch.manual_seed(4)
    query, reference = torch.randn(30, 8), torch.randn(100, 8)
    d, i = FaissKNN()(query, 5, reference)
    ed, ei = ExactKNN()(query, 5, reference)
    assert torch.equal(i, ei)
    torch.testing.assert_close(d, ed, rtol=1e-4, atol=1e-4)


@needs_faiss
def test_faiss_knn_persistent_index_train_add_save_load(tmp_path):
    torch.manual_seed(5)
    data = torch.randn(40, 4)
    knn = FaissKNN(reset_before=False, reset_after=False)
    with pytest.raises(ValueError, match="empty"):
        knn(data, 2)
    knn.train(data[:30])
    knn.add(data[30:])
    _, i = knn(data[35:], 1)
    assert i[:, 0].tolist() == list(range(35, 40))
    path = str(tmp_path / "index.faiss")
    knn.save(path)
    other = FaissKNN(reset_before=False, reset_after=False)
    other.load(path)
    assert torch.equal(other(data[35:], 1)[1], i)


@needs_faiss
def test_faiss_knn_gpus_argument_checked():
    with pytest.raises(TypeError, match="gpus"):
        FaissKNN(gpus=0)
    with pytest.raises(ValueError, match="gpus"):
        FaissKNN(gpus=[])


@needs_faiss
def test_faiss_kmeans_separates_two_groups():
    x = torch.cat([torch.zeros(10, 3), torch.full((10, 3), 10.0)]) + 0.01 * torch.randn(20, 3)
    labels = FaissKMeans(niter=10, seed=1)(x, 2)
    assert labels.dtype == torch.long and labels.shape == (20,)
    assert len(set(labels[:10].tolist())) == 1 and len(set(labels[10:].tolist())) == 1
    assert labels[0] != labels[10]


@needs_faiss
def test_run_pca_projects_onto_leading_components():
    torch.manual_seed(6)
    x = torch.randn(200, 2) @ torch.tensor([[5.0, 0.0], [0.0, 0.1]])
    out = inference.run_pca(torch.cat([x, torch.zeros(200, 3)], dim=1), 1)
    assert out.shape == (200, 1)
    assert abs(torch.corrcoef(torch.stack([out[:, 0], x[:, 0]]))[0, 1]) > 0.999


def test_missing_faiss_raises_import_error_naming_the_extra(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"deepmetric\[faiss\]"):
        FaissKNN()
    with pytest.raises(ImportError, match=r"deepmetric\[faiss\]"):
        FaissKMeans()
    # PCA falls back to torch.
    out = inference.run_pca(torch.randn(20, 4), 2)
    assert out.shape == (20, 2)


# ------------------------------------------------------------------------------- reference oracle
@requires_reference
@needs_faiss
@pytest.mark.parametrize("ref_includes_query", [False, True])
def test_faiss_knn_same_as_reference(ref_includes_query):
    from pytorch_metric_learning.utils import inference as ref_inference

    torch.manual_seed(7)
    query = torch.randn(60, 10)
    reference = torch.cat([query, torch.randn(40, 10)])
    ours = FaissKNN()(query, 6, reference, ref_includes_query)
    theirs = ref_inference.FaissKNN()(query, 6, reference, ref_includes_query)
    assert torch.equal(ours[1], theirs[1])
    torch.testing.assert_close(ours[0], theirs[0])


@requires_reference
@pytest.mark.parametrize("batch_size", [None, 16])
def test_custom_knn_same_as_reference(batch_size):
    from pytorch_metric_learning import distances as ref_distances
    from pytorch_metric_learning.utils import inference as ref_inference

    torch.manual_seed(8)
    query = torch.randn(50, 8)
    reference = torch.cat([query, torch.randn(50, 8)])
    ours = CustomKNN(CosineSimilarity(), batch_size=batch_size)(query, 4, reference, True)
    theirs = ref_inference.CustomKNN(ref_distances.CosineSimilarity(), batch_size=batch_size)(
        query, 4, reference, True
    )
    assert torch.equal(ours[1], theirs[1])
    torch.testing.assert_close(ours[0], theirs[0])


@requires_reference
def test_return_results_same_as_reference():
    from pytorch_metric_learning.utils import inference as ref_inference

    torch.manual_seed(9)
    indices = torch.stack([torch.randperm(6)[:4] for _ in range(6)])
    distances = torch.rand(6, 4)
    ours = return_results(distances, indices, True)
    theirs = ref_inference.return_results(distances, indices, True)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


@requires_reference
def test_match_finder_and_inference_model_same_as_reference():
    from pytorch_metric_learning import distances as ref_distances
    from pytorch_metric_learning.utils import inference as ref_inference

    torch.manual_seed(10)
    x, y = torch.randn(12, 5), torch.randn(12, 5)
    ours = InferenceModel(Scale(), data_device=torch.device("cpu"))
    theirs = ref_inference.InferenceModel(
        Scale(),
        match_finder=ref_inference.MatchFinder(ref_distances.CosineSimilarity(), threshold=0.9),
        data_device=torch.device("cpu"),
    )
    for threshold in (None, 0.2, -0.3):
        assert np.array_equal(ours.get_matches(x, y, threshold), theirs.get_matches(x, y, threshold))
        assert np.array_equal(ours.is_match(x, y, threshold), theirs.is_match(x, y, threshold))


# ------------------------------------------------------------------------------- more helpers
def test_get_topk_fills_rows_of_each_block():
    torch.manual_seed(11)
    query, reference = torch.randn(10, 3), torch.randn(20, 3)
    distances = torch.zeros(10, 4)
    indices = torch.zeros(10, 4, dtype=torch.long)
    from deepmetric.distances import BatchedDistance

    batched = BatchedDistance(LpDistance(), iter_fn=inference.get_topk(distances, indices, 4, False), batch_size=3)
    batched(query, reference)
    ev, ei = torch.topk(LpDistance()(query, reference), 4, largest=False)
    assert torch.equal(indices, ei)
    torch.testing.assert_close(distances, ev)


def test_mask_reshape_knn_idx_drops_one_entry_per_row():
    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    mask = torch.tensor([[False, True, False], [True, False, False]])
    assert inference.mask_reshape_knn_idx(x, mask).tolist() == [[1, 3], [5, 6]]


@needs_faiss
def test_add_to_index_and_search_and_cpu_index_conversion():
    import faiss

    index = faiss.IndexFlatL2(2)
    reference = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    d, i = inference.add_to_index_and_search(index, torch.tensor([[3.0, 3.0]]), reference, 2)
    assert i.tolist() == [[1, 0]] and d.tolist() == [[1.0, 18.0]]
    assert inference.convert_to_cpu_index(index) is index
    d, i = inference.try_gpu(index, torch.tensor([[0.0, 0.1]]), None, 1, False, None)
    assert i.tolist() == [[0]]


@requires_reference
@needs_faiss
def test_inference_model_with_faiss_knn_same_as_reference():
    from pytorch_metric_learning.utils import inference as ref_inference

    torch.manual_seed(12)
    data, query = torch.randn(80, 6), torch.randn(7, 6)
    ours = make_model(knn_func=FaissKNN(reset_before=False, reset_after=False))
    theirs = ref_inference.InferenceModel(Scale(), data_device=torch.device("cpu"))
    for model in (ours, theirs):
        model.train_knn(data, batch_size=32)
        model.add_to_knn(query, batch_size=32)
    d, i = ours.get_nearest_neighbors(query, 5)
    rd, ri = theirs.get_nearest_neighbors(query, 5)
    assert torch.equal(i, ri)
    torch.testing.assert_close(d, rd)
    # The default ExactKNN agrees with the reference's faiss index.
    exact = make_model()
    exact.train_knn(data, batch_size=32)
    exact.add_to_knn(query, batch_size=32)
    ed, ei = exact.get_nearest_neighbors(query, 5)
    assert torch.equal(ei, ri)
    torch.testing.assert_close(ed, rd, rtol=1e-4, atol=1e-5)


@requires_reference
@needs_faiss
def test_faiss_kmeans_and_run_pca_same_as_reference():
    from pytorch_metric_learning.utils import inference as ref_inference

    torch.manual_seed(13)
    x = torch.randn(300, 8)
    ours = FaissKMeans(niter=5, seed=3)(x, 4)
    theirs = ref_inference.FaissKMeans(niter=5, seed=3)(x, 4)
    assert torch.equal(ours, theirs)
    torch.testing.assert_close(inference.run_pca(x, 3), ref_inference.run_pca(x, 3))


# --------------------------------------------------------------------------------- index files
def trained(model, data):
    model.train_knn(data, batch_size=16)
    return model


def test_exact_knn_files_are_faiss_flat_indexes_hand_checked(tmp_path):
    import struct

    knn = ExactKNN()
    knn.train(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    path = tmp_path / "index.faiss"
    knn.save(path)
    raw = path.read_bytes()
    # fourcc, d, ntotal, two dummies, is_trained, metric_type (1 = L2), count, floats
    head = b"IxF2" + struct.pack("<iqqqBiQ", 2, 3, 1 << 20, 1 << 20, 1, 1, 6)
    assert raw == head + struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    other = ExactKNN(CosineSimilarity())
    other.load(path)
    assert torch.equal(other.index, knn.index)
    assert type(other.distance) is LpDistance and other.distance.power == 2  # the file's metric


def test_other_distances_and_float64_are_saved_as_torch_files(tmp_path):
    for knn, data in (
        (ExactKNN(CosineSimilarity()), torch.randn(10, 3)),
        (ExactKNN(), torch.randn(10, 3, dtype=torch.float64)),
    ):
        knn.train(data)
        path = tmp_path / "index.pt"
        knn.save(path)
        assert path.read_bytes()[:4] == b"PK\x03\x04"
        loaded = ExactKNN(knn.distance)
        loaded.load(path)
        assert torch.equal(loaded.index, data) and loaded.distance is knn.distance


@needs_faiss
@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_exact_knn_reads_and_writes_what_faiss_writes_and_reads(tmp_path, metric):
    import faiss

    torch.manual_seed(20)
    data, query = torch.randn(60, 5), torch.randn(8, 5)
    index = faiss.IndexFlatL2(5) if metric == "l2" else faiss.IndexFlatIP(5)
    index.add(data.numpy())
    faiss.write_index(index, str(tmp_path / "faiss.idx"))
    knn = ExactKNN()
    knn.load(tmp_path / "faiss.idx")
    assert torch.equal(knn.index, data)
    _, expected = index.search(query.numpy(), 4)
    assert torch.equal(knn(query, 4)[1], torch.from_numpy(expected))
    knn.save(tmp_path / "ours.idx")
    assert (tmp_path / "ours.idx").read_bytes() == (tmp_path / "faiss.idx").read_bytes()
    back = faiss.read_index(str(tmp_path / "ours.idx"))
    assert type(back) is type(index) and back.ntotal == 60
    assert np.array_equal(back.reconstruct_n(0, 60), data.numpy())


@requires_reference
@needs_faiss
def test_index_saved_by_the_reference_loads_into_ours_and_back(tmp_path):
    from pytorch_metric_learning.utils import inference as ref_inference

    torch.manual_seed(21)
    data, query = torch.randn(70, 6), torch.randn(9, 6)
    theirs = trained(ref_inference.InferenceModel(Scale(), data_device=torch.device("cpu")), data)
    theirs.save_knn_func(str(tmp_path / "theirs.idx"))
    expected = theirs.get_nearest_neighbors(query, 5)
    for knn_func in (None, FaissKNN(reset_before=False, reset_after=False)):
        ours = make_model(knn_func=knn_func)
        ours.load_knn_func(str(tmp_path / "theirs.idx"))
        d, i = ours.get_nearest_neighbors(query, 5)
        assert torch.equal(i, expected[1])
        torch.testing.assert_close(d, expected[0], rtol=1e-5, atol=1e-5)
    # Saved by ours (default ExactKNN), loaded by the reference.
    ours = trained(make_model(), data)
    ours.save_knn_func(str(tmp_path / "ours.idx"))
    fresh = ref_inference.InferenceModel(Scale(), data_device=torch.device("cpu"))
    fresh.load_knn_func(str(tmp_path / "ours.idx"))
    assert torch.equal(fresh.get_nearest_neighbors(query, 5)[1], expected[1])


@needs_faiss
def test_faiss_knn_loads_an_exact_knn_torch_file(tmp_path):
    torch.manual_seed(22)
    data = torch.randn(30, 4, dtype=torch.float64)
    exact = ExactKNN()
    exact.train(data)
    exact.save(tmp_path / "ours.pt")  # float64: a torch file
    knn = FaissKNN(reset_before=False, reset_after=False)
    knn.load(tmp_path / "ours.pt")
    assert knn.index.ntotal == 30
    assert torch.equal(knn(data[:5].float(), 1)[1][:, 0], torch.arange(5))


def test_exact_knn_reads_flat_faiss_files_without_faiss(tmp_path, monkeypatch):
    knn = ExactKNN()
    knn.train(torch.randn(12, 3))
    knn.save(tmp_path / "index.faiss")
    monkeypatch.setattr(builtins, "__import__", _no_faiss_import())
    other = ExactKNN()
    other.load(tmp_path / "index.faiss")
    assert torch.equal(other.index, knn.index)


def _no_faiss_import():
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    return fake_import


def _bad_files(tmp_path):
    import struct

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"hello world, not an index" * 4)
    truncated = tmp_path / "truncated.faiss"
    truncated.write_bytes(b"IxF2" + struct.pack("<iqqqBiQ", 4, 10, 1 << 20, 1 << 20, 1, 1, 40) + b"\0" * 12)
    pickle = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, pickle)
    return {"garbage": garbage, "truncated": truncated, "torch_without_index": pickle}


@pytest.mark.parametrize("name", ["garbage", "truncated", "torch_without_index"])
def test_a_file_that_is_not_an_index_is_a_clear_error(tmp_path, name):
    from deepmetric.utils.errors import IndexFileError

    path = _bad_files(tmp_path)[name]
    model = make_model()
    with pytest.raises(IndexFileError, match="ExactKNN.load") as info:
        model.load_knn_func(str(path))
    # The reference reads index files with faiss, which raises RuntimeError.
    assert isinstance(info.value, RuntimeError) and repr(str(path)) in str(info.value)
    assert model.knn_func.index is None


@needs_faiss
@pytest.mark.parametrize("name", ["garbage", "truncated", "torch_without_index"])
def test_faiss_knn_load_of_a_bad_file_is_a_clear_runtime_error(tmp_path, name):
    from deepmetric.utils.errors import IndexFileError

    path = _bad_files(tmp_path)[name]
    with pytest.raises(IndexFileError, match="FaissKNN.load") as info:
        FaissKNN(reset_before=False, reset_after=False).load(str(path))
    assert isinstance(info.value, RuntimeError)


def test_a_missing_index_file_is_both_file_not_found_and_runtime_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no index file") as info:
        make_model().load_knn_func(str(tmp_path / "missing.idx"))
    assert isinstance(info.value, RuntimeError)


def test_saving_replaces_the_file_atomically(tmp_path, monkeypatch):
    path = tmp_path / "index.faiss"
    path.write_bytes(b"old")
    knn = ExactKNN()
    knn.train(torch.randn(5, 2))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    import deepmetric.evaluation._index_files as index_files

    monkeypatch.setattr(index_files.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        knn.save(path)
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]
