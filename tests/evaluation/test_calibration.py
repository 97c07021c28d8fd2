"""Threshold calibration: each target's threshold is the best one a brute-force search over every
cut of the dense scores finds; the figures are what MatchFinder then accepts; the threshold is
accepted, reported, saved and loaded; unreachable targets and bad targets are named."""

import math

import numpy as np
import pytest
import torch

from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.evaluation.calibration import Threshold, calibrate
from deepmetric.evaluation.inference import InferenceModel, MatchFinder, threshold_file
from deepmetric.evaluation.knn import ExactKNN


def _sets(seed, dtype=torch.float32, n=50, m=70, d=4, integer=False):
    g = torch.Generator().manual_seed(seed)
    ql, rl = torch.randint(0, 4, (n,), generator=g), torch.randint(0, 4, (m,), generator=g)
    centres = 2 * torch.randn(4, d, generator=g)
    q = centres[ql] + torch.randn(n, d, generator=g)
    r = centres[rl] + torch.randn(m, d, generator=g)
    if integer:
        q, r = torch.round(q), torch.round(r)
    return q.to(dtype), ql, r.to(dtype), rl


def _cuts(values, positive, is_distance):
    """``(tp, fp)`` of every distinct cut of the dense values (accepting the most alike first)."""
    scores = -values if is_distance else values
    cuts = torch.cat([torch.unique(scores), torch.tensor([math.inf], dtype=scores.dtype)])
    accepted = scores[None, :] >= cuts[:, None]
    return (accepted & positive).sum(1).double(), (accepted & ~positive).sum(1).double()


def _accepted(threshold, distance, q, r, positive):
    matches = torch.as_tensor(MatchFinder(distance, threshold).get_matching_pairs(q, r)).reshape(-1)
    return int((matches & positive).sum()), int((matches & ~positive).sum())


DISTANCES = {"cosine": CosineSimilarity, "l2": lambda: LpDistance(normalize_embeddings=False)}


@pytest.mark.parametrize("name", list(DISTANCES))
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize(
    "target", [("fmr", 1e-3), ("fmr", 0.05), ("fmr", 0.3), ("precision", 0.9), ("precision", 0.6),
               ("recall", 0.5), ("recall", 1.0), "best_f1"]
)
def test_each_target_gets_the_best_threshold_of_a_brute_force_search(name, integer, target, dtype):
    q, ql, r, rl = _sets(3, dtype, integer=integer)
    distance = DISTANCES[name]()
    values = distance(q, r).reshape(-1)
    positive = (ql[:, None] == rl[None, :]).reshape(-1)
    tp, fp = _cuts(values, positive, not distance.is_inverted)
    P, N = int(positive.sum()), int((~positive).sum())
    kind = target if isinstance(target, str) else target[0]
    if kind == "precision" and not bool(((tp > 0) & (tp >= target[1] * (tp + fp))).any()):
        with pytest.raises(ValueError, match="no threshold reaches precision"):
            calibrate(q, ql, r, rl, target=target, distance=distance)
        return
    threshold = calibrate(q, ql, r, rl, target=target, distance=distance)
    got = threshold.figures
    # the figures are the counts MatchFinder accepts at this threshold (its own full-matrix scores)
    assert (got["true_positives"], got["false_positives"]) == _accepted(threshold, distance, q, r, positive)
    assert got["positives"] == P and got["negatives"] == N
    assert got["fmr"] == got["false_positives"] / N and got["tpr"] == got["true_positives"] / P
    if kind == "fmr":
        allowed = math.floor(target[1] * N)
        assert got["false_positives"] <= allowed
        assert got["true_positives"] == int(tp[fp <= allowed].max())
    elif kind == "precision":
        ok = (tp > 0) & (tp >= target[1] * (tp + fp) - 1e-9)
        assert got["precision"] >= target[1] - 1e-12
        assert got["true_positives"] == int(tp[ok].max())
    elif kind == "recall":
        ok = tp >= target[1] * P - 1e-9
        assert got["tpr"] >= target[1] - 1e-12
        assert got["false_positives"] == int(fp[ok].min())
    else:
        f1 = 2 * tp.double() / (tp + fp + P).double()
        assert got["f1"] == pytest.approx(float(f1.max()), abs=1e-12)


def test_same_set_leaves_out_each_items_pair_with_itself():
    q, ql, _, _ = _sets(4)
    threshold = calibrate(q, ql, target=("fmr", 0.1))
    n = len(q)
    assert threshold.figures["positives"] + threshold.figures["negatives"] == n * (n - 1)


def test_unreachable_and_bad_targets_are_named():
    q, ql, r, rl = _sets(5)
    # the most alike pair (the same embedding) is a negative: every threshold accepts it, so
    # precision 1.0 is out of reach
    g = torch.Generator().manual_seed(1)
    noise_q, noise_r = torch.randn(60, 3, generator=g), torch.randn(60, 3, generator=g)
    labels_q, labels_r = torch.arange(60) % 2, torch.arange(60) % 2
    noise_r[1] = noise_q[0]
    with pytest.raises(ValueError, match="target \\('precision', 1.0\\): no threshold reaches precision 1"):
        calibrate(noise_q, labels_q, noise_r, labels_r, target=("precision", 1.0))
    with pytest.raises(ValueError, match="target fmr must be in \\(0, 1\\), got 1.5"):
        calibrate(q, ql, r, rl, target=("fmr", 1.5))
    with pytest.raises(ValueError, match="target recall must be a number in \\(0, 1\\]"):
        calibrate(q, ql, r, rl, target=("recall", 0))
    with pytest.raises(ValueError, match="target must be 'best_f1' or \\(name, value\\)"):
        calibrate(q, ql, r, rl, target="eer")
    with pytest.raises(ValueError, match="calibrate needs positive and negative pairs"):
        calibrate(q, torch.zeros(len(q)), r, torch.ones(len(r)))
    with pytest.raises(ValueError, match="reference_labels must have one label per embedding"):
        calibrate(q, ql, r, rl[:-1])


def test_match_finder_accepts_reports_and_checks_a_calibrated_threshold():
    q, ql, r, rl = _sets(6)
    threshold = calibrate(q, ql, r, rl, target=("fmr", 0.05))
    finder = MatchFinder(CosineSimilarity(), threshold=threshold)
    assert finder.calibration is threshold and float(threshold) == threshold.value
    plain = MatchFinder(CosineSimilarity(), threshold=threshold.value)
    assert np.array_equal(finder.get_matching_pairs(q, r), plain.get_matching_pairs(q, r))
    assert np.array_equal(finder.is_match(q[:5], r[:5]), plain.is_match(q[:5], r[:5]))
    assert "calibrated for fmr 0.05" in repr(finder) and "FMR" in threshold.describe()
    with pytest.raises(ValueError, match="calibrated for CosineSimilarity but this MatchFinder uses LpDistance"):
        MatchFinder(LpDistance(), threshold=threshold)
    assert plain.calibration is None


def test_inference_model_calibrates_saves_and_loads_the_threshold(tmp_path):
    q, ql, r, rl = _sets(7)
    trunk = torch.nn.Linear(4, 4)
    model = InferenceModel(trunk, knn_func=ExactKNN(), data_device="cpu")
    threshold = model.calibrate(q, ql, r, rl, target=("recall", 0.8))
    assert model.calibration is threshold and model.match_finder.threshold is threshold
    with torch.no_grad():
        emb_q = torch.nn.functional.normalize(trunk(q), dim=1)
        emb_r = torch.nn.functional.normalize(trunk(r), dim=1)
    assert threshold == calibrate(emb_q, ql, emb_r, rl, target=("recall", 0.8))
    model.train_knn(r)
    path = str(tmp_path / "index.bin")
    model.save_knn_func(path)
    other = InferenceModel(trunk, knn_func=ExactKNN(), data_device="cpu")
    other.load_knn_func(path)
    assert other.calibration == threshold
    # a later save without a calibrated threshold removes the stale one
    model.match_finder.threshold = 0.5
    model.save_knn_func(path)
    assert not (tmp_path / "index.bin.threshold.json").exists() and threshold_file(path).endswith(".threshold.json")


def test_threshold_round_trips_through_a_dict():
    q, ql, r, rl = _sets(8)
    threshold = calibrate(q, ql, r, rl)
    assert threshold.target == "best_f1" and math.isnan(threshold.target_value)
    again = Threshold.from_dict(threshold.to_dict())
    assert again.value == threshold.value and again.figures == threshold.figures
    with pytest.raises(ValueError, match="needs the fields"):
        Threshold.from_dict({"value": 1.0})
