"""How the scores of positive and negative pairs interleave: all a verification metric needs.

A verification decision accepts a pair when ``score >= t`` for a threshold ``t``; the score is a
similarity, or minus a distance (larger means more alike). Over ``P`` positive pairs (same label)
and ``N`` negative pairs, every verification figure is a function of

* the distinct positive scores ``u_0 < u_1 < ... < u_{m-1}`` and how many positives ``c_i`` have
  each;
* how many negatives fall in each *slot* around them: slot ``2i + 1`` holds the negatives equal to
  ``u_i``, slot ``2i`` those strictly between ``u_{i-1}`` and ``u_i`` (slot 0: below ``u_0``;
  slot ``2m``: above ``u_{m-1}``).

:class:`PairCounts` keeps these ``3m + 1`` numbers, never the negative scores, and computes
exactly, with ``TP_i = #{positives >= u_i}`` and ``FP_i = #{negatives >= u_i}``:

* ``roc_auc = sum_i c_i (#{negatives < u_i} + #{negatives = u_i} / 2) / (P N)``: the chance that a
  positive outscores a negative, ties counting one half (Mann-Whitney U / (P N)), which is the
  trapezoidal area under the ROC curve, what scikit-learn's ``roc_auc_score`` computes;
* the ROC curve: the true-positive rate ``TPR = TP / P`` changes only at the ``u_i``, so its
  corners are ``(FP_i, TP_i) / (N, P)`` and the points just above each ``u_i``;
* ``tar_at_far(r) = max {TP_i / P : FP_i / N <= r}`` (0 when no threshold qualifies) and
  ``fnmr_at_fmr(r) = 1 - tar_at_far(r)`` (the false match rate FMR is the false accept rate FAR);
* ``eer``: the rate where the ROC polyline crosses ``FPR = 1 - TPR`` (false match rate = false
  non-match rate), interpolated linearly along the segment that crosses;
* ``best_f1 = max_i 2 TP_i / (TP_i + FP_i + P)``: F1 is best at a threshold equal to a positive
  score (lowering it to a negative only adds false positives).
"""

import dataclasses
import math

import torch

from ..utils.errors import ArgumentError


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """The figures of one threshold over a set of pairs.

    ``threshold`` is in the scores' own units: a pair matches when ``similarity >= threshold``,
    or ``distance <= threshold`` for a distance (see :attr:`PairCounts.is_distance`).
    """

    threshold: float
    true_positives: int
    false_positives: int
    positives: int
    negatives: int

    @property
    def tpr(self):
        """True positive (true accept) rate = recall = ``1 - FNMR``."""
        return self.true_positives / self.positives if self.positives else float("nan")

    recall = tpr

    @property
    def fpr(self):
        """False positive rate = false match rate (FMR) = false accept rate (FAR)."""
        return self.false_positives / self.negatives if self.negatives else float("nan")

    @property
    def fnmr(self):
        """False non-match rate ``1 - TPR``."""
        return 1.0 - self.tpr

    @property
    def precision(self):
        accepted = self.true_positives + self.false_positives
        return self.true_positives / accepted if accepted else float("nan")

    @property
    def f1(self):
        denominator = self.true_positives + self.false_positives + self.positives
        return 2 * self.true_positives / denominator if denominator else float("nan")

    def figures(self):
        """``{name: value}`` of the rates, with the threshold and the counts."""
        return {
            "threshold": self.threshold,
            "tpr": self.tpr,
            "fpr": self.fpr,
            "fnmr": self.fnmr,
            "precision": self.precision,
            "f1": self.f1,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "positives": self.positives,
            "negatives": self.negatives,
        }


class PairCounts:
    """The distinct positive scores, their multiplicities and the negatives in each slot (module
    docstring); every verification figure, exactly.

    Args:
        positive_values: ``(m,)`` distinct positive scores, strictly increasing (larger means
            more alike).
        positive_counts: ``(m,)`` how many positive pairs have each score (at least 1).
        negative_counts: ``(2m + 1,)`` negatives per slot.
        score_dtype: the dtype the scores were computed in (thresholds just above a score are
            the next number of this dtype).
        is_distance: the scores are minus a distance; thresholds are then reported as
            distances (a pair matches when ``distance <= threshold``).
    """

    def __init__(self, positive_values, positive_counts, negative_counts, score_dtype=torch.float64,
                 is_distance=False):
        values = torch.as_tensor(positive_values).detach().cpu()
        pos = torch.as_tensor(positive_counts).detach().cpu().long()
        neg = torch.as_tensor(negative_counts).detach().cpu().long()
        if values.ndim != 1 or pos.shape != values.shape:
            raise ArgumentError(
                "positive_values and positive_counts must be 1-D of the same length, got shapes "
                f"{tuple(values.shape)} and {tuple(pos.shape)}"
            )
        if neg.shape != (2 * len(values) + 1,):
            raise ArgumentError(
                f"negative_counts must have 2 * {len(values)} + 1 = {2 * len(values) + 1} slots, "
                f"got shape {tuple(neg.shape)}"
            )
        if len(values) > 1 and not bool((values[1:] > values[:-1]).all()):
            raise ArgumentError("positive_values must be strictly increasing")
        if bool((pos < 1).any()) or bool((neg < 0).any()):
            raise ArgumentError("positive_counts must be positive and negative_counts non-negative")
        self.score_dtype = score_dtype
        self.values = values.to(score_dtype)
        self.positive_counts = pos
        self.negative_counts = neg
        self.is_distance = bool(is_distance)
        self.num_positives = int(pos.sum())
        self.num_negatives = int(neg.sum())
        # TP_i, FP_i: at threshold u_i (>=); TP_i', FP_i': just above it (>).
        self.tp_at = _suffix_sums(pos)
        slots_from = _suffix_sums(torch.cat([neg, neg.new_zeros(1)]))
        self.fp_at = slots_from[1::2][: len(values)]
        self.fp_above = slots_from[2::2][: len(values)]
        self.tp_above = self.tp_at - pos

    @classmethod
    def from_scores(cls, positive_scores, negative_scores, is_distance=False):
        """Counts of explicit score lists (scores: larger means more alike).

        With ``is_distance=True`` the lists hold distances (smaller means more alike)."""
        pos = _as_scores(positive_scores, "positive_scores")
        neg = _as_scores(negative_scores, "negative_scores")
        dtype = torch.promote_types(pos.dtype, neg.dtype)
        pos, neg = pos.to(dtype), neg.to(dtype)
        if is_distance:
            pos, neg = -pos, -neg
        values, counts = torch.unique(pos, sorted=True, return_counts=True)
        slots = torch.searchsorted(values, neg, side="left") + torch.searchsorted(values, neg, side="right")
        negative_counts = torch.bincount(slots, minlength=2 * len(values) + 1)
        return cls(values, counts, negative_counts, dtype, is_distance)

    # ------------------------------------------------------------------------- thresholds
    def threshold_of(self, score):
        """A score threshold in the scores' own units (a distance for distances)."""
        return -float(score) if self.is_distance else float(score)

    def just_above(self, i):
        """The smallest score of ``score_dtype`` above ``u_i``: accepts what is above ``u_i``."""
        value = self.values[i : i + 1]
        return float(torch.nextafter(value, torch.full_like(value, math.inf))[0])

    def at_positive(self, i):
        """The :class:`OperatingPoint` of threshold ``u_i`` (accepting scores ``>= u_i``)."""
        return OperatingPoint(
            self.threshold_of(self.values[i]),
            int(self.tp_at[i]),
            int(self.fp_at[i]),
            self.num_positives,
            self.num_negatives,
        )

    def require_both_kinds(self, what):
        if self.num_positives == 0 or self.num_negatives == 0:
            raise ArgumentError(
                f"{what} needs positive and negative pairs, got {self.num_positives} positive and "
                f"{self.num_negatives} negative pairs"
            )

    # ------------------------------------------------------------------------- figures
    def roc_auc(self):
        """Area under the ROC curve, ties counting one half (scikit-learn's ``roc_auc_score``)."""
        self.require_both_kinds("roc_auc")
        below = self.num_negatives - self.fp_at  # negatives < u_i
        equal = self.fp_at - self.fp_above
        twice = self.positive_counts * (2 * below + equal)
        if self.num_positives * 2 * self.num_negatives < 2**62:
            numerator = int(twice.sum())  # exact in int64
        else:
            numerator = float(twice.double().sum())
        return numerator / (2 * self.num_positives * self.num_negatives)

    def roc_vertices(self):
        """``(fp, tp, thresholds)``: the ROC curve as counts, from the strictest threshold to
        the loosest: ``(0, 0)`` (threshold ``+inf``), then for each ``u_i`` from the largest
        down the point just above it and the point at it, then ``(N, P)`` (``-inf``).
        Thresholds are in the scores' units (distances for a distance)."""
        m = len(self.values)
        order = torch.arange(m - 1, -1, -1)
        fp = torch.stack([self.fp_above[order], self.fp_at[order]], dim=1).reshape(-1)
        tp = torch.stack([self.tp_above[order], self.tp_at[order]], dim=1).reshape(-1)
        values = self.values[order]
        above = torch.nextafter(values, torch.full_like(values, math.inf))
        scores = torch.stack([above, values], dim=1).reshape(-1).double()
        fp = torch.cat([torch.zeros(1, dtype=torch.long), fp, torch.tensor([self.num_negatives])])
        tp = torch.cat([torch.zeros(1, dtype=torch.long), tp, torch.tensor([self.num_positives])])
        scores = torch.cat([torch.tensor([math.inf]), scores, torch.tensor([-math.inf])])
        return fp, tp, (-scores if self.is_distance else scores)

    def roc_curve(self, drop_intermediate=True, max_points=None):
        """``(fpr, tpr, thresholds)`` float64 tensors along the ROC curve, ascending rates.

        ``drop_intermediate``: keep only the corners (points where the curve turns).
        ``max_points``: at most this many points, every one of them a point of the exact curve:
        for rates spread over ``[1/N, 1]`` (half on a log scale, half linear) the point with the
        highest TPR whose FPR is at most the rate, plus both ends."""
        self.require_both_kinds("roc_curve")
        fp, tp, thresholds = self.roc_vertices()
        if drop_intermediate:
            keep = _corners(fp, tp)
            fp, tp, thresholds = fp[keep], tp[keep], thresholds[keep]
        if max_points is not None:
            if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
                raise ArgumentError(f"max_points must be an int of at least 2, got {max_points!r}")
            if len(fp) > max_points:
                keep = _spread(fp, self.num_negatives, max_points)
                fp, tp, thresholds = fp[keep], tp[keep], thresholds[keep]
        fpr = fp.double() / self.num_negatives
        tpr = tp.double() / self.num_positives
        return fpr, tpr, thresholds

    def eer(self):
        """Equal error rate: where the ROC polyline crosses ``FPR = 1 - TPR``."""
        self.require_both_kinds("eer")
        fp, tp, _ = self.roc_vertices()
        fpr = fp.double() / self.num_negatives
        tpr = tp.double() / self.num_positives
        gap = fpr + tpr - 1  # non-decreasing along the curve, from -1 to 1
        k = int(torch.nonzero(gap >= 0)[0, 0])
        if gap[k] == 0 or k == 0:
            return float(fpr[k])
        share = float(-gap[k - 1] / (gap[k] - gap[k - 1]))
        return float(fpr[k - 1] + share * (fpr[k] - fpr[k - 1]))

    def best_at_rate(self, rate):
        """The index ``i`` of the loosest threshold ``u_i`` whose false positive rate is at most
        ``rate`` (the highest TPR there), or None when even ``u_{m-1}`` accepts too many."""
        fpr = self.fp_at.double() / self.num_negatives
        feasible = torch.nonzero(fpr <= rate).reshape(-1)
        return int(feasible[0]) if len(feasible) else None

    def tar_at_far(self, rate):
        """Highest true accept rate with a false accept rate of at most ``rate``."""
        self.require_both_kinds("tar_at_far")
        i = self.best_at_rate(check_rate(rate, "rate"))
        return 0.0 if i is None else int(self.tp_at[i]) / self.num_positives

    def fnmr_at_fmr(self, rate):
        """Lowest false non-match rate with a false match rate of at most ``rate``."""
        return 1.0 - self.tar_at_far(rate)

    def best_f1_index(self):
        """``i`` with the highest F1 at threshold ``u_i`` (the strictest among equal F1)."""
        self.require_both_kinds("best_f1")
        f1 = 2 * self.tp_at.double() / (self.tp_at + self.fp_at + self.num_positives).double()
        best = f1.max()
        return int(torch.nonzero(f1 == best).reshape(-1)[-1])

    def best_f1(self):
        return self.at_positive(self.best_f1_index()).f1


def check_rate(rate, name):
    """``rate`` as a float in ``(0, 1)``, or a ValueError naming ``name``."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise ArgumentError(f"{name} must be a number in (0, 1), got {rate!r}")
    if not 0 < rate < 1:
        raise ArgumentError(f"{name} must be in (0, 1), got {rate!r}")
    return float(rate)


def _suffix_sums(x):
    return torch.flip(torch.cumsum(torch.flip(x, [0]), 0), [0])


def _as_scores(x, name):
    x = torch.as_tensor(x).detach().cpu()
    if x.ndim != 1:
        raise ArgumentError(f"{name} must be 1-D, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.double()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ArgumentError(f"{name} contains NaN or Inf values")
    return x


def _corners(fp, tp):
    """Mask of the points of a monotone polyline where it turns (both ends kept)."""
    distinct = torch.ones(len(fp), dtype=torch.bool)
    distinct[1:] = (fp[1:] != fp[:-1]) | (tp[1:] != tp[:-1])
    fp, tp = fp[distinct], tp[distinct]
    index = torch.nonzero(distinct).reshape(-1)
    if len(fp) <= 2:
        return index
    dx1, dy1 = fp[1:-1] - fp[:-2], tp[1:-1] - tp[:-2]
    dx2, dy2 = fp[2:] - fp[1:-1], tp[2:] - tp[1:-1]
    if int(fp[-1]) * int(tp[-1]) < 2**62:
        straight = dx1 * dy2 == dy1 * dx2  # exact in int64
    else:
        straight = dx1.double() * dy2.double() == dy1.double() * dx2.double()
    keep = torch.ones(len(fp), dtype=torch.bool)
    keep[1:-1] = ~straight
    return index[keep]


def _spread(fp, negatives, count):
    """Indices of at most ``count`` points of an ascending curve: both ends and, for rates
    spread over ``[1 / negatives, 1]``, the last point whose FPR is at most the rate."""
    half = (count - 2) // 2
    log_rates = torch.logspace(math.log10(1.0 / negatives), 0.0, half, dtype=torch.float64)
    linear_rates = torch.linspace(0.0, 1.0, count - half, dtype=torch.float64)[1:-1]
    limits = torch.cat([log_rates, linear_rates]) * negatives
    # the last point with fp <= limit (fp ascending)
    last = torch.searchsorted(fp.double(), limits, right=True) - 1
    chosen = torch.cat([torch.tensor([0, len(fp) - 1]), last.clamp_min(0)])
    return torch.unique(chosen)[:count]
