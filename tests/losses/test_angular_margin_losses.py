"""The angular-margin classification family: LargeMarginSoftmaxLoss, SphereFaceLoss, ArcFaceLoss,
CosFaceLoss and SubCenterArcFaceLoss. Hand-computed tiny cases, the reference library as an
oracle (values and gradients of embeddings and W), parameters, dtypes and bad inputs."""

import math

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric import losses
from deepmetric.distances import CosineSimilarity, LpDistance
from deepmetric.reducers import DoNothingReducer, MultipleReducers, SumReducer
from deepmetric.regularizers import RegularFaceRegularizer
from deepmetric.utils import common_functions as c_f
from deepmetric.utils import loss_and_miner_utils as lmu

FAMILY = ["LargeMarginSoftmaxLoss", "SphereFaceLoss", "ArcFaceLoss", "CosFaceLoss", "SubCenterArcFaceLoss"]
FAMILY = [name for name in FAMILY if hasattr(losses, name)]


def build(lib, name, num_classes, embedding_size, **kwargs):
    cls = getattr(lib.losses if hasattr(lib, "losses") else lib, name)
    if name == "SubCenterArcFaceLoss":
        return cls(num_classes=num_classes, embedding_size=embedding_size, **kwargs)
    return cls(num_classes, embedding_size, **kwargs)


def set_weights(loss, columns, dtype=torch.float64):
    """W from a list of class vectors (one per column)."""
    loss.W.data = torch.tensor(columns, dtype=dtype).t().contiguous()
    return loss


def cross_entropy(logits, target):
    return math.log(sum(math.exp(z) for z in logits)) - logits[target]


def unit(angle_deg, norm=1.0):
    a = math.radians(angle_deg)
    return [norm * math.cos(a), norm * math.sin(a)]


# ----------------------------------------------------------------------------------------------
# hand-computed values


def test_arcface_adds_the_angle_margin_to_the_target_only():
    loss = set_weights(losses.ArcFaceLoss(2, 2, margin=30, scale=2), [[1, 0], [0, 1]])
    emb = torch.tensor([unit(20, norm=5.0)], dtype=torch.float64)
    value = loss(emb, torch.tensor([0])).item()
    # target angle 20 deg -> cos(50 deg); the other class keeps cos(70 deg); all times scale 2
    expected = cross_entropy([2 * math.cos(math.radians(50)), 2 * math.cos(math.radians(70))], 0)
    assert value == pytest.approx(expected, rel=1e-12)


def test_arcface_beyond_pi_minus_margin_uses_the_linear_fallback():
    loss = set_weights(losses.ArcFaceLoss(2, 2, margin=30, scale=1), [[1, 0], [0, 1]])
    emb = torch.tensor([unit(170)], dtype=torch.float64)  # 170 > 180 - 30
    m = math.radians(30)
    target = math.cos(math.radians(170)) - m * math.sin(m)
    expected = cross_entropy([target, math.cos(math.radians(80))], 0)
    assert loss(emb, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-12)


def test_cosface_subtracts_the_margin_from_the_target_cosine():
    loss = set_weights(losses.CosFaceLoss(2, 2, margin=0.25, scale=3), [[1, 0], [0, 2]])
    emb = torch.tensor([unit(60, 4.0), unit(10, 0.5)], dtype=torch.float64)
    c60, c30, c10, c80 = (math.cos(math.radians(a)) for a in (60, 30, 10, 80))
    # sample 0 (class 1): target cos 30 deg; sample 1 (class 0): target cos 10 deg
    expected = (cross_entropy([3 * c60, 3 * (c30 - 0.25)], 1) + cross_entropy([3 * (c10 - 0.25), 3 * c80], 0)) / 2
    assert loss(emb, torch.tensor([1, 0])).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("angle", [30, 120])
def test_large_margin_softmax_psi_with_margin_two_scales_by_both_norms(angle):
    loss = set_weights(losses.LargeMarginSoftmaxLoss(2, 2, margin=2, scale=0.5), [[1, 0], [0, 3]])
    emb = torch.tensor([unit(angle, 2.0)], dtype=torch.float64)
    t = math.radians(angle)
    # m = 2: psi = cos(2t) on [0, 90 deg], -cos(2t) - 2 on [90, 180 deg]
    psi = math.cos(2 * t) if angle <= 90 else -math.cos(2 * t) - 2
    logits = [psi * 2 * 1 * 0.5, math.cos(math.radians(90 - angle)) * 2 * 3 * 0.5]
    assert loss(emb, torch.tensor([0])).item() == pytest.approx(cross_entropy(logits, 0), rel=1e-12)


def test_sphereface_ignores_the_class_vector_norms():
    loss = set_weights(losses.SphereFaceLoss(2, 2, margin=2, scale=0.5), [[1, 0], [0, 3]])
    emb = torch.tensor([unit(30, 2.0)], dtype=torch.float64)
    logits = [math.cos(math.radians(60)) * 2 * 0.5, math.cos(math.radians(60)) * 2 * 0.5]
    assert loss(emb, torch.tensor([0])).item() == pytest.approx(cross_entropy(logits, 0), rel=1e-12)


def test_large_margin_with_margin_one_is_plain_softmax_on_raw_dot_products():
    loss = losses.LargeMarginSoftmaxLoss(4, 3, margin=1).double()
    emb = torch.randn(6, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    expected = torch.nn.functional.cross_entropy(emb @ loss.W, labels)
    torch.testing.assert_close(loss(emb, labels), expected)


def test_margin_is_an_integer_for_large_margin_and_radians_for_arcface():
    assert losses.LargeMarginSoftmaxLoss(3, 2, margin=3.7).margin == 3
    assert losses.SphereFaceLoss(3, 2, margin=2.2).margin == 2
    assert losses.ArcFaceLoss(3, 2, margin=28.6).margin == pytest.approx(math.radians(28.6))
    assert losses.CosFaceLoss(3, 2, margin=0.2).margin == 0.2


def test_miner_weights_scale_each_element():
    loss = losses.CosFaceLoss(3, 4, reducer=DoNothingReducer()).double()
    emb, labels = torch.randn(4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    plain = loss(emb, labels)["loss"]["losses"]
    # element 0 occurs twice, 1 and 2 once, 3 never: weights 1, 0.5, 0.5, 0
    pairs = (torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([]).long(), torch.tensor([]).long())
    weighted = loss(emb, labels, pairs)["loss"]["losses"]
    torch.testing.assert_close(weighted, plain * torch.tensor([1, 0.5, 0.5, 0], dtype=torch.float64))


# ----------------------------------------------------------------------------------------------
# logits, parameters, state


@pytest.mark.parametrize("name", FAMILY)
def test_get_logits_are_the_scaled_logits_without_margin(name):
    loss = build(losses, name, 5, 3, scale=2).double()
    emb = torch.randn(7, 3, dtype=torch.float64)
    cos = torch.nn.functional.normalize(emb, dim=1) @ torch.nn.functional.normalize(loss.W, dim=0)
    if name == "SubCenterArcFaceLoss":
        cos = cos.view(7, 5, 3).max(dim=2).values
    norms = emb.norm(dim=1, keepdim=True)
    if name == "LargeMarginSoftmaxLoss":
        expected = cos * norms * loss.W.norm(dim=0) * 2
    elif name == "SphereFaceLoss":
        expected = cos * norms * 2
    else:
        expected = cos * 2
    torch.testing.assert_close(loss.get_logits(emb), expected)


@pytest.mark.parametrize("name", FAMILY)
def test_weights_have_the_reference_shape_and_state_dict_key(name):
    loss = build(losses, name, 5, 3)
    columns = 15 if name == "SubCenterArcFaceLoss" else 5
    assert list(loss.state_dict()) == ["W"]
    assert loss.W.shape == (3, columns)
    assert isinstance(loss.W, torch.nn.Parameter)
    assert loss.num_classes == 5


@pytest.mark.parametrize("name", FAMILY)
def test_state_dict_round_trip_gives_the_same_loss(name):
    a, b = build(losses, name, 4, 3), build(losses, name, 4, 3)
    assert not torch.equal(a.W, b.W)
    b.load_state_dict(a.state_dict())
    emb, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(a(emb, labels), b(emb, labels))


@pytest.mark.parametrize("name", FAMILY)
def test_an_optimizer_on_the_loss_learns_the_class_vectors(name):
    torch.manual_seed(0)
    loss = build(losses, name, 3, 4)
    opt = torch.optim.SGD(loss.parameters(), lr=0.5)
    emb, labels = torch.randn(12, 4), torch.arange(12) % 3
    before = loss(emb, labels).item()
    w0 = loss.W.detach().clone()
    for _ in range(20):
        opt.zero_grad()
        loss(emb, labels).backward()
        opt.step()
    assert not torch.equal(loss.W, w0)
    assert loss(emb, labels).item() < before


@pytest.mark.parametrize("name", FAMILY)
def test_to_casts_the_weights(name):
    loss = build(losses, name, 3, 4).to(torch.float64)
    assert loss.W.dtype == torch.float64
    assert loss(torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])).dtype == torch.float64


def test_custom_weight_init_func_is_applied():
    init = c_f.TorchInitWrapper(torch.nn.init.constant_, val=0.25)
    loss = losses.ArcFaceLoss(3, 2, weight_init_func=init)
    assert torch.all(loss.W == 0.25)


@pytest.mark.parametrize("name", FAMILY)
def test_weight_regularizer_adds_its_own_entry(name):
    loss = build(losses, name, 4, 3, weight_regularizer=RegularFaceRegularizer(), weight_reg_weight=0.5)
    assert loss.sub_loss_names() == ["loss", "weight_reg_loss"]
    assert isinstance(loss.reducer, MultipleReducers)
    emb, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    with_reg = loss(emb, labels)
    loss.reducer = DoNothingReducer()
    out = loss(emb, labels)
    expected_reg = RegularFaceRegularizer()(loss.W.t()) * 0.5
    torch.testing.assert_close(out["weight_reg_loss"]["losses"], expected_reg)
    torch.testing.assert_close(with_reg, out["loss"]["losses"].mean() + expected_reg)


def test_collect_stats_records_the_average_target_angle():
    loss = set_weights(losses.ArcFaceLoss(2, 2, collect_stats=True), [[1, 0], [0, 1]])
    loss(torch.tensor([unit(20), unit(40)], dtype=torch.float64), torch.tensor([0, 0]))
    assert loss.avg_angle == pytest.approx(30)
    assert {"num_classes", "margin", "scale"} <= set(loss._record_these)
    assert not hasattr(losses.ArcFaceLoss(2, 2, collect_stats=False), "avg_angle")


# ----------------------------------------------------------------------------------------------
# gradients, dtypes, numerics


@pytest.mark.parametrize("name", FAMILY)
def test_gradcheck_embeddings_and_weights(name):
    torch.manual_seed(3)
    loss = build(losses, name, 3, 4, reducer=SumReducer()).double()
    emb = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = loss.W.detach().clone().requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 0, 1])

    def loss_of(x, w):
        # Swap the parameter for a plain leaf so that gradcheck differentiates through W too.
        saved = loss._parameters["W"]
        loss._parameters["W"] = w
        try:
            return loss(x, labels)
        finally:
            loss._parameters["W"] = saved

    assert torch.autograd.gradcheck(loss_of, (emb, w))


@pytest.mark.parametrize("name", FAMILY)
def test_gradient_is_finite_when_an_embedding_matches_its_class_vector(name):
    loss = build(losses, name, 2, 2).double()
    loss.W.data = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64).repeat_interleave(
        loss.W.shape[1] // 2, dim=1
    )
    emb = torch.tensor([[3.0, 0.0], [-2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    value = loss(emb, torch.tensor([0, 1]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(emb.grad).all() and torch.isfinite(loss.W.grad).all()


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", FAMILY)
def test_half_precision_is_accumulated_in_float32(name, half):
    torch.manual_seed(0)
    loss = build(losses, name, 10, 16)
    emb32, labels = torch.randn(32, 16) * 10, torch.randint(0, 10, (32,))
    expected = loss(emb32, labels)
    emb = emb32.to(half).requires_grad_(True)
    value = loss(emb, labels)
    value.backward()
    assert value.dtype == half and loss.W.dtype == half  # the parameter follows the input
    assert torch.isfinite(value) and torch.isfinite(emb.grad.float()).all()
    rtol, atol = tolerance(half)
    torch.testing.assert_close(value.float(), expected, rtol=rtol * 5, atol=atol * 50)


def test_large_margin_with_a_big_margin_stays_finite_in_float16():
    torch.manual_seed(0)
    loss = losses.LargeMarginSoftmaxLoss(4, 8, margin=20)  # C(20, 10) = 184756 > float16 max
    emb = torch.randn(6, 8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    expected = loss(emb, labels)
    value = loss(emb.half(), labels)
    assert torch.isfinite(value)
    torch.testing.assert_close(value.float(), expected, rtol=2e-2, atol=2e-2)


def test_regularizer_names_with_both_weight_and_embedding_regularizers():
    from deepmetric.regularizers import LpRegularizer

    loss = losses.ArcFaceLoss(
        3, 4, weight_regularizer=RegularFaceRegularizer(), embedding_regularizer=LpRegularizer()
    )
    assert loss.sub_loss_names() == ["loss", "weight_reg_loss", "embedding_reg_loss"]
    loss.reducer = DoNothingReducer()
    out = loss(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    assert set(out) == {"loss", "weight_reg_loss", "embedding_reg_loss"}


@pytest.mark.parametrize("name", ["LargeMarginSoftmaxLoss", "CosFaceLoss"])
def test_other_family_members_record_the_target_angle_only_when_collecting(name):
    loss = set_weights(build(losses, name, 2, 2, collect_stats=True), [[1, 0], [0, 1]])
    loss(torch.tensor([unit(10), unit(50)], dtype=torch.float64), torch.tensor([0, 0]))
    assert loss.avg_angle == pytest.approx(30)
    assert "avg_angle" in loss._record_these_stats


# ----------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("name", FAMILY)
def test_labels_outside_the_classes_are_rejected_by_value(name):
    loss = build(losses, name, 3, 2)
    with pytest.raises(ValueError, match=r"\[0, 3\).*got 3, 7"):
        loss(torch.randn(4, 2), torch.tensor([0, 3, 7, 1]))
    with pytest.raises(ValueError, match="got -1"):
        loss(torch.randn(2, 2), torch.tensor([-1, 0]))


@pytest.mark.parametrize("name", FAMILY)
def test_embedding_width_must_match_embedding_size(name):
    loss = build(losses, name, 3, 4)
    with pytest.raises(ValueError, match="embedding_size=4.*5 columns"):
        loss(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="embedding_size=4"):
        loss.get_logits(torch.randn(2, 3))


@pytest.mark.parametrize("name", FAMILY)
def test_labels_are_required_and_ref_emb_is_not_supported(name):
    loss = build(losses, name, 3, 2)
    emb = torch.randn(4, 2)
    with pytest.raises(ValueError, match="labels are required"):
        loss(emb)
    with pytest.raises(ValueError, match="not supported"):
        loss(emb, torch.tensor([0, 1, 2, 0]), ref_emb=emb.clone(), ref_labels=torch.tensor([0, 1, 2, 0]))


@pytest.mark.parametrize("name", FAMILY)
def test_only_cosine_similarity_is_accepted(name):
    with pytest.raises(AssertionError, match="CosineSimilarity"):
        build(losses, name, 3, 2, distance=LpDistance())
    assert isinstance(build(losses, name, 3, 2).distance, CosineSimilarity)


def test_bad_constructor_arguments_are_rejected():
    with pytest.raises(ValueError, match="margin >= 1"):
        losses.LargeMarginSoftmaxLoss(3, 2, margin=0)
    with pytest.raises(ValueError, match="num_classes"):
        losses.ArcFaceLoss(0, 2)
    with pytest.raises(ValueError, match="embedding_size"):
        losses.CosFaceLoss(3, 2.5)
    with pytest.raises(TypeError):
        losses.ArcFaceLoss(3, 2, not_an_argument=1)


# ----------------------------------------------------------------------------------------------
# the reference library as an oracle


def _pair(name, num_classes, embedding_size, dtype, extra=None, **kwargs):
    """The reference loss and ours, initialised from the same seed. ``extra(lib)`` gives
    constructor arguments built from each library's own classes."""
    import pytorch_metric_learning as pml
    import pytorch_metric_learning.losses  # noqa: F401
    import pytorch_metric_learning.reducers  # noqa: F401
    import pytorch_metric_learning.regularizers  # noqa: F401

    import deepmetric

    made = []
    for lib in (pml, deepmetric):
        torch.manual_seed(7)
        more = extra(lib) if extra is not None else {}
        made.append(build(lib, name, num_classes, embedding_size, **kwargs, **more).to(dtype))
    return made


def _compare(ref, ours, emb, labels, dtype, *args):
    x_ref, x_ours = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
    a, b = ref(x_ref, labels, *args), ours(x_ours, labels, *args)
    a.backward()
    b.backward()
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(b, a, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=rtol * 10, atol=atol * 10)
    torch.testing.assert_close(ours.W.grad, ref.W.grad, rtol=rtol * 10, atol=atol * 10)


MARGINS = {
    "LargeMarginSoftmaxLoss": [{}, {"margin": 1}, {"margin": 3, "scale": 2}, {"margin": 6}],
    "SphereFaceLoss": [{}, {"margin": 2, "scale": 3}],
    "ArcFaceLoss": [{}, {"margin": 60, "scale": 10}],
    "CosFaceLoss": [{}, {"margin": 0.1, "scale": 5}],
    "SubCenterArcFaceLoss": [{}, {"sub_centers": 1}, {"sub_centers": 4, "margin": 10}],
}
ORACLE_CASES = [(name, kw) for name in FAMILY for kw in MARGINS[name]]


@requires_reference
@pytest.mark.parametrize("name,kwargs", ORACLE_CASES, ids=[f"{n}-{k}" for n, k in ORACLE_CASES])
def test_matches_reference_values_and_gradients(name, kwargs, dtype):
    ref, ours = _pair(name, 7, 12, dtype, **kwargs)
    assert torch.equal(ref.W, ours.W)  # same seed, same initialisation
    g = torch.Generator().manual_seed(1)
    emb = (torch.randn(40, 12, generator=g) * 3).to(dtype)
    labels = torch.randint(0, 7, (40,), generator=g)
    _compare(ref, ours, emb, labels, dtype)


@requires_reference
@pytest.mark.parametrize("name", FAMILY)
def test_matches_reference_with_a_miner_and_a_weight_regularizer(name, dtype):
    from pytorch_metric_learning.miners import MultiSimilarityMiner

    def extra(lib):
        return dict(
            weight_regularizer=lib.regularizers.RegularFaceRegularizer(),
            weight_reg_weight=0.3,
            reducer=lib.reducers.SumReducer(),
        )

    ref, ours = _pair(name, 5, 6, dtype, extra=extra)
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(30, 6, generator=g).to(dtype)
    labels = torch.randint(0, 5, (30,), generator=g)
    tuples = MultiSimilarityMiner(epsilon=0.3)(emb, labels)
    weights = lmu.convert_to_weights(tuples, labels, dtype)
    assert weights.min() < weights.max()  # the miner really weights the elements differently
    _compare(ref, ours, emb, labels, dtype, tuples)


@requires_reference
@pytest.mark.parametrize("name", FAMILY)
def test_get_logits_match_reference(name, dtype):
    ref, ours = _pair(name, 6, 5, dtype)
    emb = torch.randn(9, 5, dtype=dtype)
    rtol, atol = tolerance(dtype)
    torch.testing.assert_close(ours.get_logits(emb), ref.get_logits(emb), rtol=rtol * 10, atol=atol * 10)


# ----------------------------------------------------------------------------------------------
# SubCenterArcFaceLoss


def test_subcenter_uses_the_closest_sub_center_of_each_class():
    loss = losses.SubCenterArcFaceLoss(num_classes=2, embedding_size=2, margin=30, scale=2, sub_centers=2)
    # class 0: sub-centers at 0 and 90 deg; class 1: at 180 and 270 deg
    set_weights(loss, [unit(0), unit(90), unit(180), unit(270)])
    emb = torch.tensor([unit(80, 3.0)], dtype=torch.float64)
    # closest of class 0 is the 90 deg center (10 deg away); of class 1, 180 deg (100 deg away)
    expected = cross_entropy([2 * math.cos(math.radians(40)), 2 * math.cos(math.radians(100))], 0)
    assert loss(emb, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-12)


def test_subcenter_accepts_positional_classes_and_size():
    a = losses.SubCenterArcFaceLoss(4, 3, sub_centers=2)
    assert a.W.shape == (3, 8) and a.num_classes == 4 and a.sub_centers == 2


def test_subcenter_outliers_and_dominant_centers_by_hand():
    loss = losses.SubCenterArcFaceLoss(num_classes=3, embedding_size=2, sub_centers=2)
    set_weights(loss, [unit(0), unit(90), unit(180), unit(270), unit(45), unit(135)])
    angles_and_labels = [(10, 0), (80, 0), (5, 0), (170, 1), (260, 1), (275, 1), (190, 1)]
    emb = torch.tensor([unit(a) for a, _ in angles_and_labels], dtype=torch.float64)
    labels = torch.tensor([lab for _, lab in angles_and_labels])
    outliers, centers = loss.get_outliers(emb, labels, threshold=60)
    # class 0: two votes for the 0 deg center, so 80 deg (index 1) is an outlier;
    # class 1: 180 deg wins 2-2 ties by lowest index; 260 and 275 deg are > 60 deg away
    assert outliers.dtype == torch.long and outliers.tolist() == [1, 4, 5]
    torch.testing.assert_close(centers[:, 0], torch.tensor(unit(0), dtype=torch.float64))
    torch.testing.assert_close(centers[:, 1], torch.tensor(unit(180), dtype=torch.float64))
    assert torch.all(centers[:, 2] == 0)  # class 2 is absent from the batch


def test_subcenter_outliers_is_always_a_pair_and_may_be_empty():
    loss = losses.SubCenterArcFaceLoss(num_classes=2, embedding_size=3)
    result = loss.get_outliers(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), threshold=180,
                               return_dominant_centers=False)
    assert isinstance(result, tuple) and len(result) == 2
    assert result[0].numel() == 0 and result[0].dtype == torch.long


def test_subcenter_outliers_reject_bad_labels():
    loss = losses.SubCenterArcFaceLoss(num_classes=2, embedding_size=3)
    with pytest.raises(ValueError, match="got 2"):
        loss.get_outliers(torch.randn(2, 3), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="labels"):
        loss.get_outliers(torch.randn(2, 3), torch.tensor([0, 1, 1]))


@requires_reference
@pytest.mark.parametrize("threshold", [30, 75])
def test_subcenter_outliers_match_reference(threshold, dtype):
    ref, ours = _pair("SubCenterArcFaceLoss", 6, 4, dtype, sub_centers=3)
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(60, 4, generator=g).to(dtype)
    labels = torch.randint(0, 5, (60,), generator=g)  # class 5 absent
    ref_out, ref_centers = ref.get_outliers(emb, labels, threshold=threshold)
    out, centers = ours.get_outliers(emb, labels, threshold=threshold)
    assert out.tolist() == ref_out.long().tolist() and len(out) > 0
    torch.testing.assert_close(centers[:, :5], ref_centers[:, :5])
