"""NormalizedSoftmaxLoss: hand-computed values, distances, parameters, dtypes, bad inputs and the
reference library as an oracle."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric.distances import DotProductSimilarity, LpDistance
from deepmetric.losses import NormalizedSoftmaxLoss
from deepmetric.reducers import DoNothingReducer, MultipleReducers, SumReducer
from deepmetric.regularizers import LpRegularizer


def with_weights(loss, columns):
    loss.W.data = torch.tensor(columns, dtype=torch.float64).t().contiguous()
    return loss


def test_hand_computed_cosine_logits_over_temperature():
    loss = with_weights(NormalizedSoftmaxLoss(2, 2, temperature=0.5), [[2, 0], [0, -3]])
    emb = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    # cos to e1 = 0.6, to -e2 = -0.8; logits / 0.5
    logits = [1.2, -1.6]
    expected = math.log(math.exp(1.2) + math.exp(-1.6)) - logits[1]
    assert loss(emb, torch.tensor([1])).item() == pytest.approx(expected, rel=1e-12)


def test_a_distance_is_negated_into_logits():
    loss = with_weights(
        NormalizedSoftmaxLoss(2, 2, temperature=1.0, distance=LpDistance(normalize_embeddings=False)),
        [[5, 0], [0, 1]],
    )
    emb = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    # class vectors normalised to e1, e2: both at distance 1, so the logits tie
    torch.testing.assert_close(loss.get_logits(emb), torch.tensor([[-1.0, -1.0]], dtype=torch.float64))
    assert loss(emb, torch.tensor([0])).item() == pytest.approx(math.log(2))


def test_raw_dot_products_keep_the_embedding_norm():
    loss = with_weights(
        NormalizedSoftmaxLoss(2, 2, temperature=2.0, distance=DotProductSimilarity(normalize_embeddings=False)),
        [[3, 0], [0, 1]],
    )
    emb = torch.tensor([[4.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(loss.get_logits(emb), torch.tensor([[2.0, 1.0]], dtype=torch.float64))


def test_parameter_shape_state_dict_and_records():
    loss = NormalizedSoftmaxLoss(5, 3, temperature=0.1)
    assert list(loss.state_dict()) == ["W"] and loss.W.shape == (3, 5)
    assert {"embedding_size", "num_classes", "temperature"} <= set(loss._record_these)
    assert loss.embedding_size == 0 and loss.num_classes == 0  # reference behaviour: never stored
    other = NormalizedSoftmaxLoss(5, 3, temperature=0.1)
    other.load_state_dict(loss.state_dict())
    emb, labels = torch.randn(4, 3), torch.tensor([0, 4, 2, 2])
    torch.testing.assert_close(other(emb, labels), loss(emb, labels))


def test_optimizer_learns_the_class_vectors():
    torch.manual_seed(0)
    loss = NormalizedSoftmaxLoss(3, 4)
    opt = torch.optim.SGD(loss.parameters(), lr=0.01)
    emb, labels = torch.randn(12, 4), torch.arange(12) % 3
    before = loss(emb, labels).item()
    for _ in range(10):
        opt.zero_grad()
        loss(emb, labels).backward()
        opt.step()
    assert loss(emb, labels).item() < before


def test_weight_regularizer_entry():
    loss = NormalizedSoftmaxLoss(3, 4, weight_regularizer=LpRegularizer(), weight_reg_weight=2)
    assert loss.sub_loss_names() == ["loss", "weight_reg_loss"] and isinstance(loss.reducer, MultipleReducers)
    loss.reducer = DoNothingReducer()
    out = loss(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    torch.testing.assert_close(out["weight_reg_loss"]["losses"], LpRegularizer()(loss.W.t()) * 2)


def test_gradcheck_embeddings_and_weights():
    torch.manual_seed(1)
    loss = NormalizedSoftmaxLoss(3, 4, temperature=0.3, reducer=SumReducer()).double()
    emb = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = loss.W.detach().clone().requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 0, 1])

    def loss_of(x, w):
        saved = loss._parameters["W"]
        loss._parameters["W"] = w
        try:
            return loss(x, labels)
        finally:
            loss._parameters["W"] = saved

    assert torch.autograd.gradcheck(loss_of, (emb, w))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_is_finite_and_close_to_float32(half):
    torch.manual_seed(0)
    loss = NormalizedSoftmaxLoss(10, 16, temperature=0.01)  # logits up to 100: exp overflows in half
    emb32, labels = torch.randn(32, 16), torch.randint(0, 10, (32,))
    expected = loss(emb32, labels)
    emb = emb32.to(half).requires_grad_(True)
    value = loss(emb, labels)
    value.backward()
    assert value.dtype == half and loss.W.dtype == half
    assert torch.isfinite(value) and torch.isfinite(emb.grad.float()).all()
    torch.testing.assert_close(value.float(), expected, rtol=0.05, atol=0.5)


def test_bad_inputs_name_the_values():
    loss = NormalizedSoftmaxLoss(3, 4)
    with pytest.raises(ValueError, match=r"\[0, 3\).*got 5"):
        loss(torch.randn(2, 4), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="embedding_size=4.*2 columns"):
        loss(torch.randn(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels are required"):
        loss(torch.randn(2, 4))
    emb = torch.randn(2, 4)
    with pytest.raises(ValueError, match="not supported"):
        loss(emb, torch.tensor([0, 1]), ref_emb=emb.clone(), ref_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes"):
        NormalizedSoftmaxLoss(-1, 4)


DISTANCES = {
    "default": lambda lib: {},
    "lp": lambda lib: {"distance": lib.distances.LpDistance()},
    "raw_dot": lambda lib: {"distance": lib.distances.DotProductSimilarity(normalize_embeddings=False)},
}


@requires_reference
@pytest.mark.parametrize("distance", sorted(DISTANCES))
@pytest.mark.parametrize("use_miner", [False, True], ids=["labels", "miner"])
def test_matches_reference(distance, use_miner, dtype):
    import pytorch_metric_learning as pml
    import pytorch_metric_learning.distances  # noqa: F401
    import pytorch_metric_learning.losses as pml_losses
    from pytorch_metric_learning.miners import TripletMarginMiner

    import deepmetric
    import deepmetric.distances  # noqa: F401

    torch.manual_seed(5)
    ref = pml_losses.NormalizedSoftmaxLoss(7, 6, temperature=0.2, **DISTANCES[distance](pml)).to(dtype)
    torch.manual_seed(5)
    ours = NormalizedSoftmaxLoss(7, 6, temperature=0.2, **DISTANCES[distance](deepmetric)).to(dtype)
    assert torch.equal(ref.W, ours.W)
    g = torch.Generator().manual_seed(6)
    emb = torch.randn(25, 6, generator=g).to(dtype)
    labels = torch.randint(0, 7, (25,), generator=g)
    args = (TripletMarginMiner(margin=0.1)(emb, labels),) if use_miner else ()
    x_ref, x_ours = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    a, b = ref(x_ref, labels, *args), ours(x_ours, labels, *args)
    a.backward()
    b.backward()
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(b, a, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(ours.W.grad, ref.W.grad, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(ours.get_logits(emb), ref.get_logits(emb), rtol=rtol * 10, atol=atol * 10)
