"""tile_size in NTXentLoss, SupConLoss and CLIPLoss: the tiled path gives the dense path's value
and gradients (float64 to 1e-10, float32 to 1e-5) for every tile size, with labels, a reference
set, a label relation and multi-hot labels, in the zero cases too; it never asks the distance
for more than a tile of rows against the reference set; a bad tile size is named."""

import pytest
import torch

from deepmetric import distances, losses

N, D = 13, 6
TILES = [1, 4, N - 1, N, 50]


def batch(dtype, seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=dtype), torch.randint(0, 4, (n,), generator=g)


def value_and_grads(loss_fn, *tensors, **kwargs):
    leaves = [t.clone().requires_grad_() if torch.is_tensor(t) and t.is_floating_point() else t
              for t in tensors]
    kw = {k: (v.clone().requires_grad_() if torch.is_tensor(v) and v.is_floating_point() else v)
          for k, v in kwargs.items()}
    value = loss_fn(*leaves, **kw)
    wrt = [t for t in [*leaves, *kw.values(), *loss_fn.parameters()]
           if torch.is_tensor(t) and t.requires_grad]
    grads = torch.autograd.grad(value, wrt, allow_unused=True)
    return value.detach(), [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads)]


def assert_close(got, want, dtype):
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(got[0], want[0], **tol)
    assert len(got[1]) == len(want[1])
    for a, b in zip(got[1], want[1]):
        torch.testing.assert_close(a, b, **tol)


PAIR_LOSSES = {
    "NTXentLoss": lambda **kw: losses.NTXentLoss(temperature=0.2, **kw),
    "SupConLoss": lambda **kw: losses.SupConLoss(temperature=0.2, **kw),
    "NTXentLoss(LpDistance)": lambda **kw: losses.NTXentLoss(distance=distances.LpDistance(), **kw),
    "SupConLoss(DotProduct)": lambda **kw: losses.SupConLoss(
        distance=distances.DotProductSimilarity(), **kw),
}


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("name", list(PAIR_LOSSES))
def test_tiled_pair_losses_equal_the_dense_path(name, tile, dtype):
    make = PAIR_LOSSES[name]
    emb, labels = batch(dtype)
    assert_close(value_and_grads(make(tile_size=tile), emb, labels),
                 value_and_grads(make(), emb, labels), dtype)
    ref, ref_labels = batch(dtype, seed=1, n=9)
    assert_close(value_and_grads(make(tile_size=tile), emb, labels, ref_emb=ref, ref_labels=ref_labels),
                 value_and_grads(make(), emb, labels, ref_emb=ref, ref_labels=ref_labels), dtype)


@pytest.mark.parametrize("name", ["NTXentLoss", "SupConLoss"])
def test_tiled_pair_losses_follow_a_relation_and_multi_hot_labels(name):
    make = PAIR_LOSSES[name]
    emb, labels = batch(torch.float64)
    coarse = lambda a, b: (a // 2).unsqueeze(1) == (b // 2).unsqueeze(0)  # noqa: E731
    assert_close(value_and_grads(make(tile_size=3, label_relation=coarse), emb, labels),
                 value_and_grads(make(label_relation=coarse), emb, labels), torch.float64)
    multi_hot = torch.nn.functional.one_hot(labels, 4)
    multi_hot[::3, 0] = 1  # every third row also belongs to class 0
    assert_close(value_and_grads(make(tile_size=3), emb, multi_hot),
                 value_and_grads(make(), emb, multi_hot), torch.float64)


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [5, 5, 5, 5], [0, 0, 1, 2]],
                         ids=["no-positive", "no-negative", "one-positive-pair"])
@pytest.mark.parametrize("name", ["NTXentLoss", "SupConLoss"])
def test_tiled_pair_losses_keep_the_dense_zero_cases(name, labels):
    make = PAIR_LOSSES[name]
    emb, _ = batch(torch.float64, n=4)
    labels = torch.tensor(labels)
    got = value_and_grads(make(tile_size=2), emb, labels)
    want = value_and_grads(make(), emb, labels)
    assert_close(got, want, torch.float64)


def test_a_miner_tuple_takes_the_dense_path_unchanged():
    emb, labels = batch(torch.float64)
    pairs = (torch.tensor([0, 1]), torch.tensor([4, 5]), torch.tensor([0, 0, 1]), torch.tensor([1, 2, 3]))
    for make in (PAIR_LOSSES["NTXentLoss"], PAIR_LOSSES["SupConLoss"]):
        got = value_and_grads(make(tile_size=2), emb, labels, pairs)
        want = value_and_grads(make(), emb, labels, pairs)
        assert torch.equal(got[0], want[0])


class RecordingCosine(distances.CosineSimilarity):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.shapes = []

    def forward(self, query_emb, ref_emb=None):
        mat = super().forward(query_emb, ref_emb)
        self.shapes.append(tuple(mat.shape))
        return mat


@pytest.mark.parametrize("loss_class", [losses.NTXentLoss, losses.SupConLoss])
def test_the_tiled_path_never_asks_for_more_than_a_tile_of_rows(loss_class):
    emb, labels = batch(torch.float64, n=40)
    distance = RecordingCosine()
    value = loss_class(tile_size=8, distance=distance)(emb.requires_grad_(), labels)
    value.backward()
    assert distance.shapes and max(rows for rows, _ in distance.shapes) <= 8


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("learn", [True, False])
def test_tiled_clip_loss_equals_the_dense_path(tile, learn, dtype):
    images, _ = batch(dtype)
    texts, _ = batch(dtype, seed=1)
    make = lambda **kw: losses.CLIPLoss(init_temperature=0.3, learn_temperature=learn, **kw)  # noqa: E731
    assert_close(value_and_grads(make(tile_size=tile), images, texts),
                 value_and_grads(make(), images, texts), dtype)


def test_tiled_clip_loss_at_the_clamped_scale_gives_no_scale_gradient():
    images, _ = batch(torch.float64)
    texts, _ = batch(torch.float64, seed=1)
    make = lambda **kw: losses.CLIPLoss(init_temperature=0.001, max_logit_scale=50, **kw)  # noqa: E731
    got = value_and_grads(make(tile_size=4), images, texts)
    assert_close(got, value_and_grads(make(), images, texts), torch.float64)
    assert float(got[1][-1]) == 0.0


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "8"])
@pytest.mark.parametrize("make", [losses.NTXentLoss, losses.SupConLoss, losses.CLIPLoss])
def test_a_bad_tile_size_is_named(make, bad):
    with pytest.raises(ValueError, match="tile_size must be None or a positive int"):
        make(tile_size=bad)
