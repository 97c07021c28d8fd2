"""Log-sum-exp over a subset of entries: rows of a matrix under a boolean mask, or groups of a
flat list of values (one group per anchor index).

Pair losses use these to sum over the positives or negatives of every anchor straight from the
distance matrix, instead of building a (pairs x pairs) matrix that selects them.
"""

import torch

from .dtypes import neg_inf

# Below this fraction of kept entries the kept values are gathered and reduced as a list:
# exp is then taken only where it matters (typically the few positives of each anchor).
_SPARSE_FRACTION = 0.125


def masked_logsumexp(x, mask, add_one=False, empty=0.0):
    """``log(sum_{j kept} exp(x_ij))`` for every row ``i`` of the matrix ``x``
    (``log(1 + ...)`` when ``add_one``).

    Rows that keep nothing give ``empty`` (0 by default; ``None`` leaves the huge negative finite
    sentinel, which acts as ``-inf`` in a later ``logaddexp`` without producing NaN gradients).
    With ``add_one`` an empty row is ``log(1) = 0`` whatever ``empty`` says.
    """
    rows, cols = x.shape
    if int(torch.count_nonzero(mask)) < _SPARSE_FRACTION * rows * cols:
        r, c = torch.where(mask)
        lse, has_any = grouped_logsumexp(x[r, c], r, rows)
    else:
        lse, has_any = _dense_row_logsumexp(x, mask)
    if add_one:
        return torch.logaddexp(lse, torch.zeros((), dtype=lse.dtype, device=lse.device))
    if empty is None:
        return lse
    return torch.where(has_any, lse, torch.as_tensor(empty, dtype=lse.dtype, device=lse.device))


def _dense_row_logsumexp(x, mask):
    # A finite sentinel instead of -inf keeps every intermediate finite; masked_fill sends no
    # gradient to the masked entries. Written out (rather than torch.logsumexp) so that exp is
    # evaluated once: autograd reuses its saved output in the backward pass.
    sentinel = neg_inf(x.dtype)
    filled = x.masked_fill(~mask, sentinel)
    top = filled.amax(dim=1, keepdim=True).detach()
    # An empty row has top == sentinel, so its sum is the column count: finite, and later replaced.
    sums = torch.exp(filled - top).sum(dim=1)
    return torch.log(sums) + top.squeeze(1), mask.any(dim=1)


def grouped_logsumexp(values, groups, num_groups):
    """``out[g] = log(sum_{k: groups[k] == g} exp(values[k]))`` for a flat ``values`` list.

    Repeated entries count as often as they occur. Empty groups get the finite sentinel
    ``neg_inf(dtype)``. Returns ``(out, has_any)``.
    """
    dtype, device = values.dtype, values.device
    sentinel = neg_inf(dtype)
    top = torch.full((num_groups,), sentinel, dtype=dtype, device=device)
    top = top.scatter_reduce(0, groups, values.detach(), reduce="amax", include_self=True)
    sums = torch.zeros(num_groups, dtype=dtype, device=device)
    sums = sums.index_add(0, groups, torch.exp(values - top[groups]))
    has_any = torch.zeros(num_groups, dtype=torch.bool, device=device)
    has_any[groups] = True
    # log(0) of an empty group would give an infinite gradient; log(1) + sentinel stays finite.
    out = torch.log(torch.where(has_any, sums, torch.ones_like(sums))) + top
    return torch.where(has_any, out, torch.full_like(out, sentinel)), has_any
