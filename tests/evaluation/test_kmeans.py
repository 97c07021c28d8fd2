"""TorchKMeans: faiss' k-means in torch, with faiss' random draws (same labels as faiss)."""

import logging

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import normalized_mutual_info_score

from conftest import requires_reference
from deepmetric.evaluation._faiss_random import FaissRandomGenerator, rand_perm_prefix
from deepmetric.evaluation.kmeans import TorchKMeans
from deepmetric.utils.errors import SearchInputError


def blobs(n=3000, centers=12, std=1.5, seed=0, dim=16):
    x, y = make_blobs(n, n_features=dim, centers=centers, cluster_std=std, random_state=seed)
    return torch.tensor(x, dtype=torch.float32), y


def overlapping(n, dim, classes, seed, spread=0.6):
    """Class centres closer together than the noise: clusterings differ between runs."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    centres = torch.randn(classes, dim, generator=gen) * spread
    return centres[labels] + torch.randn(n, dim, generator=gen), labels


# ------------------------------------------------------------------------------ faiss' draws
def test_generator_is_the_standard_mt19937():
    # std::mt19937 with its default seed 5489: the 1st and the 10000th outputs are fixed by the
    # C++ standard ([rand.predef]: 4123659995).
    words = FaissRandomGenerator(5489).raw(10000)
    assert words[0] == 3499211612 and words[-1] == 4123659995


def test_rand_float_is_a_word_over_two_to_the_32_in_single_precision():
    word = FaissRandomGenerator(7).raw(1)[0]
    assert FaissRandomGenerator(7).rand_float() == float(np.float32(word) / np.float32(2**32))


def test_rand_perm_prefix_hand_computed():
    # n=4: step i swaps entry i with entry i + word_i % (4 - i).
    words = FaissRandomGenerator(11).raw(3)
    perm = [0, 1, 2, 3]
    for i, w in enumerate(words):
        j = i + w % (4 - i)
        perm[i], perm[j] = perm[j], perm[i]
    assert rand_perm_prefix(4, 3, 11) == perm[:3]
    assert sorted(rand_perm_prefix(1000, 1000, 5)) == list(range(1000))


def test_rand_perm_prefix_matches_faiss():
    faiss = pytest.importorskip("faiss")
    for n, seed in ((50, 77), (1000, 1235), (7, 0)):
        perm = np.zeros(n, dtype=np.int32)
        faiss.rand_perm(faiss.swig_ptr(perm), n, seed)
        assert rand_perm_prefix(n, n, seed) == perm.tolist()


# ------------------------------------------------------------------------- same as faiss
CASES = {
    # (n, clusters, dims, std): subsampled (n > 256 k), direct distances (n d < 128000), ...
    "subsampled": (10000, 10, 32, 4.0),
    "small_direct": (500, 20, 8, 2.0),
    "many_clusters": (20000, 50, 64, 5.0),
    "few_points": (50, 5, 4, 1.0),
    "wide": (1200, 30, 128, 6.0),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_same_labels_and_centroids_as_faiss(case, seed):
    faiss = pytest.importorskip("faiss")
    n, k, dim, std = CASES[case]
    x, _ = blobs(n, k, std, seed, dim)
    ours = TorchKMeans(niter=20)
    labels = ours(x, k)
    theirs = faiss.Kmeans(dim, k, niter=20)
    theirs.train(x.numpy())
    _, expected = theirs.index.search(x.numpy(), 1)
    assert torch.equal(labels, torch.from_numpy(expected[:, 0]))
    np.testing.assert_allclose(ours.centroids.numpy(), theirs.centroids, rtol=1e-4, atol=1e-5)
    assert ours.inertia == pytest.approx(float(theirs.obj[-1]), rel=1e-5)


def test_empty_clusters_are_split_as_faiss_splits_them():
    faiss = pytest.importorskip("faiss")
    gen = torch.Generator().manual_seed(0)
    for noise in (0.0, 0.2):
        for _ in range(2):
            # Six groups for ten clusters: faiss splits empty clusters.
            base = torch.randn(6, 8, generator=gen)
            x = base[torch.randint(0, 6, (400,), generator=gen)] + noise * torch.randn(400, 8, generator=gen)
            theirs = faiss.Kmeans(8, 10, niter=20)
            theirs.train(x.numpy())
            _, expected = theirs.index.search(x.numpy(), 1)
            labels = TorchKMeans(niter=20)(x, 10)
            if noise == 0:
                assert sum(s["nsplit"] for s in theirs.iteration_stats) > 0
                # Exact duplicates are equally far from the two halves of a split cluster: which
                # name they get is decided by rounding, the partition is the same.
                assert normalized_mutual_info_score(expected[:, 0], labels.numpy()) == pytest.approx(1.0)
            else:
                assert torch.equal(labels, torch.from_numpy(expected[:, 0]))


@pytest.mark.parametrize("options", [{"nredo": 3}, {"seed": 99}, {"max_points_per_centroid": 40}])
def test_options_mean_what_they_mean_in_faiss(options):
    faiss = pytest.importorskip("faiss")
    x, _ = overlapping(3000, 16, 20, seed=4)
    theirs = faiss.Kmeans(16, 20, niter=20, **options)
    theirs.train(x.numpy())
    _, expected = theirs.index.search(x.numpy(), 1)
    assert torch.equal(TorchKMeans(niter=20, **options)(x, 20), torch.from_numpy(expected[:, 0]))


@requires_reference
def test_nmi_of_the_torch_path_is_the_references_on_average():
    # The accuracy calculator's fallback (faiss absent) against the reference's FaissKMeans, on
    # overlapping classes where different runs reach different clusterings.
    pytest.importorskip("faiss")
    from pytorch_metric_learning.utils.inference import FaissKMeans as Reference

    gaps = []
    for seed in range(6):
        for n, dim, classes in ((2000, 16, 10), (6000, 32, 20), (800, 8, 25)):
            x, labels = overlapping(n, dim, classes, seed)
            ours = normalized_mutual_info_score(labels, TorchKMeans(niter=20)(x, classes))
            theirs = normalized_mutual_info_score(labels, Reference(niter=20)(x, classes))
            gaps.append(abs(ours - theirs))
    assert sum(gaps) / len(gaps) <= 0.005


# --------------------------------------------------------------------------- hand-computed
def test_hand_computed_two_clusters():
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0], [0.5, 0.5]])
    km = TorchKMeans()
    labels = km(x, 2)
    assert labels[0] == labels[1] == labels[4]
    assert labels[2] == labels[3] != labels[0]
    centres = sorted(km.centroids.tolist())
    torch.testing.assert_close(torch.tensor(centres), torch.tensor([[1 / 6, 0.5], [10.0, 10.5]]))
    # The objective of the last iteration: squared distances to those centroids.
    expected = (1 / 36 + 1 / 4) + (1 / 36 + 1 / 4) + 0.25 + 0.25 + (1 / 9 + 0)
    assert km.inertia == pytest.approx(expected, rel=1e-6)


def test_as_many_clusters_as_points_makes_each_point_a_centroid():
    x = torch.tensor([[0.0], [1.0], [2.0]])
    km = TorchKMeans()
    assert km(x, 3).tolist() == [0, 1, 2]
    assert torch.equal(km.centroids, x)
    # Duplicates: a point goes to the lowest-id centroid among equal ones.
    assert TorchKMeans()(torch.zeros(4, 2), 4).tolist() == [0, 0, 0, 0]


def test_same_seed_same_labels_and_seed_matters():
    x, _ = overlapping(2000, 8, 12, seed=1)
    assert torch.equal(TorchKMeans(seed=7)(x, 12), TorchKMeans(seed=7)(x, 12))
    assert not torch.equal(TorchKMeans(seed=7)(x, 12), TorchKMeans(seed=8)(x, 12))


def test_well_separated_blobs_are_recovered():
    x, y = blobs(std=0.3, centers=6)
    assert normalized_mutual_info_score(y, TorchKMeans(nredo=4)(x, 6).numpy()) == pytest.approx(1.0)


def test_k_means_plus_plus_init_is_still_available():
    x, y = blobs(std=0.5, centers=5)
    labels = TorchKMeans(init="k-means++")(x, 5)
    assert normalized_mutual_info_score(y, labels.numpy()) == pytest.approx(1.0)


def test_output_is_long_tensor_with_one_label_per_row(any_dtype):
    x, _ = blobs(n=200, centers=3)
    labels = TorchKMeans()(x.to(any_dtype), 3)
    assert labels.dtype == torch.long and labels.shape == (200,)
    assert set(labels.tolist()) == {0, 1, 2}


def test_number_of_clusters_may_be_a_numpy_integer():
    x, _ = blobs(n=100, centers=3)
    assert torch.equal(TorchKMeans()(x, np.int64(3)), TorchKMeans()(x, 3))


def test_logs_like_the_references_faiss_k_means(caplog):
    x, _ = blobs(n=100, centers=3)
    with caplog.at_level(logging.INFO, logger="PML"):
        TorchKMeans()(x, 3)
    messages = [r.getMessage() for r in caplog.records]
    assert "running k-means clustering with k=3" in messages
    assert "embedding dimensionality is 16" in messages
    # faiss warns when there are fewer than 39 points per centroid.
    assert any("please provide at least 117 training points" in m for m in messages)


@pytest.mark.parametrize(
    "x, k, message",
    [
        (torch.randn(5, 2), 6, "exceeds"),
        (torch.randn(5, 2), 0, "positive int"),
        (torch.randn(5, 2), 2.0, "positive int"),
        (torch.randn(5), 2, "2-D"),
        (torch.randn(0, 2), 1, "2-D"),
        (torch.tensor([[float("inf"), 0.0]]), 1, "NaN"),
    ],
)
def test_bad_inputs_are_rejected(x, k, message):
    # faiss raises RuntimeError for too few points or no clusters: so does this (a subclass).
    with pytest.raises(SearchInputError, match=message) as info:
        TorchKMeans()(x, k)
    assert isinstance(info.value, (RuntimeError, ValueError))


def test_bad_constructor_arguments_are_rejected():
    with pytest.raises(ValueError, match="niter"):
        TorchKMeans(niter=0)
    with pytest.raises(ValueError, match="nredo"):
        TorchKMeans(nredo=1.5)
    with pytest.raises(ValueError, match="init"):
        TorchKMeans(init="kmeans")
    with pytest.raises(ValueError, match="max_points_per_centroid"):
        TorchKMeans(max_points_per_centroid=0)
    with pytest.raises(ValueError, match="tol"):
        TorchKMeans(tol=-1.0)
