"""TorchKMeans: seeded, deterministic, as good as scikit-learn on separable blobs."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import normalized_mutual_info_score

from deepmetric.utils.kmeans import TorchKMeans


def blobs(n=3000, centers=12, std=1.5, seed=0):
    x, y = make_blobs(n, n_features=16, centers=centers, cluster_std=std, random_state=seed)
    return torch.tensor(x, dtype=torch.float32), y


def inertia(x, labels):
    total = 0.0
    for c in labels.unique():
        pts = x[labels == c].double()
        total += ((pts - pts.mean(0)) ** 2).sum().item()
    return total


def test_recovers_well_separated_blobs_exactly():
    x, y = blobs(std=0.5)
    labels = TorchKMeans()(x, 12)
    assert normalized_mutual_info_score(y, labels.numpy()) == pytest.approx(1.0)


def test_quality_comparable_to_sklearn_over_seeds_and_datasets():
    # Single runs land in different local optima; compare averages over several of them.
    ours, theirs, our_inertia, their_inertia = [], [], [], []
    for data_seed in range(4):
        x, y = blobs(std=3.0, seed=data_seed)
        for seed in range(4):
            labels = TorchKMeans(seed=seed)(x, 12)
            sk = KMeans(12, n_init=1, random_state=seed).fit(x.numpy())
            ours.append(normalized_mutual_info_score(y, labels.numpy()))
            theirs.append(normalized_mutual_info_score(y, sk.labels_))
            our_inertia.append(inertia(x, labels))
            their_inertia.append(sk.inertia_)
    assert sum(ours) / len(ours) >= sum(theirs) / len(theirs) - 0.01
    assert sum(our_inertia) <= sum(their_inertia) * 1.01


def test_random_init_also_recovers_separated_blobs():
    x, y = blobs(std=0.5, centers=5)
    labels = TorchKMeans(init="random", nredo=3)(x, 5)
    assert normalized_mutual_info_score(y, labels.numpy()) == pytest.approx(1.0)


def test_same_seed_gives_same_labels():
    x, _ = blobs(std=4.0)
    a = TorchKMeans(seed=7)(x, 12)
    b = TorchKMeans(seed=7)(x, 12)
    assert torch.equal(a, b)


def test_output_is_long_tensor_with_one_label_per_row(any_dtype):
    x, _ = blobs(n=200, centers=3)
    labels = TorchKMeans()(x.to(any_dtype), 3)
    assert labels.dtype == torch.long and labels.shape == (200,)
    assert set(labels.tolist()) == {0, 1, 2}


def test_number_of_clusters_may_be_a_numpy_integer():
    x, _ = blobs(n=100, centers=3)
    assert torch.equal(TorchKMeans()(x, np.int64(3)), TorchKMeans()(x, 3))


def test_hand_computed_two_clusters():
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0], [0.5, 0.5]])
    labels = TorchKMeans()(x, 2)
    assert labels[0] == labels[1] == labels[4]
    assert labels[2] == labels[3] != labels[0]
    km = TorchKMeans()
    km(x, 2)
    centres = sorted(km.centroids.tolist())
    torch.testing.assert_close(torch.tensor(centres), torch.tensor([[1 / 6, 0.5], [10.0, 10.5]]))


def test_as_many_clusters_as_points_and_duplicates():
    x = torch.tensor([[0.0], [1.0], [2.0]])
    assert sorted(TorchKMeans()(x, 3).tolist()) == [0, 1, 2]
    dup = torch.zeros(6, 2)
    labels = TorchKMeans()(dup, 2)
    assert labels.shape == (6,)


def test_nredo_keeps_the_lowest_inertia():
    x, _ = blobs(std=4.0)
    one = TorchKMeans(nredo=1, seed=3)
    five = TorchKMeans(nredo=5, seed=3)
    one(x, 12)
    five(x, 12)
    assert five.inertia <= one.inertia + 1e-6


@pytest.mark.parametrize(
    "x, k, message",
    [
        (torch.randn(5, 2), 6, "exceeds"),
        (torch.randn(5, 2), 0, "positive int"),
        (torch.randn(5), 2, "2-D"),
        (torch.randn(0, 2), 1, "2-D"),
        (torch.tensor([[float("inf"), 0.0]]), 1, "NaN"),
    ],
)
def test_bad_inputs_are_rejected(x, k, message):
    with pytest.raises(ValueError, match=message):
        TorchKMeans()(x, k)


def test_bad_constructor_arguments_are_rejected():
    with pytest.raises(ValueError, match="niter"):
        TorchKMeans(niter=0)
    with pytest.raises(ValueError, match="nredo"):
        TorchKMeans(nredo=1.5)
    with pytest.raises(ValueError, match="init"):
        TorchKMeans(init="kmeans")
