"""SelfSupervisedLoss: labels built from the view index, symmetric and one-sided modes, supported
losses, bad inputs and the reference library as an oracle."""

import pytest
import torch

import deepmetric.losses as our_losses
from conftest import requires_reference, tolerance
from deepmetric.distances import CosineSimilarity
from deepmetric.losses import ContrastiveLoss, CosFaceLoss, SelfSupervisedLoss, TripletMarginLoss


class Recorder(torch.nn.Module):
    """Stands in for a supported loss and records how it is called."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return torch.tensor(0.0)


def recording_wrapper(symmetric):
    wrapper = SelfSupervisedLoss(TripletMarginLoss(), symmetric=symmetric)
    wrapper.loss = Recorder()
    return wrapper


def test_symmetric_mode_stacks_both_views_with_shared_labels():
    wrapper = recording_wrapper(True)
    emb, ref = torch.randn(3, 2), torch.randn(3, 2)
    wrapper(emb, ref)
    (args, kwargs), = wrapper.loss.calls
    torch.testing.assert_close(args[0], torch.cat([emb, ref]))
    assert args[1].tolist() == [0, 1, 2, 0, 1, 2] and kwargs == {}


def test_one_sided_mode_uses_ref_emb_as_the_reference_set():
    wrapper = recording_wrapper(False)
    emb, ref = torch.randn(3, 2), torch.randn(3, 2)
    wrapper(emb, ref)
    (args, kwargs), = wrapper.loss.calls
    assert args == () and kwargs["embeddings"] is emb and kwargs["ref_emb"] is ref
    assert kwargs["labels"].tolist() == [0, 1, 2] and kwargs["ref_labels"].tolist() == [0, 1, 2]
    assert kwargs["labels"] is not kwargs["ref_labels"]  # so no diagonal is removed


def test_symmetric_value_equals_the_wrapped_loss_on_stacked_views():
    torch.manual_seed(0)
    emb, ref = torch.randn(4, 3), torch.randn(4, 3)
    inner = ContrastiveLoss(pos_margin=1, neg_margin=0, distance=CosineSimilarity())
    expected = inner(torch.cat([emb, ref]), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    torch.testing.assert_close(SelfSupervisedLoss(inner)(emb, ref), expected)


def test_gradients_reach_both_views():
    emb, ref = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    SelfSupervisedLoss(TripletMarginLoss(margin=5), symmetric=False)(emb, ref).backward()
    assert emb.grad.abs().sum() > 0 and ref.grad.abs().sum() > 0


def test_attributes_and_supported_losses():
    inner = TripletMarginLoss()
    wrapper = SelfSupervisedLoss(inner, symmetric=False)
    assert wrapper.loss is inner and wrapper.symmetric is False
    assert len(SelfSupervisedLoss.supported_losses()) == 13
    assert SelfSupervisedLoss(inner).symmetric is True


def test_unsupported_loss_is_rejected_by_name():
    with pytest.raises(ValueError, match="not supported for CosFaceLoss"):
        SelfSupervisedLoss(CosFaceLoss(3, 2))

    class MyTriplet(TripletMarginLoss):
        pass

    with pytest.raises(Exception, match="MyTriplet"):  # exact class names, as in the reference
        SelfSupervisedLoss(MyTriplet())


def test_views_must_have_the_same_shape():
    wrapper = SelfSupervisedLoss(TripletMarginLoss())
    with pytest.raises(ValueError, match=r"\(3, 2\) and \(4, 2\)"):
        wrapper(torch.randn(3, 2), torch.randn(4, 2))
    with pytest.raises(TypeError, match="ref_emb"):
        wrapper(torch.randn(3, 2), [[0.0, 1.0]])


WRAPPED = [name for name in SelfSupervisedLoss.supported_losses() if hasattr(our_losses, name)]
# None of these draws random tuples by default, so both libraries see the same pairs.


@requires_reference
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("name", WRAPPED)
def test_matches_reference(name, symmetric, dtype):
    import pytorch_metric_learning.losses as pml_losses

    g = torch.Generator().manual_seed(3)
    emb = torch.randn(10, 5, generator=g).to(dtype)
    ref = (emb + 0.5 * torch.randn(10, 5, generator=g).to(dtype))
    results = []
    for lib in (pml_losses, our_losses):
        wrapper = lib.SelfSupervisedLoss(getattr(lib, name)(), symmetric=symmetric)
        a, b = emb.clone().requires_grad_(True), ref.clone().requires_grad_(True)
        value = wrapper(a, b)
        value.backward()
        results.append((value, a.grad, b.grad))
    rtol, atol = tolerance(dtype)
    for ours, theirs in zip(results[1], results[0]):
        torch.testing.assert_close(ours, theirs, rtol=rtol * 10, atol=atol * 10)
