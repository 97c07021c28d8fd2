"""k-reciprocal re-ranking from neighbour lists equals the dense formulation (torchreid's
re_ranking, written here from its published definition) within 1e-5; query expansion and
database-side augmentation equal their formulas; bad parameters are named."""

import numpy as np
import pytest
import torch

from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.evaluation.rerank import database_augmentation, k_reciprocal_rerank, query_expansion


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """torchreid's dense re-ranking (Zhong et al. 2017): N x N matrices, loops over items
    (a stable argsort, so equal distances keep index order)."""
    original_dist = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1), np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0
    )
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
    query_num = q_g_dist.shape[0]
    all_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    half = int(np.around(k1 / 2.0))
    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_reciprocal_index = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal_index
        for candidate in k_reciprocal_index:
            c_forward = initial_rank[candidate, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            c_reciprocal = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_reciprocal, k_reciprocal_index)) > 2.0 / 3 * len(c_reciprocal):
                expansion = np.append(expansion, c_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        non_zero = np.where(V[i, :] != 0)[0]
        for j in non_zero:
            temp_min[0, inv_index[j]] += np.minimum(V[i, j], V[inv_index[j], j])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


def _sets(seed, dtype=torch.float64, nq=25, ng=70, d=6, ids=8):
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(ids, d, generator=g)
    q = centres[torch.randint(0, ids, (nq,), generator=g)] + torch.randn(nq, d, generator=g)
    r = centres[torch.randint(0, ids, (ng,), generator=g)] + torch.randn(ng, d, generator=g)
    return q.to(dtype), r.to(dtype)


@pytest.mark.parametrize("params", [(20, 6, 0.3), (5, 1, 0.0), (7, 3, 0.5), (3, 2, 1.0)])
@pytest.mark.parametrize("name", ["squared_l2", "l2"])
def test_equal_to_the_dense_formulation(params, name, dtype):
    k1, k2, lam = params
    q, r = _sets(k1 + k2, dtype)
    distance = LpDistance(normalize_embeddings=False, power=2 if name == "squared_l2" else 1)
    dense = re_ranking(*(distance(a.double(), b.double()).numpy() for a, b in ((q, r), (q, q), (r, r))),
                       k1=k1, k2=k2, lambda_value=lam)
    values, indices = k_reciprocal_rerank(q, r, k=len(r), k1=k1, k2=k2, lambda_value=lam, distance=distance,
                                          memory_budget_bytes=48 * 70 * 6)
    assert values.dtype == dtype and values.shape == indices.shape == (len(q), len(r))
    # every value at its index equals the dense one, and the order is ascending
    assert np.abs(values.double().numpy() - np.take_along_axis(dense, indices.numpy(), 1)).max() < 1e-5
    assert bool((values[:, 1:] >= values[:, :-1]).all())
    assert np.abs(values.double().numpy() - np.sort(dense, axis=1)).max() < 1e-5


def test_default_is_squared_l2_and_k_keeps_the_best():
    q, r = _sets(1)
    all_values, all_indices = k_reciprocal_rerank(q, r, k=len(r))
    values, indices = k_reciprocal_rerank(q, r, k=10)
    assert torch.equal(indices, all_indices[:, :10]) and torch.equal(values, all_values[:, :10])
    dense = re_ranking(*((torch.cdist(a, b) ** 2).numpy() for a, b in ((q, r), (q, q), (r, r))))
    assert np.abs(values.numpy() - np.sort(dense, axis=1)[:, :10]).max() < 1e-5


def test_query_expansion_and_database_augmentation_formulas():
    q, r = _sets(2)
    cos = CosineSimilarity()
    sim = cos(q, r)
    top = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :3]
    rn = torch.nn.functional.normalize(r, dim=1)
    for alpha in (0.0, 3.0):
        w = torch.gather(sim, 1, top).clamp(min=0) ** alpha
        expected = torch.nn.functional.normalize(q + (w[..., None] * r[top]).sum(1), dim=1)
        assert torch.allclose(query_expansion(q, r, n=3, alpha=alpha), expected, atol=1e-12)
    own = torch.sort(cos(r, r), dim=1, descending=True, stable=True).indices[:, :2]
    expected = torch.nn.functional.normalize(r[own].sum(1), dim=1)
    assert torch.allclose(database_augmentation(r, n=2), expected, atol=1e-12)
    assert torch.equal(own[:, 0], torch.arange(len(r)))  # itself first
    assert rn.shape == expected.shape


def test_bad_parameters_are_named():
    q, r = _sets(3)
    with pytest.raises(ValueError, match="k1 must be a positive int, got 0"):
        k_reciprocal_rerank(q, r, k1=0)
    with pytest.raises(ValueError, match="lambda_value must be a number in \\[0, 1\\], got 2"):
        k_reciprocal_rerank(q, r, lambda_value=2)
    with pytest.raises(ValueError, match="distance must be a distance.*CosineSimilarity"):
        k_reciprocal_rerank(q, r, distance=CosineSimilarity())
    with pytest.raises(ValueError, match="same width"):
        k_reciprocal_rerank(q, r[:, :2])
    with pytest.raises(ValueError, match="n must be an int in \\[1, 70\\]"):
        query_expansion(q, r, n=71)
    with pytest.raises(ValueError, match="alpha must be a number >= 0"):
        database_augmentation(r, alpha=-1)


def test_accuracy_calculator_postprocess_uses_the_reranked_neighbours():
    from deepmetric.evaluation.rerank import KReciprocalRerank, QueryExpansion
    from deepmetric.utils.accuracy_calculator import AccuracyCalculator

    g = torch.Generator().manual_seed(5)
    ql, rl = torch.randint(0, 6, (30,), generator=g), torch.randint(0, 6, (80,), generator=g)
    centres = torch.randn(6, 5, generator=g, dtype=torch.float64)
    q = centres[ql] + 0.8 * torch.randn(30, 5, generator=g, dtype=torch.float64)
    r = centres[rl] + 0.8 * torch.randn(80, 5, generator=g, dtype=torch.float64)
    dense = re_ranking(*((torch.cdist(a, b) ** 2).numpy() for a, b in ((q, r), (q, q), (r, r))), k1=6, k2=3)
    calculator = AccuracyCalculator(include=("precision_at_1",), k=5, postprocess=KReciprocalRerank(k1=6, k2=3),
                                    device="cpu")
    got = calculator.get_accuracy(q, ql, r, rl)["precision_at_1"]
    assert got == pytest.approx(float((rl[np.argmin(dense, axis=1)] == ql).double().mean()), abs=1e-12)
    # every query is re-ranked together, however small the calculator's blocks
    small_blocks = AccuracyCalculator(include=("precision_at_1", "mean_average_precision"), k=5, device="cpu",
                                      postprocess=KReciprocalRerank(k1=6, k2=3), knn_block_entries=7)
    large_blocks = AccuracyCalculator(include=("precision_at_1", "mean_average_precision"), k=5, device="cpu",
                                      postprocess=KReciprocalRerank(k1=6, k2=3))
    assert small_blocks.get_accuracy(q, ql, r, rl) == large_blocks.get_accuracy(q, ql, r, rl)
    assert small_blocks.get_accuracy(q, ql, r, rl)["precision_at_1"] == got
    # query expansion: the nearest reference of each expanded query (cosine)
    qe = AccuracyCalculator(include=("precision_at_1",), k=1, device="cpu",
                            knn_func=_cosine_knn(), postprocess=QueryExpansion(n=2))
    expanded = query_expansion(q, r, n=2)
    nearest = torch.argmax(CosineSimilarity()(expanded, r), dim=1)
    assert qe.get_accuracy(q, ql, r, rl)["precision_at_1"] == pytest.approx(float((rl[nearest] == ql).double().mean()))
    with pytest.raises(TypeError, match="postprocess must be callable"):
        AccuracyCalculator(postprocess=3)


def _cosine_knn():
    from deepmetric.evaluation.knn import ExactKNN

    return ExactKNN(distance=CosineSimilarity())


def test_inference_model_searches_its_index_re_ranked(tmp_path):
    from deepmetric.evaluation.inference import InferenceModel
    from deepmetric.evaluation.knn import ExactKNN
    from deepmetric.evaluation.rerank import KReciprocalRerank

    q, r = _sets(9)
    model = InferenceModel(torch.nn.Identity(), knn_func=KReciprocalRerank(k1=6, k2=2)(ExactKNN()),
                           normalize_embeddings=False, data_device="cpu")
    model.train_knn(r)
    values, indices = model.get_nearest_neighbors(q, 4)
    expected = k_reciprocal_rerank(q, r, k=4, k1=6, k2=2)
    assert torch.equal(indices, expected[1]) and torch.equal(values, expected[0])
    model.save_knn_func(str(tmp_path / "index"))
    model.knn_func.reset()
    assert model.knn_func.index is None
    model.load_knn_func(str(tmp_path / "index"))
    assert torch.equal(model.get_nearest_neighbors(q, 4)[1], indices)
