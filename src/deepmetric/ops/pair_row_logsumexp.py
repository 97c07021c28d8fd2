"""``log(1 + sum_n exp(f_kn))`` for every listed pair ``k``, where each pair's row of terms is
the sum of its two members' rows minus a per-pair constant:

    f_kn = anchor_rows[a_k, n] + other_rows[p_k, n] - pair_terms[k]

(AngularLoss: ``4 t (a + p) . r_n - 2 (1 + t) a . p``; ``-inf`` in ``anchor_rows`` drops a
column). The ``(pairs x M)`` matrix of ``f`` is built, reduced and differentiated one chunk of
pairs at a time, so memory stays ``O(N M)`` instead of ``O(pairs x M)``; the backward pass
recomputes each chunk:

    d loss_k / d f_kn = exp(f_kn - loss_k)
"""

import torch

from .blocked_triplets import chunk_bounds


def _chunk_terms(anchor_rows, other_rows, pair_terms, a, p, s, e):
    return anchor_rows[a[s:e]] + other_rows[p[s:e]] - pair_terms[s:e, None]


class _PairRowLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchor_rows, other_rows, pair_terms, a, p):
        losses = torch.empty_like(pair_terms)
        for s, e in chunk_bounds(len(a), other_rows.shape[1]):
            f = _chunk_terms(anchor_rows, other_rows, pair_terms, a, p, s, e)
            # The "1 +" is a zero logit; rows without any finite term come out as log(1) = 0.
            peak = torch.clamp(f.max(dim=1).values, min=0)
            losses[s:e] = peak + torch.log(torch.exp(-peak) + torch.exp(f - peak[:, None]).sum(dim=1))
        ctx.save_for_backward(anchor_rows, other_rows, pair_terms, a, p, losses)
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        anchor_rows, other_rows, pair_terms, a, p, losses = ctx.saved_tensors
        grad_anchor = torch.zeros_like(anchor_rows)
        grad_other = torch.zeros_like(other_rows)
        grad_pair = torch.empty_like(pair_terms)
        for s, e in chunk_bounds(len(a), other_rows.shape[1]):
            f = _chunk_terms(anchor_rows, other_rows, pair_terms, a, p, s, e)
            # exp(f - loss) is 0 where f is -inf (a dropped column)
            weight = torch.exp(f - losses[s:e, None]) * grad_losses[s:e, None]
            grad_anchor.index_add_(0, a[s:e], weight)
            grad_other.index_add_(0, p[s:e], weight)
            grad_pair[s:e] = -weight.sum(dim=1)
        return grad_anchor, grad_other, grad_pair, None, None


def pair_row_logsumexp(anchor_rows, other_rows, pair_terms, a, p):
    """``(pairs,)`` values of ``log(1 + sum_n exp(f_kn))`` (module docstring) for the pairs
    ``(a[k], p[k])``; ``anchor_rows`` ``(N, M)``, ``other_rows`` ``(M', M)``, ``pair_terms`` ``(pairs,)``."""
    return _PairRowLogSumExp.apply(anchor_rows, other_rows, pair_terms, a, p)
