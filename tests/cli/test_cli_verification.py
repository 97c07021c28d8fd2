"""A run's verification figures: the threshold calibrated on the validation items, every section's
ROC AUC / EER / TAR@FAR / FNMR@FMR and what the threshold achieves there (checked against pair
counts computed here from the saved embeddings), the report's picture, and re-ranking from the config."""

import json

import numpy as np
import pytest
import torch
from _cli_helpers import DIGITS_CONFIG, digits_config, write_config

from deepmetric.cli import verification
from deepmetric.cli.config import ConfigError, load_config
from deepmetric.cli.main import main
from deepmetric.cli.pipeline import retrieval_metrics
from deepmetric.evaluation.calibration import Threshold

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verification")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPMETRIC_PROJECTION", "pca")
        assert main(["train", digits_config(folder, 2), "--output", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def all_pair_scores(path):
    saved = torch.load(path)
    x = torch.nn.functional.normalize(saved["embeddings"].double(), dim=1)
    labels = saved["labels"]
    sims = x @ x.t()
    same = labels[:, None] == labels[None, :]
    distinct = ~torch.eye(len(labels), dtype=torch.bool)
    return sims[same & distinct], sims[~same]


def test_section_figures_are_those_of_every_pair_of_the_saved_embeddings(run):
    from sklearn.metrics import roc_auc_score

    metrics = json.loads((run / "metrics.json").read_text())
    figures = metrics["held_out"]["verification"]["trained"]
    positive, negative = all_pair_scores(run / "held_out" / "embeddings.pt")
    truth = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    auc = roc_auc_score(truth, torch.cat([positive, negative]).numpy())
    assert figures["roc_auc"] == pytest.approx(auc, abs=1e-6)
    assert 0 < figures["eer"] < 0.5
    assert figures["tar_at_far_1e-3"] == pytest.approx(1 - figures["fnmr_at_fmr_1e-3"])
    at = figures["at_threshold"]
    t = metrics["threshold"]["value"]
    # the saved embeddings are float32: compare in float32 as the run did, allow a tie at t
    assert abs(at["true_positives"] - int((positive.float() >= t).sum())) <= 2
    assert abs(at["false_positives"] - int((negative.float() >= t).sum())) <= 2
    assert at["positives"] == len(positive) and at["negatives"] == len(negative)
    assert at["fmr"] == pytest.approx(at["false_positives"] / len(negative))
    baseline = metrics["held_out"]["verification"]["baseline_raw_inputs"]
    assert set(baseline) == set(verification.METRICS)
    assert figures["roc_auc"] > baseline["roc_auc"]


def test_the_threshold_is_calibrated_on_validation_items_and_saved_for_match_finder(run):
    from deepmetric.utils.inference import MatchFinder

    metrics = json.loads((run / "metrics.json").read_text())
    threshold = Threshold.load(str(run / "threshold.json"))
    assert threshold.value == metrics["threshold"]["value"]
    assert threshold.target == "best_f1" and threshold.distance == "CosineSimilarity"
    # calibrated on the validation items, not on the section: its own counts differ
    assert threshold.figures["positives"] != metrics["held_out"]["verification"]["trained"]["at_threshold"]["positives"]
    finder = MatchFinder(threshold=threshold)
    x = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
    assert bool(finder.is_match(x[:1], x[:1]))


def test_the_report_shows_the_verification_section_and_picture(run):
    pytest.importorskip("matplotlib")
    text = (run / "report.md").read_text()
    assert "### Same or not: verification over every pair" in text
    assert "![verification](held_out/verification.png)" in text
    assert "calibrated on the validation items for best_f1" in text
    assert (run / "held_out" / "verification.png").stat().st_size > 10_000


def test_score_histograms_count_each_pair_of_distinct_items_once_per_direction():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = [0, 0, 1, 1]
    edges, positive, negative = verification.score_histograms(x, labels, bins=4)
    assert edges == pytest.approx([-1, -0.5, 0, 0.5, 1])
    # same class: (0,1) and (1,0) at 1; (2,3) and (3,2) at 0
    assert positive == [0, 0, 2, 2]
    # different class: 0-2, 1-2 at 0 (x2 directions); 0-3, 1-3 at -1 (x2)
    assert negative == [4, 0, 4, 0]


def test_without_validation_items_or_a_reachable_target_there_is_no_threshold_and_a_reason():
    config = load_config()
    threshold, why = verification.calibrated_threshold(None, None, config)
    assert threshold is None and "no validation items" in why
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    config["evaluation"]["threshold"] = {"precision": 1.0}
    threshold, why = verification.calibrated_threshold(x, [0, 0, 1, 1], config)
    assert threshold is not None and threshold.figures["precision"] == 1.0
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # each class on both sides
    threshold, why = verification.calibrated_threshold(mixed, [0, 0, 1, 1], config)
    assert threshold is None and "precision" in why


def test_a_section_without_negative_pairs_has_no_figures():
    figures, roc = verification.section_figures(torch.randn(4, 3), [1, 1, 1, 1], None)
    assert figures is None and roc is None


def test_rerank_from_the_config_is_the_calculators_postprocess(tmp_path):
    from deepmetric.evaluation.accuracy_calculator import AccuracyCalculator
    from deepmetric.evaluation.rerank import KReciprocalRerank

    config = load_config(write_config(tmp_path, DIGITS_CONFIG, epochs=1))
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(8)
    x = torch.randn(6, 8, generator=g)[labels] + 0.9 * torch.randn(48, 8, generator=g)
    plain = retrieval_metrics(x, labels, config)
    config["evaluation"]["rerank"] = {"name": "KReciprocalRerank", "args": {"k1": 6, "k2": 3, "lambda_value": 0.3}}
    reranked = retrieval_metrics(x, labels, config)
    direct = AccuracyCalculator(
        include=tuple(config["evaluation"]["metrics"]), k=None,
        postprocess=KReciprocalRerank(k1=6, k2=3, lambda_value=0.3),
    ).get_accuracy(x, labels, x, labels, ref_includes_query=True)
    assert reranked == {k: float(direct[k]) for k in reranked}
    assert reranked != plain


def test_rerank_names_and_arguments_are_checked(tmp_path):
    config = load_config(write_config(tmp_path, DIGITS_CONFIG, epochs=1))
    config["evaluation"]["rerank"] = {"name": "KReciprocalRerak"}
    with pytest.raises(ConfigError, match="did you mean 'KReciprocalRerank'") as err:
        retrieval_metrics(torch.randn(8, 2), torch.arange(8) % 2, config)
    assert err.value.key == "evaluation.rerank.name"
    config["evaluation"]["rerank"] = {"name": "QueryExpansion", "args": {"m": 2}}
    with pytest.raises(ConfigError, match="has no argument 'm'") as err:
        retrieval_metrics(torch.randn(8, 2), torch.arange(8) % 2, config)
    assert err.value.key == "evaluation.rerank.args.m"


def test_the_console_summary_gives_the_verification_line_and_the_threshold(run):
    from deepmetric.cli.pipeline import summary

    metrics = json.loads((run / "metrics.json").read_text())
    config = load_config(str(run / "config.yaml"))
    text = summary(metrics, config)
    trained = metrics["held_out"]["verification"]["trained"]
    assert f"every pair: ROC AUC {trained['roc_auc']:.4f}, EER {trained['eer']:.4f}" in text
    assert f"FMR {trained['at_threshold']['fmr']:.4g}" in text
    assert f"match threshold: cosine similarity >= {metrics['threshold']['value']:.4f}" in text


def test_verification_names_are_metrics_the_config_may_list_and_select(tmp_path):
    from sklearn.metrics import roc_auc_score

    config = load_config(write_config(tmp_path, DIGITS_CONFIG, epochs=1))
    config["evaluation"]["metrics"] = ["precision_at_1", "roc_auc"]
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(4).repeat_interleave(6)
    x = torch.randn(4, 5, generator=g)[labels] + torch.randn(24, 5, generator=g)
    x = torch.nn.functional.normalize(x, dim=1)  # unit rows: L2 and cosine order pairs alike
    result = retrieval_metrics(x, labels, config)
    sims = (x @ x.t()).double()
    same = labels[:, None] == labels[None, :]
    distinct = ~torch.eye(24, dtype=torch.bool)
    scores = torch.cat([sims[same & distinct], sims[~same]]).numpy()
    truth = np.r_[np.ones(int((same & distinct).sum())), np.zeros(int((~same).sum()))]
    assert list(result) == ["precision_at_1", "roc_auc"]
    assert result["roc_auc"] == pytest.approx(roc_auc_score(truth, scores), abs=1e-6)
