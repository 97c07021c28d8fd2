"""Scores of query rows against a fixed reference set, fast (one matmul) and exact (float64).

The fast keys come from the matmul expansion ``|q|^2 + |r|^2 - 2 q.r`` (or ``q.r``): one GEMM per
block, but in float32 two distances closer than the GEMM's rounding error can come out in the
wrong order. :class:`Scorer` therefore also gives, for a row, a bound ``B`` on that error and the
exact value of any (query, reference) pair: the direct difference ``sum_d (q_d - r_d)^2`` (or the
product ``sum_d q_d r_d``) in float64. Two entries whose fast values differ by more than ``2 B``
are certainly in the right order; only entries closer than that to another need exact values.

The bound is the standard one for a dot product of length ``D`` computed in any order with unit
roundoff ``u`` (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002, section 3.1):
``|fl(q.r) - q.r| <= gamma_D |q| |r|`` with ``gamma_D = D u / (1 - D u)``; the norms and the
additions add a few ``u`` more. Here ``B = 1.1 (D + 8) (u + 2^-52) (|q| + max_r |r|)^2`` for
squared L2 and ``1.1 (D + 8) (u + 2^-52) |q| max_r |r|`` for dot products, where ``u`` is that of
the matmul: ``2^-24`` in float32, ``2^-53`` in float64, and ``2^-11`` / ``2^-8`` when float32
matmuls are allowed to use TF32 / bfloat16 (``torch.set_float32_matmul_precision``).
"""

import torch

from ..distances.cosine_similarity import CosineSimilarity
from ..distances.dot_product_similarity import DotProductSimilarity
from ..distances.lp_distance import LpDistance

# float64 entries of one batch of exact pair values (pairs x dimensions).
_EXACT_BATCH_ENTRIES = 2**22


class Scorer:
    """Keys of query blocks against ``reference``, the reference prepared once.

    ``mode``: ``"l2"`` (LpDistance with p=2, any power), ``"dot"`` (dot-product and cosine
    similarity) or ``"generic"`` (any other distance, called on each block).

    Two families of keys:

    * :meth:`keys` / :meth:`finalize`: the distance's orientation (similarities larger is
      better). For L2 the key is ``|r|^2 - 2 q.r``; :meth:`finalize` adds ``|q|^2``, clamps at
      0 and applies the power (monotone along a row, so it may wait until the ranking is done).
    * :meth:`ascending_keys` / :meth:`approx_values` / :meth:`exact_values` /
      :meth:`bound` (when :attr:`refines`): smaller is better; ``approx_values`` are squared
      distances (or negated similarities) within :meth:`bound` of ``exact_values``.
    """

    def __init__(self, distance, reference):
        self.distance = distance
        self.mode = self.mode_of(distance)
        self.n = reference.shape[0]
        self.dim = reference.shape[1]
        if self.mode == "generic":
            self.reference = reference
        else:
            self.reference = distance.maybe_normalize(reference)
        if self.mode == "l2":
            self.ref_sq_norms = (self.reference * self.reference).sum(dim=1)
        # Exact refinement needs the keys to be (minus) a plain dot product or a squared L2.
        self.refines = self.mode == "l2" or (self.mode == "dot" and distance.power == 1)
        self._max_ref_norm = None

    @staticmethod
    def mode_of(distance):
        kind = type(distance)
        if kind is LpDistance and distance.p == 2:
            return "l2"
        if kind in (DotProductSimilarity, CosineSimilarity):
            return "dot"
        return "generic"

    def prepare_query(self, q):
        if self.mode == "generic":
            return q
        return self.distance.maybe_normalize(q)

    # ----------------------------------------------------------- keys in the distance's orientation
    def keys(self, q, c0, c1):
        if self.mode == "generic":
            mat = self.distance(q, self.reference[c0:c1]).to(q.dtype)
            worst = float("-inf") if self.distance.is_inverted else float("inf")
            return mat.nan_to_num_(nan=worst)
        r = self.reference[c0:c1]
        if self.mode == "dot":
            mat = q @ r.t()
            power = self.distance.power
            # A fractional power of a negative similarity is NaN: rank those last.
            return mat if power == 1 else mat.pow_(power).nan_to_num_(nan=float("-inf"))
        return torch.addmm(self.ref_sq_norms[c0:c1].unsqueeze(0), q, r.t(), alpha=-2)

    def finalize(self, q, values):
        if self.mode != "l2":
            return values
        # The expansion can go slightly negative by rounding; a distance cannot.
        values = values.add_((q * q).sum(dim=1, keepdim=True)).clamp_min_(0)
        power = self.distance.power
        return values if power == 2 else values.pow_(power / 2)

    # ------------------------------------------------------------- ascending keys and exact values
    def ascending_keys(self, q, c0, c1, precise=False):
        """``(b, c1 - c0)`` keys, smaller is better; in float64 when ``precise``."""
        r = self.reference[c0:c1]
        if precise:
            q, r = q.double(), r.double()
        if self.mode == "dot":
            return (q @ r.t()).neg_()
        norms = (r * r).sum(dim=1) if precise else self.ref_sq_norms[c0:c1]
        return torch.addmm(norms.unsqueeze(0), q, r.t(), alpha=-2)

    def approx_values(self, q, keys):
        """float64 squared distances (``"l2"``) or negated similarities (``"dot"``) from keys of
        :meth:`ascending_keys` (same dtype as computed there); monotone in the keys."""
        if self.mode == "dot":
            return keys.double()
        q = q.to(keys.dtype)
        return (keys + (q * q).sum(dim=1, keepdim=True)).clamp_min_(0).double()

    def exact_values(self, q, rows, columns):
        """float64 values of the pairs ``(q[rows[i]], reference[columns[i]])``:
        ``sum_d (q_d - r_d)^2`` or ``-sum_d q_d r_d``, for prepared query rows ``q``."""
        out = torch.empty(len(columns), dtype=torch.float64, device=q.device)
        step = max(1, _EXACT_BATCH_ENTRIES // max(1, self.dim))
        for s in range(0, len(columns), step):
            a = q[rows[s : s + step]].double()
            b = self.reference[columns[s : s + step]].double()
            if self.mode == "dot":
                out[s : s + step] = a.mul_(b).sum(dim=1).neg_()
            else:
                diff = a.sub_(b)
                out[s : s + step] = diff.mul_(diff).sum(dim=1)
        return out

    def bound(self, q, precise=False):
        """``(b,)`` float64: a bound on ``|approx_values - exact_values|`` over each row."""
        if self._max_ref_norm is None:
            self._max_ref_norm = float(self.reference.double().norm(dim=1).max())
        u = 2.0**-53 if precise else matmul_unit_roundoff(self.reference.dtype, self.reference.device)
        gamma = 1.1 * (self.dim + 8) * (u + 2.0**-52)
        q_norms = q.double().norm(dim=1)
        if self.mode == "dot":
            return gamma * q_norms * self._max_ref_norm
        return gamma * (q_norms + self._max_ref_norm) ** 2

    def output_values(self, mixed):
        """The distance's values from float64 ascending values (squared L2 or negated dot)."""
        if self.mode == "dot":
            return mixed.neg()
        power = self.distance.power
        return mixed if power == 2 else mixed.pow(power / 2)


def matmul_unit_roundoff(dtype, device):
    """Unit roundoff of a matmul in ``dtype`` under the current precision settings."""
    if dtype == torch.float64:
        return 2.0**-53
    precision = torch.get_float32_matmul_precision()
    if precision == "medium":
        return 2.0**-8
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    if precision == "high" or tf32:
        return 2.0**-11
    return 2.0**-24
