"""The smallest floating-point number at which a monotone elementwise test turns true.

A dense fast path that decides "is this term kept" by comparing one of its operands with a
bound must decide exactly what the per-term computation decides. The per-term computation is
rounded (``relu(fl(fl(a - b) + margin)) > low``), so a bound derived in real arithmetic
(``b < a + margin - low``) disagrees with it for terms within a few ulps of the threshold. But
the rounded test is monotone in ``b``: it holds on one side of a single floating-point number.
That number is found here exactly, by bisection over the floats themselves (their bit patterns,
mapped to integers in the same order), with the very expression the per-term path evaluates as
the test. The test then becomes one comparison with the bound, bit for bit the same decision.
"""

import torch

_INT_TYPES = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def _flip(bits, width):
    # Negative floats have the sign bit set and magnitude bits increasing away from zero;
    # inverting their magnitude bits makes the integers increase with the floats (the map is
    # its own inverse). +0 maps to 0, -0 to -1.
    return bits ^ ((bits >> (width - 1)) & ((1 << (width - 1)) - 1))


def float_to_key(x):
    """Integers (int16/32/64) ordered as the floats ``x`` are (NaN excluded)."""
    int_type = _INT_TYPES[x.dtype]
    return _flip(x.contiguous().view(int_type), torch.iinfo(int_type).bits)


def key_to_float(key, dtype):
    return _flip(key, torch.iinfo(key.dtype).bits).view(dtype)


def smallest_true(test, guess, slack):
    """Per entry, the smallest float ``x`` (of ``guess``'s dtype, in [-inf, +inf]) for which
    ``test(x)`` is True.

    ``test`` maps a tensor shaped like ``guess`` to a boolean tensor and must be monotone in
    each entry (False, then True as ``x`` grows) and True at ``+inf``; if it is True at
    ``-inf`` the answer is ``-inf``. ``guess`` (an estimate of the answer) and ``slack`` (a
    tensor or number bounding its error) only narrow the search: a bracket that does not hold
    falls back to the whole range, so the result never depends on them.
    """
    dtype = guess.dtype
    int_type = _INT_TYPES[dtype]
    width = torch.iinfo(int_type).bits
    inf = torch.tensor(float("inf"), dtype=dtype, device=guess.device)
    key_min, key_max = float_to_key(-inf), float_to_key(inf)
    guess = torch.nan_to_num(guess, nan=0.0)
    slack = torch.as_tensor(slack, dtype=dtype, device=guess.device).abs()
    lo = float_to_key(torch.nan_to_num(guess - slack, nan=-float("inf")))
    hi = float_to_key(torch.nan_to_num(guess + slack, nan=float("inf")))
    lo = torch.minimum(lo, hi)  # (when guess - slack rounds above guess + slack: never mind)
    # Invariant: test is False at lo (or lo is -inf) and True at hi.
    lo = torch.where(test(key_to_float(lo, dtype)), key_min, lo)
    hi = torch.where(test(key_to_float(hi, dtype)), hi, key_max)
    for _ in range(_steps_needed(lo, hi, width)):
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without overflow
        passed = test(key_to_float(mid, dtype))
        hi = torch.where(passed, mid, hi)
        lo = torch.where(passed, lo, mid)
    true_everywhere = test(-inf.expand(guess.shape))
    return torch.where(true_everywhere, -inf, key_to_float(hi, dtype))


def _steps_needed(lo, hi, width):
    """Bisection steps that shrink every bracket to adjacent floats (one host sync)."""
    if lo.numel() == 0:
        return 0
    span = float((hi.double() - lo.double()).max())  # approximate: only sizes the loop
    if span <= 1:
        return 0
    return min(width, int(span).bit_length() + 1)
