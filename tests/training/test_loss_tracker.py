"""Tests of deepmetric.utils.loss_tracker.LossTracker."""

import pytest

from deepmetric.utils.loss_tracker import LossTracker


def test_total_loss_appended_in_place():
    names = ["metric_loss", "classifier_loss"]
    tracker = LossTracker(names)
    assert names == ["metric_loss", "classifier_loss", "total_loss"]
    assert tracker.losses == {"metric_loss": 0, "classifier_loss": 0, "total_loss": 0}
    assert tracker.loss_weights == {"metric_loss": 1, "classifier_loss": 1, "total_loss": 1}
    LossTracker(names)
    assert names.count("total_loss") == 1  # not appended twice


def test_update_weights_and_sums():
    tracker = LossTracker(["metric_loss", "classifier_loss"])
    tracker.losses["metric_loss"] = 2.0
    tracker.losses["classifier_loss"] = 3.0
    tracker.update({"classifier_loss": 0.5})
    # metric weight defaults to 1: 2*1 + 3*0.5 = 3.5
    assert tracker.loss_weights == {"metric_loss": 1.0, "classifier_loss": 0.5, "total_loss": 1.0}
    assert tracker.losses == {"metric_loss": 2.0, "classifier_loss": 1.5, "total_loss": 3.5}


def test_exclude_loss_arguments():
    tracker = LossTracker(["a", "b"])
    tracker.losses.update(a=1.0, b=4.0)
    tracker.set_loss_weights({"a": 3.0, "b": 2.0})
    tracker.weight_the_losses(exclude_loss=("total_loss", "b"))
    assert tracker.losses["a"] == 3.0 and tracker.losses["b"] == 4.0
    tracker.get_total_loss(exclude_loss=("total_loss", "a"))
    assert tracker.losses["total_loss"] == 4.0


def test_works_with_tensors():
    torch = pytest.importorskip("torch")
    tracker = LossTracker(["a"])
    x = torch.tensor(2.0, requires_grad=True)
    tracker.losses["a"] = x * 1
    tracker.update({"a": 0.25})
    tracker.losses["total_loss"].backward()
    assert x.grad.item() == 0.25
