"""Dtype rules shared by every kernel.

Half-precision inputs are accumulated in float32: sums of many terms overflow float16, and exp,
log, acos and norms lose too much in 16 bits. Finite sentinels stand in for infinities where an
infinity would turn into NaN in later arithmetic (``inf - inf``, ``0 * inf``).
"""

import torch


def accumulation_dtype(dtype):
    """The dtype to compute in for inputs of ``dtype``: float32 for float16/bfloat16, else itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def pos_inf(dtype):
    """The largest finite value of ``dtype`` (acts as +inf without producing NaN)."""
    return torch.finfo(dtype).max


def neg_inf(dtype):
    """The most negative finite value of ``dtype`` (acts as -inf without producing NaN)."""
    return torch.finfo(dtype).min


def small_val(dtype):
    """The smallest positive normal value of ``dtype``."""
    return torch.finfo(dtype).tiny
