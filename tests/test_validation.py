"""Tests of deepmetric.utils.validation: messages name the argument, expected and received."""

import pytest
import torch

from deepmetric.utils import validation as v


def test_check_embeddings_accepts_valid(dtype):
    v.check_embeddings(torch.zeros(3, 2, dtype=dtype))
    v.check_embeddings(torch.zeros(0, 2), allow_empty=True)


@pytest.mark.parametrize(
    "value, exc, pattern",
    [
        ([[1.0]], TypeError, "ref_emb must be a torch.Tensor, got list"),
        (torch.zeros(3, 2, dtype=torch.long), TypeError, "ref_emb must have a floating-point dtype, got torch.int64"),
        (torch.zeros(3), ValueError, r"ref_emb must be 2-D .* got shape \(3,\)"),
        (torch.zeros(0, 2), ValueError, r"ref_emb is empty \(shape \(0, 2\)\)"),
        (torch.tensor([[0.0, float("nan")], [1.0, 1.0], [float("inf"), 0.0]]), ValueError,
         "ref_emb contains NaN or Inf values \\(in 2 of 3 rows\\)"),
    ],
)
def test_check_embeddings_rejects(value, exc, pattern):
    with pytest.raises(exc, match=pattern):
        v.check_embeddings(value, "ref_emb")


def test_check_labels():
    v.check_labels(torch.tensor([0, 1]), 2)
    v.check_labels(torch.tensor([True, False]), 2)
    with pytest.raises(TypeError, match="ref_labels must be a torch.Tensor, got list"):
        v.check_labels([0, 1], 2, "ref_labels")
    with pytest.raises(TypeError, match="labels must have an integer dtype, got torch.float32"):
        v.check_labels(torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match=r"labels must be 1-D .* got shape \(2, 1\)"):
        v.check_labels(torch.tensor([[0], [1]]), 2)
    with pytest.raises(ValueError, match="ref_labels has 3 entries but ref_emb has 2 rows"):
        v.check_labels(torch.tensor([0, 1, 2]), 2, "ref_labels", "ref_emb")


def test_check_same_width():
    v.check_same_width(torch.zeros(2, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="embeddings has 3 columns, ref_emb has 4"):
        v.check_same_width(torch.zeros(2, 3), torch.zeros(5, 4))


def test_check_loss_inputs():
    emb, labels = torch.zeros(3, 2), torch.tensor([0, 1, 0])
    v.check_loss_inputs(emb, labels, None, None)
    v.check_loss_inputs(emb, None, None, None)
    v.check_loss_inputs(emb, labels, torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="labels has 2 entries but embeddings has 3 rows"):
        v.check_loss_inputs(emb, labels[:2], None, None)
    with pytest.raises(ValueError, match="ref_emb is empty"):
        v.check_loss_inputs(emb, labels, torch.zeros(0, 2), None)
    with pytest.raises(ValueError, match="same width"):
        v.check_loss_inputs(emb, labels, torch.zeros(4, 3), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="ref_labels has 2 entries but ref_emb has 4 rows"):
        v.check_loss_inputs(emb, labels, torch.zeros(4, 2), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="without ref_labels"):
        v.check_loss_inputs(emb, labels, torch.zeros(4, 2), None)
    v.check_loss_inputs(emb, None, torch.zeros(4, 2), None)  # unlabeled reference is fine
