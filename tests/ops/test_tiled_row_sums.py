"""tiled_row_sums: row sums of an elementwise pair function computed a tile of rows at a time,
against the definition on the whole matrix."""

import pytest
import torch
import torch.nn.functional as F

from deepmetric.ops.tiled_row_sums import tiled_row_sums


def sigmoid_term(start, q, r, scale, bias):
    """SigLIP's -log sigmoid(z_ij (scale q_i . r_j + bias)), z = +1 on the diagonal."""
    logits = scale * (q @ r.T) + bias
    rows = torch.arange(start, start + q.shape[0])[:, None]
    sign = torch.where(rows == torch.arange(r.shape[0])[None, :], 1.0, -1.0).to(logits.dtype)
    return -F.logsigmoid(sign * logits)


def inputs(n=6, m=6, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.randn(m, d, generator=g, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.5, dtype=torch.float64, requires_grad=True)
    return q, r, scale, bias


@pytest.mark.parametrize("tile_size", [1, 4, 6, 50])
def test_values_and_gradients_equal_the_definition(tile_size):
    q, r, scale, bias = inputs()
    got = tiled_row_sums(sigmoid_term, q, r, (scale, bias), tile_size=tile_size)
    want = sigmoid_term(0, q, r, scale, bias).sum(dim=1)
    torch.testing.assert_close(got, want)
    up = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, (q, r, scale, bias), up),
                    torch.autograd.grad(want, (q, r, scale, bias), up)):
        torch.testing.assert_close(a, b)


def test_gradcheck():
    q, r, scale, bias = inputs(n=4, m=5)
    assert torch.autograd.gradcheck(
        lambda q, r, s, b: tiled_row_sums(sigmoid_term, q, r, (s, b), tile_size=3), (q, r, scale, bias)
    )


def test_tiles_start_where_they_should_and_stay_small():
    q, r, scale, bias = inputs(n=10)
    seen = []

    def recording(start, qr, rr, s, b):
        seen.append((start, qr.shape[0]))
        return sigmoid_term(start, qr, rr, s, b)

    tiled_row_sums(recording, q, r, (scale, bias), tile_size=4).sum().backward()
    assert seen == [(0, 4), (4, 4), (8, 2)] * 2


@pytest.mark.parametrize("bad", [0, -3, 1.0])
def test_tile_size_must_be_a_positive_int(bad):
    q, r, scale, bias = inputs()
    with pytest.raises(ValueError, match="tile_size"):
        tiled_row_sums(sigmoid_term, q, r, (scale, bias), tile_size=bad)
