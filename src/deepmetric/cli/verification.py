"""A run's "same or not" decisions: a match threshold calibrated on the validation items (training
classes only, never a test class), and for each test section the verification figures over every
pair of its items (ROC AUC, EER, TAR at FAR 1e-3, FNMR at FMR 1e-3) with what that threshold
achieves there, plus the data of the report's ROC and score-histogram picture.

Scores are cosine similarities, the default of ``MatchFinder`` and ``calibrate``: a pair matches
when its similarity is at least the threshold.
"""

import torch

from ..distances import CosineSimilarity
from ..evaluation.calibration import calibrate
from ..evaluation.verification import PairScores, figures, verification_counts
from .config import threshold_target

METRICS = ("roc_auc", "eer", "tar_at_far_1e-3", "fnmr_at_fmr_1e-3")
HISTOGRAM_BINS = 100
ROC_POINTS = 200
# Query rows per block of the histograms' similarity matrix.
_BLOCK_ROWS = 1024


def calibrated_threshold(validation_embeddings, validation_labels, config, relation=None):
    """``(threshold, why_not)``: the :class:`~deepmetric.evaluation.calibration.Threshold` for
    ``evaluation.threshold`` on the validation items, or ``(None, reason)`` when there are no
    validation items or no threshold reaches the target there. ``relation`` decides which pairs
    are positive (default: equal labels), e.g. "shares a class" for multi-hot labels."""
    if validation_embeddings is None:
        return None, "no validation items (evaluation.validation_fraction is 0 or the classes are too small)"
    target = threshold_target(config["evaluation"]["threshold"])
    try:
        labels = _labels(validation_labels)
        threshold = calibrate(
            validation_embeddings, labels, target=target, distance=CosineSimilarity(),
            label_comparison_fn=relation,
        )
        return threshold, None
    except ValueError as err:
        return None, " ".join(str(err).split())


def section_figures(embeddings, labels, threshold, relation=None):
    """``(figures, roc)`` of every pair of distinct items of a section: ``figures`` holds
    :data:`METRICS` and, given a threshold, ``at_threshold`` (its FMR, FNMR, precision, recall,
    F1 and counts here); ``roc`` is ``(fpr, tpr)`` at most :data:`ROC_POINTS` points. Both are None
    when the section has no positive or no negative pair. ``relation`` as in
    :func:`calibrated_threshold`."""
    labels = _labels(labels)
    try:
        counts = verification_counts(
            embeddings, labels, distance=CosineSimilarity(), label_comparison_fn=relation
        )
        counts.require_both_kinds("verification figures")
    except ValueError:
        return None, None
    out = figures(counts, METRICS)
    if threshold is not None:
        scores = PairScores(embeddings, labels, distance=CosineSimilarity(), label_comparison_fn=relation)
        point = scores.operating_points([threshold.value])[0].figures()
        point["fmr"] = point.pop("fpr")
        out["at_threshold"] = point
    fpr, tpr, _ = counts.roc_curve(max_points=ROC_POINTS)
    return out, (fpr.tolist(), tpr.tolist())


def score_histograms(embeddings, labels, bins=HISTOGRAM_BINS, relation=None):
    """``(edges, positive_counts, negative_counts)``: how the cosine similarities of same-class
    and different-class pairs of distinct items spread over ``bins`` equal bins of [-1, 1],
    computed a block of rows at a time (memory ``O(block x N)``); ``relation`` as in
    :func:`calibrated_threshold`."""
    x = torch.nn.functional.normalize(embeddings.detach().float(), dim=1)
    labels = _labels(labels)
    positive = torch.zeros(bins, dtype=torch.float64)
    negative = torch.zeros(bins, dtype=torch.float64)
    for start in range(0, len(x), _BLOCK_ROWS):
        sims = (x[start : start + _BLOCK_ROWS] @ x.t()).clamp_(-1, 1)
        block = labels[start : start + _BLOCK_ROWS, None]
        same = block == labels[None, :] if relation is None else relation(block, labels[None, :]).bool()
        rows = torch.arange(sims.shape[0])
        own = torch.zeros_like(same)
        own[rows, rows + start] = True
        positive += torch.histc(sims[same & ~own], bins, -1, 1).double()
        negative += torch.histc(sims[~same], bins, -1, 1).double()
    edges = torch.linspace(-1, 1, bins + 1)
    return edges.tolist(), positive.tolist(), negative.tolist()


def _labels(labels):
    labels = torch.as_tensor(labels)
    return labels if labels.dim() == 2 else labels.reshape(-1)  # multi-hot rows stay rows
