"""Tests of deepmetric.utils.validation: messages name the argument, expected and received."""

import pytest
import torch

from deepmetric.utils import validation as v
from deepmetric.utils.errors import IndexArgumentError


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
    v.check_labels(torch.tensor([0.0, 1.5]), 2)  # compared for equality only, like the reference
    with pytest.raises(TypeError, match="labels must have a real dtype, got torch.complex64"):
        v.check_labels(torch.tensor([0j, 1j]), 2)
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
    v.check_loss_inputs(emb, labels, torch.zeros(4, 2), None)  # default_ref_labels decides
    v.check_loss_inputs(emb, None, torch.zeros(4, 2), None)  # unlabeled reference is fine


def test_check_loss_inputs_defers_the_number_of_dimensions_to_the_distance():
    from deepmetric.distances import BaseDistance, LpDistance

    class AnyShape(BaseDistance):
        def check_shapes(self, query_emb, ref_emb):
            pass

    emb = torch.zeros(4, 3, 2)
    v.check_loss_inputs(emb, torch.tensor([0, 1, 0, 1]), None, None, distance=AnyShape())
    with pytest.raises(ValueError, match=r"LpDistance cannot compare these embeddings: query_emb must be 2-D .* got shape \(4, 3, 2\)"):
        v.check_loss_inputs(emb, None, None, None, distance=LpDistance())
    with pytest.raises(ValueError, match="2-D"):
        v.check_loss_inputs(emb, None, None, None)  # no distance to ask: 2-D
    with pytest.raises(ValueError, match=r"embeddings has shape \(4, 3, 2\), ref_emb has shape"):
        v.check_loss_inputs(emb, None, torch.zeros(4, 2, 2), None, distance=AnyShape())


def test_default_ref_labels():
    labels, ref = torch.tensor([0, 1, 0]), torch.zeros(3, 2)
    given = torch.tensor([1, 1, 0])
    assert v.default_ref_labels(labels, ref, given) is given
    assert v.default_ref_labels(labels, None, None) is None
    assert v.default_ref_labels(None, ref, None) is None
    with pytest.warns(UserWarning, match="without ref_labels"):
        assert v.default_ref_labels(labels, ref, None) is labels
    with pytest.raises(IndexError, match="ref_emb has 4 rows and labels has 3 entries"):
        v.default_ref_labels(labels, torch.zeros(4, 2), None)


def test_check_index_labels():
    v.check_index_labels("Loss", torch.tensor([0, 2]))
    v.check_index_labels("Loss", None)
    for bad in (torch.tensor([0.0, 1.0]), torch.tensor([True, False])):
        with pytest.raises(IndexError, match="Loss uses labels as class indices, so they must have"):
            v.check_index_labels("Loss", bad)


_t = torch.tensor


@pytest.mark.parametrize(
    "indices, pattern",
    [
        (_t([0, 1]), "must be a tuple of 3 .* got Tensor"),
        ((_t([0]), _t([1])), "got a tuple of 2"),
        ((_t([0, 1]), _t([1, 5]), _t([2, 3])), r"entry 'p' holds index 5, out of range \[0, 5\) for the 5 rows of ref_emb"),
        ((_t([0, -1]), _t([1, 0]), _t([2, 3])), r"entry 'a' holds index -1, out of range \[0, 4\) for the 4 rows of embeddings"),
        ((_t([0, 1, 2]), _t([1, 0]), _t([2, 3])), "entries 'a' and 'p' must have the same length, got 3 and 2"),
        ((_t([0]), _t([1]), _t([0, 1]), _t([2])), "entries 'a2' and 'n' must have the same length"),
        ((_t([0.0]), _t([1]), _t([2])), "entry 'a' must be an integer tensor, got torch.float32"),
        ((_t([0]), [1], _t([2])), "entry 'p' must be an integer tensor, got list"),
        ((_t([[0]]), _t([1]), _t([2])), r"entry 'a' must be 1-D, got shape \(1, 1\)"),
    ],
)
def test_check_indices_tuple_rejects(indices, pattern):
    with pytest.raises(IndexArgumentError, match=pattern) as info:
        v.check_indices_tuple(indices, 4, 5)
    # what torch raises for the same mistakes, and what the reference's unpacking raises
    assert isinstance(info.value, IndexError) and isinstance(info.value, RuntimeError)
    assert isinstance(info.value, ValueError)


def test_check_indices_tuple_passes_valid_tuples_through():
    t = torch.tensor
    a, p, n = v.check_indices_tuple((t([0, 3]), t([4, 2]), t([3, 4])), 4, 5)
    assert a.tolist() == [0, 3] and p.tolist() == [4, 2] and n.tolist() == [3, 4]
    out = v.check_indices_tuple([t([0]), t([1]), t([2])], 4, 5)
    assert isinstance(out, list)
    # unstructured: lengths may differ and any number of lists index the embeddings
    assert len(v.check_indices_tuple((t([0]), t([1, 2])), 4, 5, structured=False)) == 2
    with pytest.raises(IndexError, match=r"index 4, out of range \[0, 4\) for the 4 rows of embeddings"):
        v.check_indices_tuple((t([0]), t([4])), 4, 5, structured=False)
