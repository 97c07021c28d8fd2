"""cosine_matrix: the fused cosine-similarity node behind DotProductSimilarity/CosineSimilarity."""

import pytest
import torch

from deepmetric.distances import CosineSimilarity, DotProductSimilarity
from deepmetric.distances.cosine_matrix import cosine_matrix


def unfused(query, ref):
    return torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(ref, dim=1).T


def test_hand_computed():
    q = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    r = torch.tensor([[1.0, 0.0], [0.0, -5.0], [1.0, 1.0]])
    s = 2**-0.5
    expected = torch.tensor([[0.6, -0.8, 0.7 * 2 * s], [0.0, -1.0, s]])
    torch.testing.assert_close(cosine_matrix(q, r), expected)


@pytest.mark.parametrize("same", [False, True])
def test_values_equal_the_unfused_form_bit_for_bit_and_gradients_match(dtype, same):
    if dtype == torch.float16:
        pytest.skip("the fused node is used for float32 and float64 only")
    torch.manual_seed(0)
    q = torch.randn(9, 5, dtype=dtype, requires_grad=True)
    r = q if same else torch.randn(7, 5, dtype=dtype, requires_grad=True)
    fused, plain = cosine_matrix(q, None if same else r), unfused(q, r)
    assert torch.equal(fused, plain)
    upstream = torch.randn_like(fused)
    inputs = (q,) if same else (q, r)
    for a, b in zip(torch.autograd.grad(fused, inputs, upstream), torch.autograd.grad(plain, inputs, upstream)):
        torch.testing.assert_close(a, b)


def test_gradcheck_and_a_zero_row():
    torch.manual_seed(1)
    q = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    r = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cosine_matrix, (q, r))
    assert torch.autograd.gradcheck(lambda x: cosine_matrix(x), (q,))
    # A zero row has a clamped norm, so its divisor is a constant, as in F.normalize (finite
    # differences cannot check this: normalisation jumps at zero).
    q = q.detach().clone()
    q[2] = 0
    q.requires_grad_(True)
    out = cosine_matrix(q, r)
    assert torch.equal(out[2], torch.zeros(5, dtype=torch.float64))
    grad = torch.autograd.grad(out.sum(), q)[0]
    torch.testing.assert_close(grad, torch.autograd.grad(unfused(q, r).sum(), q)[0])


def test_distances_use_it_only_for_plain_cosine():
    torch.manual_seed(2)
    q = torch.randn(6, 4, requires_grad=True)
    fused_fn = cosine_matrix(q).grad_fn
    for distance in (CosineSimilarity(), DotProductSimilarity()):
        assert type(distance(q).grad_fn) is type(fused_fn)
    # statistics, raw dot products, powers and half precision keep the plain path
    for distance, x in (
        (CosineSimilarity(collect_stats=True), q),
        (DotProductSimilarity(normalize_embeddings=False), q),
        (DotProductSimilarity(power=2), q),
        (CosineSimilarity(), q.detach().half()),
    ):
        out = distance(x)
        assert out.grad_fn is None or type(out.grad_fn) is not type(fused_fn)
    stats = CosineSimilarity(collect_stats=True)
    stats(q)
    assert stats.final_avg_query_norm == pytest.approx(1.0)
