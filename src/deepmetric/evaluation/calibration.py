"""Threshold calibration: the match threshold that meets a target on labelled pairs.

:func:`calibrate` scores every (query, reference) pair (exactly, block by block, as
:mod:`.verification` does, without the N x M matrix) and picks the threshold ``t`` for one target:

* ``("fmr", r)``: the loosest threshold whose false match rate is at most ``r``: it accepts at
  most ``F = floor(r N)`` of the ``N`` negative pairs. With the negatives sorted from the most
  alike, ``t`` lies just above the ``(F + 1)``-th one, so it accepts the ``F`` above it (fewer
  when some of them tie with it) and as many positives as any such threshold can.
* ``("precision", p)``: the loosest threshold with ``TP / (TP + FP) >= p`` (the highest recall at
  that precision); unreachable when no threshold is that precise.
* ``("recall", r)``: the strictest threshold with ``TP / P >= r`` (the fewest false matches).
* ``"best_f1"``: the threshold of the highest ``F1 = 2 TP / (TP + FP + P)``.

Except for ``fmr``, the threshold is a positive pair's score ``u``: every pair scoring at least
``u`` is accepted. The value reported is halfway between the scores on either side of the cut
(``u`` and the next score below it; for ``fmr`` the ``(F + 1)``-th negative and the next score
above it), computed in the scores' dtype, so that a score computed in another order, which can
differ in the last bit, falls on the same side. The achieved figures are then counted over every
pair at that threshold in one more pass.

Thresholds are in the distance's own units: a pair matches when ``similarity >= t`` or
``distance <= t``, the rule of :class:`~deepmetric.evaluation.inference.MatchFinder`, which
accepts the :class:`Threshold` this returns in place of a number.
"""

import dataclasses
import json
import math

import torch

from ..distances import CosineSimilarity
from ..utils.errors import ArgumentError
from .pair_counts import check_rate
from .verification import PairScores

TARGETS = ("fmr", "precision", "recall", "best_f1")


@dataclasses.dataclass(frozen=True)
class Threshold:
    """A calibrated match threshold with what it achieved on the calibration pairs.

    ``float(threshold)`` is ``value``. ``figures`` holds ``fmr`` (false match rate), ``fnmr``,
    ``tpr`` (= recall), ``precision``, ``f1`` and the counts ``true_positives``,
    ``false_positives``, ``positives``, ``negatives``.
    """

    value: float
    target: str
    target_value: float  # NaN for best_f1
    distance: str  # the distance's class name
    is_distance: bool  # match when value <= threshold (else >=)
    figures: dict

    def __float__(self):
        return float(self.value)

    def matches(self, values):
        """Bool tensor: which distance ``values`` are matches at this threshold."""
        return values <= self.value if self.is_distance else values >= self.value

    def describe(self):
        """One line: the threshold, its target and what it achieved."""
        goal = self.target if self.target == "best_f1" else f"{self.target} {self.target_value:g}"
        f = self.figures
        sign = "<=" if self.is_distance else ">="
        return (
            f"match when {self.distance} {sign} {self.value:.9g} (calibrated for {goal}): "
            f"FMR {f['fmr']:.6g}, FNMR {f['fnmr']:.6g}, precision {f['precision']:.6g}, "
            f"recall {f['tpr']:.6g}, F1 {f['f1']:.6g} over {f['positives']} positive and "
            f"{f['negatives']} negative pairs"
        )

    def to_dict(self):
        out = dataclasses.asdict(self)
        out["target_value"] = None if math.isnan(self.target_value) else self.target_value
        return out

    @classmethod
    def from_dict(cls, state):
        """The :class:`Threshold` of :meth:`to_dict`'s output; a ValueError names what is missing."""
        names = [field.name for field in dataclasses.fields(cls)]
        if not isinstance(state, dict) or any(name not in state for name in names):
            raise ArgumentError(f"a calibrated threshold needs the fields {names}, got {state!r}")
        values = {name: state[name] for name in names}
        values["target_value"] = math.nan if values["target_value"] is None else float(values["target_value"])
        values["value"] = float(values["value"])
        return cls(**values)

    def save(self, filename):
        with open(filename, "w") as f:
            json.dump(self.to_dict(), f, indent=1)

    @classmethod
    def load(cls, filename):
        with open(filename) as f:
            return cls.from_dict(json.load(f))


def calibrate(
    query,
    query_labels,
    reference=None,
    reference_labels=None,
    target="best_f1",
    ref_includes_query=False,
    distance=None,
    label_comparison_fn=None,
    memory_budget_bytes=None,
):
    """The :class:`Threshold` meeting ``target`` on every (query, reference) pair.

    Args:
        query, query_labels, reference, reference_labels, ref_includes_query,
            label_comparison_fn, memory_budget_bytes: as
            :func:`~deepmetric.evaluation.verification.verification_counts` (``reference=None``
            pairs the query set with itself, leaving out each item's pair with itself).
        target: ``"best_f1"``, or ``(name, value)`` with ``name`` one of ``"fmr"`` (value in
            (0, 1)), ``"precision"`` or ``"recall"`` (value in (0, 1]).
        distance: the distance the threshold is for (default: ``CosineSimilarity()``, the
            default of ``MatchFinder``).

    Raises a ValueError naming the target when no threshold reaches it, or when the pairs hold
    no positive or no negative pair.
    """
    kind, goal = _parse_target(target)
    distance = CosineSimilarity() if distance is None else distance
    source = PairScores(
        query, query_labels, reference, reference_labels, ref_includes_query, distance,
        label_comparison_fn, memory_budget_bytes,
    )
    counts = source.counts()
    counts.require_both_kinds("calibrate")
    if kind == "fmr":
        score = _fmr_cut(source, counts, goal)
    else:
        score = _positive_cut(source, counts, _positive_index(counts, kind, goal, target))
    value = counts.threshold_of(score)
    point = source.operating_points([value])[0]
    figures = point.figures()
    figures["fmr"] = figures.pop("fpr")
    figures.pop("threshold")
    return Threshold(value, kind, goal, type(distance).__name__, counts.is_distance, figures)


def _parse_target(target):
    if target == "best_f1":
        return "best_f1", math.nan
    if not (isinstance(target, (tuple, list)) and len(target) == 2 and target[0] in TARGETS[:3]):
        raise ArgumentError(
            f"target must be 'best_f1' or (name, value) with name one of {TARGETS[:3]}, got {target!r}"
        )
    name, value = target
    if name == "fmr":
        return name, check_rate(value, "target fmr")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ArgumentError(f"target {name} must be a number in (0, 1], got {value!r}")
    return name, float(value)


def _positive_index(counts, kind, goal, target):
    """Index ``i`` of the positive score ``u_i`` that is the cut (accept scores ``>= u_i``)."""
    tp, fp = counts.tp_at.double(), counts.fp_at.double()
    if kind == "best_f1":
        return counts.best_f1_index()
    if kind == "recall":
        # TP_i decreases with i: the largest i still recalling enough
        return int(torch.nonzero(tp / counts.num_positives >= goal - 1e-12).reshape(-1)[-1])
    feasible = torch.nonzero(tp / (tp + fp) >= goal - 1e-12).reshape(-1)
    if len(feasible) == 0:
        best = float((tp / (tp + fp)).max())
        raise ArgumentError(
            f"target {target!r}: no threshold reaches precision {goal:g} on these pairs (the "
            f"highest precision of any threshold is {best:.6g})"
        )
    return int(feasible[0])


def _positive_cut(source, counts, i):
    """A score accepting exactly the pairs ``>= u_i``: halfway to the next score below."""
    upper = counts.values[i]
    below = [counts.values[i - 1]] if i > 0 else []
    accepted_negatives = int(counts.fp_at[i])
    if accepted_negatives < counts.num_negatives:
        below.append(_negative(source, accepted_negatives + 1))
    if not below:
        return float(upper) - 1.0  # everything is accepted: any lower score will do
    return _between(max(below), upper)


def _fmr_cut(source, counts, rate):
    """A score accepting at most ``floor(rate N)`` negatives and every positive above them."""
    allowed = math.floor(rate * counts.num_negatives)
    low, above = source.negative_at_rank(allowed + 1)
    low = torch.tensor(low, dtype=counts.score_dtype)
    # the next score above the cut: a negative (the most alike one below the accepted ones) or
    # the lowest positive above it
    higher = [counts.values[counts.values > low][:1]]
    if above > 0:
        higher.append(_negative(source, above).reshape(1))
    higher = torch.cat(higher)
    if len(higher) == 0:
        return float(low) + 1.0  # nothing above: any higher score will do
    return _between(low, higher.min())


def _negative(source, rank):
    """The ``rank``-th most alike negative score (1-based), in the scores' dtype."""
    value, _ = source.negative_at_rank(rank)
    return torch.tensor(value, dtype=source.dtype)


def _between(low, high):
    """A score of the scores' dtype in ``(low, high]``, halfway when there is room."""
    low, high = torch.as_tensor(low), torch.as_tensor(high).to(torch.as_tensor(low).dtype)
    middle = low + (high - low) / 2
    return float(middle if low < middle <= high else high)
