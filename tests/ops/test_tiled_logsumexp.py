"""tiled_logsumexp: the masked row log-sum-exp (and weighted row sum) of a similarity matrix
computed a tile of rows at a time, against the definition on the whole matrix."""

import pytest
import torch

from deepmetric.ops.dtypes import neg_inf
from deepmetric.ops.tiled_logsumexp import tiled_logsumexp


def scaled_dot(q, r, scale):
    return scale * (q @ r.T)


def inputs(n=7, m=5, d=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True)
    r = torch.randn(m, d, generator=g, dtype=dtype, requires_grad=True)
    scale = torch.tensor(1.7, dtype=dtype, requires_grad=True)
    mask = torch.rand(n, m, generator=g) < 0.6
    mask[2] = False  # a row that keeps nothing
    weights = torch.rand(n, m, generator=g, dtype=dtype)
    return q, r, scale, mask, weights


def definition(q, r, scale, mask, weights):
    s = scaled_dot(q, r, scale)
    lse = torch.logsumexp(s.masked_fill(~mask, float("-inf")), dim=1)
    lse = torch.where(mask.any(dim=1), lse, torch.full_like(lse, neg_inf(s.dtype)))
    return lse, (weights * s).sum(dim=1)


@pytest.mark.parametrize("tile_size", [1, 3, 7, 100])
def test_values_and_gradients_equal_the_definition(tile_size):
    q, r, scale, mask, weights = inputs()
    lse, wsum = tiled_logsumexp(
        scaled_dot, q, r, (scale,), keep=lambda s, e: mask[s:e], weights=lambda s, e: weights[s:e],
        tile_size=tile_size,
    )
    want_lse, want_wsum = definition(q, r, scale, mask, weights)
    kept = mask.any(dim=1)
    torch.testing.assert_close(lse[kept], want_lse[kept])
    assert lse[2] == neg_inf(torch.float64)
    torch.testing.assert_close(wsum, want_wsum)
    g = torch.Generator().manual_seed(5)
    up_lse = torch.randn(7, generator=g, dtype=torch.float64)
    up_w = torch.randn(7, generator=g, dtype=torch.float64)
    # The empty row's sentinel carries no gradient; the definition's must not either.
    got = torch.autograd.grad((lse * up_lse * kept).sum() + (wsum * up_w).sum(), (q, r, scale))
    want = torch.autograd.grad(
        (torch.where(kept, want_lse, 0.0) * up_lse).sum() + (want_wsum * up_w).sum(), (q, r, scale)
    )
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_without_mask_is_torch_logsumexp_and_gradcheck_passes():
    q, r, scale, _, _ = inputs()
    out = tiled_logsumexp(scaled_dot, q, r, (scale,), tile_size=2)
    torch.testing.assert_close(out, torch.logsumexp(scaled_dot(q, r, scale), dim=1))
    assert torch.autograd.gradcheck(
        lambda q, r, s: tiled_logsumexp(scaled_dot, q, r, (s,), tile_size=3), (q, r, scale)
    )


def test_the_empty_row_gets_no_gradient_and_nothing_is_nan():
    q, r, scale, mask, _ = inputs()
    mask[:] = False
    mask[0, 0] = True
    lse = tiled_logsumexp(scaled_dot, q, r, (scale,), keep=lambda s, e: mask[s:e], tile_size=2)
    lse.sum().backward()
    assert torch.isfinite(lse).all() and torch.isfinite(q.grad).all()
    assert q.grad[1:].abs().sum() == 0  # only row 0 keeps an entry
    torch.testing.assert_close(q.grad[0], scale.detach() * r.detach()[0])


def test_the_similarity_never_sees_more_than_a_tile_of_rows():
    q, r, scale, _, _ = inputs(n=10)
    rows_seen = []

    def recording(qr, rr, s):
        rows_seen.append(qr.shape[0])
        return scaled_dot(qr, rr, s)

    tiled_logsumexp(recording, q, r, (scale,), tile_size=4).sum().backward()
    assert max(rows_seen) == 4 and sum(rows_seen) == 20  # forward and backward, each tile once


def test_only_the_inputs_that_need_gradients_get_them():
    q, r, scale, _, _ = inputs()
    r = r.detach()
    out = tiled_logsumexp(scaled_dot, q, r, (scale.detach(),), tile_size=3)
    out.sum().backward()
    assert q.grad is not None and r.grad is None


def test_half_precision_inputs_accumulate_in_float32():
    q, r, _, mask, _ = inputs(dtype=torch.float32)
    qh, rh = q.detach().half().requires_grad_(), r.detach().half().requires_grad_()

    def in_float32(a, b):
        return a.float() @ b.float().T

    out = tiled_logsumexp(in_float32, qh, rh, keep=lambda s, e: mask[s:e], tile_size=2)
    assert out.dtype == torch.float32
    out[mask.any(dim=1)].sum().backward()
    assert qh.grad.dtype == torch.float16
    want = torch.logsumexp(in_float32(qh, rh).masked_fill(~mask, float("-inf")), dim=1)
    kept = mask.any(dim=1)
    torch.testing.assert_close(out[kept], want[kept])


def test_empty_query():
    _, r, scale, _, _ = inputs()
    out = tiled_logsumexp(scaled_dot, torch.zeros(0, 3, dtype=torch.float64), r, (scale,))
    assert out.shape == (0,) and out.dtype == torch.float64


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None])
def test_tile_size_must_be_a_positive_int(bad):
    q, r, scale, _, _ = inputs()
    with pytest.raises(ValueError, match="tile_size"):
        tiled_logsumexp(scaled_dot, q, r, (scale,), tile_size=bad)
