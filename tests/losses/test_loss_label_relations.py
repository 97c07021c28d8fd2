"""label_relation and multi-hot labels in every loss that decides positives and negatives from
labels: equality as a relation gives the default result bit for bit; a coarser relation gives
exactly the default result on the coarser labels (so the relation decides every positive and
negative, in every path); multi-hot labels that overlap give the result of the hand-built pairs
or triplets; losses whose labels are class indices refuse relations and 2-D labels."""

import pytest
import torch

from deepmetric import losses, miners
from deepmetric.utils import loss_and_miner_utils as lmu

N, D = 12, 5

# name -> (factory(**kwargs), takes ref_emb, takes a miner's tuple)
RELATION_LOSSES = {
    "ContrastiveLoss": (lambda **kw: losses.ContrastiveLoss(pos_margin=0.2, neg_margin=0.8, **kw), True, True),
    "NTXentLoss": (lambda **kw: losses.NTXentLoss(temperature=0.3, **kw), True, True),
    "SupConLoss": (lambda **kw: losses.SupConLoss(temperature=0.3, **kw), True, True),
    "MultiSimilarityLoss": (lambda **kw: losses.MultiSimilarityLoss(**kw), True, True),
    "CircleLoss": (lambda **kw: losses.CircleLoss(**kw), True, True),
    "SignalToNoiseRatioContrastiveLoss": (
        lambda **kw: losses.SignalToNoiseRatioContrastiveLoss(**kw), True, True),
    "LiftedStructureLoss": (lambda **kw: losses.LiftedStructureLoss(**kw), True, True),
    "GeneralizedLiftedStructureLoss": (lambda **kw: losses.GeneralizedLiftedStructureLoss(**kw), True, True),
    "IntraPairVarianceLoss": (lambda **kw: losses.IntraPairVarianceLoss(**kw), True, True),
    "TupletMarginLoss": (lambda **kw: losses.TupletMarginLoss(**kw), True, True),
    "TripletMarginLoss": (lambda **kw: losses.TripletMarginLoss(margin=0.3, **kw), True, True),
    "TripletMarginLoss(smooth)": (lambda **kw: losses.TripletMarginLoss(smooth_loss=True, **kw), True, True),
    "MarginLoss": (lambda **kw: losses.MarginLoss(**kw), True, True),
    "AngularLoss": (lambda **kw: losses.AngularLoss(**kw), True, True),
    "DynamicSoftMarginLoss": (lambda **kw: losses.DynamicSoftMarginLoss(**kw), True, True),
    "ThresholdConsistentMarginLoss": (lambda **kw: losses.ThresholdConsistentMarginLoss(**kw), True, True),
    "FastAPLoss": (lambda **kw: losses.FastAPLoss(**kw), False, False),
    "RankedListLoss": (lambda **kw: losses.RankedListLoss(margin=0.4, Tn=1.0, **kw), False, False),
    "HistogramLoss": (lambda **kw: losses.HistogramLoss(n_bins=10, **kw), False, True),
    "PNPLoss": (lambda **kw: losses.PNPLoss(**kw), False, False),
    "NCALoss": (lambda **kw: losses.NCALoss(**kw), True, False),
}

CLASS_INDEX_LOSSES = {
    "ArcFaceLoss": lambda **kw: losses.ArcFaceLoss(num_classes=6, embedding_size=D, **kw),
    "CosFaceLoss": lambda **kw: losses.CosFaceLoss(num_classes=6, embedding_size=D, **kw),
    "LargeMarginSoftmaxLoss": lambda **kw: losses.LargeMarginSoftmaxLoss(num_classes=6, embedding_size=D, **kw),
    "NormalizedSoftmaxLoss": lambda **kw: losses.NormalizedSoftmaxLoss(num_classes=6, embedding_size=D, **kw),
    "ProxyAnchorLoss": lambda **kw: losses.ProxyAnchorLoss(num_classes=6, embedding_size=D, **kw),
    "ProxyNCALoss": lambda **kw: losses.ProxyNCALoss(num_classes=6, embedding_size=D, **kw),
    "SoftTripleLoss": lambda **kw: losses.SoftTripleLoss(num_classes=6, embedding_size=D, **kw),
    "SubCenterArcFaceLoss": lambda **kw: losses.SubCenterArcFaceLoss(num_classes=6, embedding_size=D, **kw),
    "SphereFaceLoss": lambda **kw: losses.SphereFaceLoss(num_classes=6, embedding_size=D, **kw),
    "P2SGradLoss": lambda **kw: losses.P2SGradLoss(descriptors_dim=D, num_classes=6, **kw),
    "InstanceLoss": lambda **kw: losses.InstanceLoss(**kw),
    "NPairsLoss": lambda **kw: losses.NPairsLoss(**kw),
    "SmoothAPLoss": lambda **kw: losses.SmoothAPLoss(**kw),
    "ManifoldLoss": lambda **kw: losses.ManifoldLoss(l=D, **kw),
    "VICRegLoss": lambda **kw: losses.VICRegLoss(**kw),
}


def equal(a, b):
    return a.unsqueeze(1) == b.unsqueeze(0)


def same_pair_of_classes(a, b):
    """Labels 2k and 2k+1 are related: the relation of the labels // 2."""
    return (a // 2).unsqueeze(1) == (b // 2).unsqueeze(0)


def batch(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(N, D, generator=g, dtype=dtype)
    labels = torch.arange(N) % 6  # six fine classes of two, three coarse classes of four
    return emb, labels


def value_and_grad(loss_fn, emb, *args, **kwargs):
    emb = emb.clone().requires_grad_()
    torch.manual_seed(0)
    value = loss_fn(emb, *args, **kwargs)
    (grad,) = torch.autograd.grad(value, emb, allow_unused=True)
    return value.detach(), (torch.zeros_like(emb) if grad is None else grad)


def assert_same(got, want):
    for a, b in zip(got, want):
        assert torch.equal(a, b), (a, b)


@pytest.mark.parametrize("name", list(RELATION_LOSSES))
def test_equality_as_a_relation_gives_the_default_bit_for_bit(name, dtype):
    make, takes_ref, _ = RELATION_LOSSES[name]
    emb, labels = batch(dtype)
    assert_same(value_and_grad(make(label_relation=equal), emb, labels), value_and_grad(make(), emb, labels))
    if takes_ref:
        ref, ref_labels = batch(dtype, seed=1)
        kw = {"ref_emb": ref, "ref_labels": ref_labels}
        assert_same(value_and_grad(make(label_relation=equal), emb, labels, **kw),
                    value_and_grad(make(), emb, labels, **kw))


@pytest.mark.parametrize("name", list(RELATION_LOSSES))
def test_a_coarser_relation_is_the_default_on_the_coarser_labels(name, dtype):
    make, takes_ref, _ = RELATION_LOSSES[name]
    emb, labels = batch(dtype)
    got = value_and_grad(make(label_relation=same_pair_of_classes), emb, labels)
    want = value_and_grad(make(), emb, labels // 2)
    assert got[0] != value_and_grad(make(), emb, labels)[0]  # the relation changed something
    assert_same(got, want)
    if takes_ref:
        ref, ref_labels = batch(dtype, seed=1)
        got = value_and_grad(make(label_relation=same_pair_of_classes), emb, labels, ref_emb=ref,
                             ref_labels=ref_labels)
        want = value_and_grad(make(), emb, labels // 2, ref_emb=ref, ref_labels=ref_labels // 2)
        assert_same(got, want)


@pytest.mark.parametrize("name", list(RELATION_LOSSES))
def test_one_hot_labels_are_the_default_on_the_class_indices(name):
    make, takes_ref, _ = RELATION_LOSSES[name]
    emb, labels = batch()
    one_hot = torch.nn.functional.one_hot(labels, 6)
    assert_same(value_and_grad(make(), emb, one_hot), value_and_grad(make(), emb, labels))


def multi_hot_batch():
    """Rows with one or two of four classes; row 11 has none (no positive, every other row is
    its negative)."""
    emb, _ = batch()
    classes = [[0], [0, 1], [1], [1, 2], [2], [2, 3], [3], [0, 3], [0], [1], [2], []]
    labels = torch.zeros(N, 4, dtype=torch.long)
    for i, cs in enumerate(classes):
        labels[i, cs] = 1
    return emb, labels


def hand_masks(labels):
    shared = torch.tensor(
        [[bool(set(torch.where(a)[0].tolist()) & set(torch.where(b)[0].tolist())) for b in labels] for a in labels]
    )
    pos, neg = shared.clone(), ~shared
    pos.fill_diagonal_(False)
    neg.fill_diagonal_(False)
    return pos, neg


@pytest.mark.parametrize("name", [n for n, (_, _, listed) in RELATION_LOSSES.items() if listed])
def test_overlapping_multi_hot_labels_give_the_hand_built_pairs_or_triplets(name):
    make, _, _ = RELATION_LOSSES[name]
    emb, labels = multi_hot_batch()
    pos, neg = hand_masks(labels)
    a1, p = torch.where(pos)
    a2, n = torch.where(neg)
    triplets = torch.where(pos.unsqueeze(2) & neg.unsqueeze(1))
    # A loss made of pairs gets the pairs, one made of triplets the triplets, of the hand masks.
    made_of_pairs = isinstance(make(), losses.GenericPairLoss) or name in (
        "AngularLoss", "ThresholdConsistentMarginLoss")
    got = value_and_grad(make(), emb, labels)
    want = value_and_grad(make(), emb, labels, (a1, p, a2, n) if made_of_pairs else triplets)
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=1e-12)


def test_multi_hot_nca_equals_the_formula_on_the_hand_built_mask():
    emb, labels = multi_hot_batch()
    pos, _ = hand_masks(labels)
    got = losses.NCALoss(softmax_scale=2)(emb, labels)
    d = torch.cdist(torch.nn.functional.normalize(emb), torch.nn.functional.normalize(emb)) ** 2
    logits = (-2 * d).fill_diagonal_(float("-inf"))
    q = (torch.softmax(logits, dim=1) * pos).sum(dim=1)
    torch.testing.assert_close(got, (-torch.log(q[q > 0])).mean())


def test_random_triplets_under_equality_are_the_default_draws():
    emb, labels = batch()
    make = lambda **kw: losses.TripletMarginLoss(margin=0.3, triplets_per_anchor=3, **kw)  # noqa: E731
    assert_same(value_and_grad(make(label_relation=equal), emb, labels), value_and_grad(make(), emb, labels))


def test_random_triplets_follow_a_relation():
    _, labels = batch()
    torch.manual_seed(3)
    a, p, n = lmu.convert_to_triplets(None, labels, t_per_anchor=5, relation=same_pair_of_classes)
    assert len(a) == N * 5
    related = same_pair_of_classes(labels, labels)
    assert bool(related[a, p].all()) and not bool(related[a, n].any()) and bool((a != p).all())
    # Each anchor draws among all three of its coarse class's other members.
    assert {(int(x), int(y)) for x, y in zip(a, p) if x == 0} <= {(0, 1), (0, 6), (0, 7)}


def test_cross_batch_memory_follows_the_wrapped_losses_relation(dtype):
    emb, labels = batch(dtype)
    xbm = lambda **kw: losses.CrossBatchMemory(losses.ContrastiveLoss(**kw), D, memory_size=32)  # noqa: E731
    got, plain, coarse = xbm(label_relation=same_pair_of_classes), xbm(), xbm()
    for half in (slice(0, 6), slice(6, 12)):
        assert_same(value_and_grad(got, emb[half], labels[half]),
                    value_and_grad(coarse, emb[half], labels[half] // 2))
        value_and_grad(plain, emb[half], labels[half])
    # With a miner as well (the miner has its own relation).
    got = losses.CrossBatchMemory(losses.TripletMarginLoss(label_relation=same_pair_of_classes), D,
                                  miner=miners.TripletMarginMiner(label_relation=same_pair_of_classes))
    want = losses.CrossBatchMemory(losses.TripletMarginLoss(), D, miner=miners.TripletMarginMiner())
    for half in (slice(0, 6), slice(6, 12)):
        assert_same(value_and_grad(got, emb[half], labels[half]),
                    value_and_grad(want, emb[half], labels[half] // 2))


def test_cross_batch_memory_keeps_multi_hot_labels():
    emb, labels = multi_hot_batch()
    xbm = losses.CrossBatchMemory(losses.ContrastiveLoss(), D, memory_size=32)
    xbm(emb[:6], labels[:6])
    assert xbm.label_memory.shape == (32, 4)
    value = xbm(emb[6:], labels[6:])
    # The batch against the whole memory: the hand-built masks without each row's own copy.
    pos, neg = hand_masks(labels)
    want = losses.ContrastiveLoss()(emb[6:], None, (*torch.where(pos[6:]), *torch.where(neg[6:])), emb, labels)
    torch.testing.assert_close(value, want)
    state = xbm.state_dict()
    fresh = losses.CrossBatchMemory(losses.ContrastiveLoss(), D, memory_size=32)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.label_memory, xbm.label_memory)
    with pytest.raises(ValueError, match="shape"):
        xbm(emb[:2], labels[:2, :3])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", list(CLASS_INDEX_LOSSES))
def test_losses_with_class_index_labels_refuse_relations_and_multi_hot_labels(name):
    make = CLASS_INDEX_LOSSES[name]
    with pytest.raises(ValueError, match="label_relation"):
        make(label_relation=equal)
    emb, labels = batch(torch.float32)
    with pytest.raises(ValueError, match="1-D"):
        make()(emb, torch.nn.functional.one_hot(labels, 6))


@pytest.mark.parametrize(
    "relation,match",
    [
        (lambda a, b: equal(a, b).long(), "torch.bool"),
        (lambda a, b: equal(a, b)[:, :-1], r"shape \(12, 12\)"),
        (lambda a, b: equal(a, b).tolist(), "torch.bool"),
    ],
    ids=["integer", "wrong-shape", "not-a-tensor"],
)
def test_a_relation_giving_the_wrong_answer_is_named(relation, match):
    emb, labels = batch()
    with pytest.raises(ValueError, match=f"label_relation must return.*{match}"):
        losses.ContrastiveLoss(label_relation=relation)(emb, labels)


def test_a_relation_must_be_callable():
    with pytest.raises(TypeError, match="label_relation must be a function"):
        losses.ContrastiveLoss(label_relation="equal")


def test_multi_hot_labels_of_different_widths_are_rejected():
    emb, labels = multi_hot_batch()
    with pytest.raises(ValueError, match="same width"):
        losses.ContrastiveLoss()(emb, labels, ref_emb=emb, ref_labels=labels[:, :3])
    with pytest.raises(ValueError, match="same width"):
        losses.ContrastiveLoss()(emb, labels, ref_emb=emb, ref_labels=labels[:, 0])


def test_margin_loss_with_one_beta_per_class_needs_class_indices():
    emb, labels = multi_hot_batch()
    with pytest.raises(ValueError, match="1-D class indices"):
        losses.MarginLoss(num_classes=4)(emb, labels)


def test_a_column_of_class_indices_is_not_taken_for_multi_hot_labels():
    emb, labels = batch()
    with pytest.raises(ValueError, match=r"at least 2 classes.*squeeze\(1\)"):
        losses.TripletMarginLoss()(emb, labels.unsqueeze(1))
    with pytest.raises(ValueError, match=r"ref_labels of shape \(12, 1\)"):
        losses.ContrastiveLoss()(emb, labels, ref_emb=emb, ref_labels=labels.unsqueeze(1))
    with pytest.raises(ValueError, match=r"only 0 and 1.*\[0.0, 5.0\]"):
        losses.ContrastiveLoss()(emb, torch.stack([labels, labels // 2], dim=1))
    with pytest.raises(ValueError, match="at least 2 classes"):
        miners.PairMarginMiner()(emb, labels.unsqueeze(1))
    # Bool multi-hot rows are fine, and a relation may give 2-D labels any meaning.
    one_hot = torch.nn.functional.one_hot(labels, 6)
    assert_same(value_and_grad(losses.ContrastiveLoss(), emb, one_hot.bool()),
                value_and_grad(losses.ContrastiveLoss(), emb, labels))
    first_column = lambda a, b: equal(a[:, 0], b[:, 0])  # noqa: E731
    assert_same(value_and_grad(losses.ContrastiveLoss(label_relation=first_column), emb, labels.unsqueeze(1)),
                value_and_grad(losses.ContrastiveLoss(), emb, labels))
