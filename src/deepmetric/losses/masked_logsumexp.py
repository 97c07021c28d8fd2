"""Log-sum-exp over a subset of entries: rows of a matrix under a boolean mask, or groups of a
flat list of values (one group per anchor index).

Pair losses use these to sum over the positives or negatives of every anchor straight from the
distance matrix, instead of building a (pairs x pairs) matrix that selects them.
"""

import torch

from ..utils import common_functions as c_f


def accumulation_dtype(dtype):
    """Half-precision inputs are summed in float32 (exp/log in float16 lose too much)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def masked_logsumexp(x, mask, dim=1, add_one=False, empty=0.0):
    """``log(sum_{kept} exp(x))`` along ``dim`` (``log(1 + ...)`` when ``add_one``).

    Rows that keep nothing give ``empty`` (0 by default; ``None`` leaves a huge negative finite
    value, which behaves as ``-inf`` in a later ``logaddexp`` without producing NaN gradients).
    With ``add_one`` an empty row is ``log(1) = 0`` whatever ``empty`` says.
    """
    # A finite sentinel instead of -inf: an all-masked row then has a finite logsumexp whose
    # backward is finite too (masked_fill sends no gradient to the masked entries anyway).
    lse = torch.logsumexp(x.masked_fill(~mask, c_f.neg_inf(x.dtype)), dim=dim)
    if add_one:
        return torch.logaddexp(lse, torch.zeros((), dtype=lse.dtype, device=lse.device))
    if empty is None:
        return lse
    return torch.where(mask.any(dim=dim), lse, torch.as_tensor(empty, dtype=lse.dtype, device=lse.device))


def grouped_logsumexp(values, groups, num_groups):
    """``out[g] = log(sum_{k: groups[k] == g} exp(values[k]))`` for a flat ``values`` list.

    Repeated entries count as often as they occur. Empty groups get the finite sentinel
    ``neg_inf(dtype)``. Returns ``(out, has_any)``.
    """
    dtype, device = values.dtype, values.device
    sentinel = c_f.neg_inf(dtype)
    top = torch.full((num_groups,), sentinel, dtype=dtype, device=device)
    top = top.scatter_reduce(0, groups, values.detach(), reduce="amax", include_self=True)
    sums = torch.zeros(num_groups, dtype=dtype, device=device)
    sums = sums.index_add(0, groups, torch.exp(values - top[groups]))
    has_any = torch.zeros(num_groups, dtype=torch.bool, device=device)
    has_any[groups] = True
    # log(0) of an empty group would give an infinite gradient; log(1) + sentinel stays finite.
    out = torch.log(torch.where(has_any, sums, torch.ones_like(sums))) + top
    return torch.where(has_any, out, torch.full_like(out, sentinel)), has_any
