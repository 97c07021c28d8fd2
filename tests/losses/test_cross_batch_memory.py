"""CrossBatchMemory: queue mechanics, enqueue_mask, miners, user tuples, state_dict resume,
dtypes, gradients, bad input and the reference library as an oracle over several iterations."""

import pytest
import torch

from conftest import requires_reference, tolerance
from deepmetric import losses
from deepmetric.distances import LpDistance
from deepmetric.losses import (
    ContrastiveLoss,
    CrossBatchMemory,
    MultiSimilarityLoss,
    NCALoss,
    ProxyNCALoss,
    TripletMarginLoss,
)
from deepmetric.losses.generic_pair_loss import GenericPairLoss
from deepmetric.miners import TripletMarginMiner
from deepmetric.utils import loss_and_miner_utils as lmu

RAW_L2 = dict(distance=LpDistance(normalize_embeddings=False))


def contrastive_memory(memory_size=4, **kwargs):
    return CrossBatchMemory(ContrastiveLoss(pos_margin=0, neg_margin=3, **RAW_L2), 1, memory_size, **kwargs)


def col(*values, dtype=torch.float64):
    return torch.tensor([[v] for v in values], dtype=dtype)


def test_first_batch_equals_the_plain_loss_without_self_pairs(dtype):
    cbm = contrastive_memory()
    emb, labels = col(0.0, 1.0, 2.5, dtype=dtype), torch.tensor([0, 0, 1])
    out = cbm(emb, labels)
    # positives (0,1),(1,0): d = 1 each; negatives: |0-2.5| = 2.5 -> 0.5, |1-2.5| = 1.5 -> 1.5 (twice each)
    # AvgNonZero per sub-loss: pos 1, neg (0.5 + 1.5 + 0.5 + 1.5) / 4 = 1
    assert out.item() == pytest.approx(2.0)
    torch.testing.assert_close(out, ContrastiveLoss(pos_margin=0, neg_margin=3, **RAW_L2)(emb, labels))


def test_second_batch_is_compared_with_the_remembered_rows():
    cbm = contrastive_memory()
    cbm(col(0.0, 2.0), torch.tensor([0, 1]))
    out = cbm(col(1.0, 4.0), torch.tensor([0, 1]))
    # memory: 0 (class 0), 2 (class 1), then the anchors' own copies 1 and 4 (removed as positives)
    # anchor 1: pos |1 - 0| = 1; neg [3 - 1]+ = 2, [3 - 3]+ = 0
    # anchor 4: pos |4 - 2| = 2; neg [3 - 4]+ = 0, [3 - 3]+ = 0
    # AvgNonZero: pos (1 + 2) / 2, neg 2 / 1
    assert out.item() == pytest.approx(3.5)


@pytest.mark.parametrize(
    "loss_name", [name for name in CrossBatchMemory.supported_losses() if issubclass(getattr(losses, name), GenericPairLoss)]
)
def test_pair_losses_get_the_memory_pairs_as_masks_with_the_same_result(loss_name, dtype):
    # Pair losses receive every (anchor, memory row) pair as PairMasks; the result must equal the
    # loss on the listed pairs with each anchor's own copy removed.
    loss = getattr(losses, loss_name)()
    cbm = CrossBatchMemory(loss, 5, memory_size=12)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):  # the last batches wrap around the memory
        emb = torch.randn(5, 5, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
        labels = torch.randint(0, 3, (5,), generator=g)
        out = cbm(emb, labels)
        used = cbm.memory_size if cbm.has_been_filled else cbm.queue_idx
        E_mem, L_mem = cbm.embedding_memory[:used], cbm.label_memory[:used]
        pairs = lmu.remove_self_comparisons(lmu.get_all_pairs_indices(labels, L_mem), cbm.curr_batch_idx, used)
        expected = loss(emb, labels, pairs, E_mem, L_mem)
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(torch.autograd.grad(out, emb)[0], torch.autograd.grad(expected, emb)[0])
    assert cbm.has_been_filled


def test_queue_position_wraps_and_marks_the_memory_filled():
    cbm = contrastive_memory(memory_size=4)
    cbm(col(1.0, 2.0, 3.0), torch.tensor([0, 1, 0]))
    assert cbm.queue_idx == 3 and not cbm.has_been_filled
    cbm(col(4.0, 5.0), torch.tensor([1, 1]))
    assert cbm.queue_idx == 1 and cbm.has_been_filled
    assert cbm.curr_batch_idx.tolist() == [3, 0]
    torch.testing.assert_close(cbm.embedding_memory[:, 0], torch.tensor([5.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    assert cbm.label_memory.tolist() == [1, 1, 0, 1]


def test_memory_is_detached_and_only_anchors_get_gradients():
    cbm = contrastive_memory()
    old = col(0.0, 2.0).requires_grad_(True)
    cbm(old, torch.tensor([0, 1]))
    assert not cbm.embedding_memory.requires_grad
    new = col(1.0, 4.0).requires_grad_(True)
    (grad,) = torch.autograd.grad(cbm(new, torch.tensor([0, 1])), new)
    # (|x1 - 0| + |x2 - 2|) / 2 + [3 - |x1 - 2|]+; the copies of x1, x2 in the memory are constants
    torch.testing.assert_close(grad, col(1.5, 0.5))


def test_enqueue_mask_splits_queries_and_keys():
    cbm = contrastive_memory()
    emb = col(0.0, 1.0, 2.0, 10.0)
    labels = torch.tensor([0, 0, 1, 1])
    mask = torch.tensor([False, True, True, False])
    out = cbm(emb, labels, enqueue_mask=mask)
    # memory holds rows 1 (class 0) and 2 (class 1); anchors are rows 0 and 3; no self removal.
    # anchor 0: pos |0-1| = 1, neg [3-2]+ = 1; anchor 3: pos |10-2| = 8, neg [3-9]+ = 0 (ignored)
    assert out.item() == pytest.approx((1 + 8) / 2 + 1)
    assert cbm.queue_idx == 2
    torch.testing.assert_close(cbm.embedding_memory[:2, 0], torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_enqueue_mask_larger_than_memory_keeps_the_last_rows():
    cbm = contrastive_memory(memory_size=2)
    mask = torch.tensor([True, True, True, False])
    cbm(col(1.0, 2.0, 3.0, 0.0), torch.tensor([0, 1, 0, 1]), enqueue_mask=mask)
    # FIFO order: 1 -> slot 0, 2 -> slot 1, 3 -> slot 0 again
    torch.testing.assert_close(cbm.embedding_memory[:, 0], torch.tensor([3.0, 2.0], dtype=torch.float64))
    assert cbm.queue_idx == 1 and cbm.has_been_filled


def test_nothing_to_compare_gives_an_attached_zero():
    cbm = contrastive_memory()
    emb = col(0.0, 1.0).requires_grad_(True)
    # Nothing enqueued into an empty memory: the reference would compare with zero rows.
    out = cbm(emb, torch.tensor([0, 0]), enqueue_mask=torch.tensor([False, False]))
    assert out.item() == 0 and out.requires_grad
    assert not cbm.has_been_filled and cbm.queue_idx == 0
    out = cbm(emb, torch.tensor([0, 0]), enqueue_mask=torch.tensor([True, True]))  # no anchors
    assert out.item() == 0 and out.requires_grad


def test_enqueueing_no_rows_does_not_expose_unwritten_memory():
    cbm = contrastive_memory(memory_size=8)
    cbm(col(0.0, 5.0), torch.tensor([0, 1]))
    out = cbm(col(0.5, 4.0), torch.tensor([0, 1]), enqueue_mask=torch.tensor([False, False]))
    assert not cbm.has_been_filled
    # Only the two written rows are the reference (the reference library would add six zero
    # rows of class 0): positives |0.5 - 0| and |4 - 5|, negatives [3 - 4.5]+ = [3 - 4]+ = 0.
    assert out.item() == pytest.approx(0.75)


def test_miner_mines_against_the_memory():
    torch.manual_seed(0)
    calls = []

    class Spy(TripletMarginMiner):
        def forward(self, emb, labels, ref_emb=None, ref_labels=None):
            calls.append((emb.shape[0], ref_emb.shape[0]))
            return super().forward(emb, labels, ref_emb, ref_labels)

    cbm = CrossBatchMemory(TripletMarginLoss(), 4, memory_size=16, miner=Spy(margin=1.0))
    cbm(torch.randn(6, 4), torch.randint(0, 2, (6,)))
    cbm(torch.randn(5, 4), torch.randint(0, 2, (5,)))
    assert calls == [(6, 6), (5, 11)]


def test_user_triplets_are_converted_and_appended():
    cbm = contrastive_memory(memory_size=8)
    emb, labels = col(0.0, 1.0, 2.0), torch.tensor([0, 0, 1])
    with_extra = cbm(emb, labels, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    cbm.reset_queue()
    plain = cbm(emb, labels)
    # One more positive pair (0, 1) with d = 1 and one more negative (0, 2) with [3 - 2]+ = 1:
    # positives 1,1,1 -> 1; negatives (1, 2, 1, 2, 1)/5 instead of (1, 2, 1, 2)/4
    assert plain.item() == pytest.approx(1 + 1.5)
    assert with_extra.item() == pytest.approx(1 + 7 / 5)


def test_reset_queue_empties_the_memory():
    cbm = contrastive_memory()
    cbm(col(1.0, 2.0, 3.0, 4.0), torch.tensor([0, 1, 0, 1]))
    cbm.reset_queue()
    assert cbm.queue_idx == 0 and not cbm.has_been_filled
    assert torch.all(cbm.embedding_memory == 0) and torch.all(cbm.label_memory == 0)
    assert cbm.embedding_memory.dtype == torch.float32 and cbm.label_memory.dtype == torch.long


def test_state_dict_holds_the_memory_and_its_position():
    cbm = contrastive_memory()
    assert set(cbm.state_dict()) == {"embedding_memory", "label_memory", "_extra_state"}
    assert cbm.embedding_memory.shape == (4, 1) and cbm.label_memory.shape == (4,)


def test_resumed_training_continues_with_the_same_memory():
    def batches():
        g = torch.Generator().manual_seed(3)
        return [(torch.randn(5, 4, generator=g), torch.randint(0, 3, (5,), generator=g)) for _ in range(6)]

    def make():
        return CrossBatchMemory(MultiSimilarityLoss(), 4, memory_size=12)

    uninterrupted = make()
    expected = [uninterrupted(e, y) for e, y in batches()]
    first = make()
    for e, y in batches()[:3]:
        first(e, y)
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.queue_idx == first.queue_idx == 3 and resumed.has_been_filled
    got = [resumed(e, y) for e, y in batches()[3:]]
    torch.testing.assert_close(torch.stack(got), torch.stack(expected[3:]))


def test_gradcheck_against_a_fixed_memory():
    torch.manual_seed(0)
    cbm = CrossBatchMemory(NCALoss(softmax_scale=2), 3, memory_size=8)
    cbm(torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2]))
    labels = torch.tensor([0, 1, 2, 1])
    # Queries only: the memory does not change between gradcheck's evaluations.
    queries_only = torch.zeros(4, dtype=torch.bool)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: cbm(x, labels, enqueue_mask=queries_only), (x,))
    assert cbm.queue_idx == 6


def test_float16_memory_follows_the_embeddings():
    torch.manual_seed(0)
    e, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    full = CrossBatchMemory(MultiSimilarityLoss(), 4, memory_size=16)
    half = CrossBatchMemory(MultiSimilarityLoss(), 4, memory_size=16)
    a, b = full(e, y), half(e.half(), y.int())
    assert b.dtype == torch.float16
    assert half.embedding_memory.dtype == torch.float16 and half.label_memory.dtype == torch.int32
    torch.testing.assert_close(b.float(), a, rtol=1e-2, atol=1e-2)


def test_records_hyper_parameters():
    cbm = contrastive_memory()
    assert cbm._record_these == ["embedding_size", "memory_size", "queue_idx"]
    assert (cbm.embedding_size, cbm.memory_size) == (1, 4)


def test_supported_losses_are_checked_by_class_name():
    assert "NCALoss" in CrossBatchMemory.supported_losses() and len(CrossBatchMemory.supported_losses()) == 14
    with pytest.raises(Exception, match="CrossBatchMemory not supported for ProxyNCALoss"):
        CrossBatchMemory(ProxyNCALoss(3, 4), 4)


def test_bad_inputs_are_rejected():
    cbm = contrastive_memory(memory_size=3)
    emb, labels = col(0.0, 1.0), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="mutually exclusive"):
        cbm(emb, labels, (torch.tensor([0]),) * 3, enqueue_mask=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="memory_size=3"):
        cbm(col(0.0, 1.0, 2.0, 3.0), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="embedding_size=1.*2 columns"):
        cbm(torch.zeros(2, 2), labels)
    with pytest.raises(ValueError, match="labels"):
        cbm(emb, None)
    with pytest.raises(ValueError, match=r"enqueue_mask must have shape \(2,\)"):
        cbm(emb, labels, enqueue_mask=torch.tensor([True]))
    with pytest.raises(TypeError, match="torch.bool"):
        cbm(emb, labels, enqueue_mask=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="memory_size"):
        CrossBatchMemory(ContrastiveLoss(), 4, memory_size=0)
    with pytest.raises(ValueError, match="embedding_size"):
        CrossBatchMemory(ContrastiveLoss(), 2.5)
    assert cbm.queue_idx == 0  # rejected calls leave the queue untouched


def _batches(n_iter, batch_size, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_iter):
        emb = torch.randn(batch_size, 6, generator=g).to(dtype)
        labels = torch.randint(0, 4, (batch_size,), generator=g)
        mask = torch.rand(batch_size, generator=g) < 0.5
        mask[0], mask[1] = True, False  # never empty on either side
        out.append((emb, labels, mask))
    return out


ORACLE_CASES = {
    "contrastive": ("ContrastiveLoss", None),
    "triplet+miner": ("TripletMarginLoss", "TripletMarginMiner"),
    "ms+miner": ("MultiSimilarityLoss", "MultiSimilarityMiner"),
    "ntxent": ("NTXentLoss", None),
    "nca": ("NCALoss", None),
    "supcon": ("SupConLoss", None),
}


@requires_reference
@pytest.mark.parametrize("case", sorted(ORACLE_CASES))
@pytest.mark.parametrize("use_mask", [False, True], ids=["all", "enqueue_mask"])
def test_matches_reference_over_iterations(case, use_mask, any_dtype):
    import pytorch_metric_learning.losses as pml_losses
    import pytorch_metric_learning.miners as pml_miners

    from deepmetric import losses, miners

    loss_name, miner_name = ORACLE_CASES[case]
    if not hasattr(losses, loss_name):
        pytest.skip(f"{loss_name} not available")
    dtype = any_dtype
    if loss_name == "NTXentLoss" and dtype == torch.float16:
        pytest.skip("float16 NTXentLoss deliberately differs (see docs/losses_pairs.md)")

    def build(lib_losses, lib_miners):
        miner = getattr(lib_miners, miner_name)() if miner_name else None
        return lib_losses.CrossBatchMemory(getattr(lib_losses, loss_name)(), 6, memory_size=20, miner=miner)

    ours, ref = build(losses, miners), build(pml_losses, pml_miners)
    rtol, atol = tolerance(dtype)
    for emb, labels, mask in _batches(7, 8, dtype):
        mask = mask if use_mask else None
        x_ours, x_ref = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
        a, b = ours(x_ours, labels, enqueue_mask=mask), ref(x_ref, labels, enqueue_mask=mask)
        (g_ours,), (g_ref,) = torch.autograd.grad(a, x_ours), torch.autograd.grad(b, x_ref)
        torch.testing.assert_close(a, b, rtol=rtol * 10, atol=atol * 10)
        torch.testing.assert_close(g_ours, g_ref, rtol=rtol * 10, atol=atol * 10)
        assert (ours.queue_idx, ours.has_been_filled) == (ref.queue_idx, ref.has_been_filled)
        torch.testing.assert_close(ours.embedding_memory, ref.embedding_memory)
        assert torch.equal(ours.label_memory, ref.label_memory)
        assert torch.equal(ours.curr_batch_idx, ref.curr_batch_idx)


@requires_reference
@pytest.mark.parametrize("form", ["pairs", "triplets"])
@pytest.mark.parametrize("loss_name", ["ContrastiveLoss", "TripletMarginLoss"])
def test_user_indices_tuple_matches_reference(form, loss_name):
    import pytorch_metric_learning.losses as pml_losses

    from deepmetric import losses

    ours = CrossBatchMemory(getattr(losses, loss_name)(), 6, memory_size=20)
    ref = pml_losses.CrossBatchMemory(getattr(pml_losses, loss_name)(), 6, memory_size=20)
    for i, (emb, labels, _) in enumerate(_batches(4, 8, torch.float64, seed=1)):
        if form == "pairs":
            it = (torch.tensor([0, 1, 2]), torch.tensor([3, 4, i]), torch.tensor([0, 5]), torch.tensor([6, 7]))
        else:
            it = (torch.tensor([0, 1, 2]), torch.tensor([3, 4, i]), torch.tensor([5, 6, 7]))
        torch.testing.assert_close(ours(emb, labels, it), ref(emb, labels, it))


@requires_reference
def test_loads_a_reference_state_dict():
    import pytorch_metric_learning.losses as pml_losses

    ref = pml_losses.CrossBatchMemory(pml_losses.ContrastiveLoss(), 6, memory_size=20)
    for emb, labels, _ in _batches(2, 8, torch.float32):
        ref(emb, labels)
    ours = CrossBatchMemory(ContrastiveLoss(), 6, memory_size=20)
    ours.load_state_dict(ref.state_dict())  # strict: the queue position is optional
    torch.testing.assert_close(ours.embedding_memory, ref.embedding_memory)
    assert ours.queue_idx == 0  # the reference does not save it


def test_state_dict_survives_a_weights_only_checkpoint_file(tmp_path):
    cbm = contrastive_memory(memory_size=4)
    cbm(col(1.0, 2.0, 3.0), torch.tensor([0, 1, 0]))
    path = tmp_path / "loss.pt"
    torch.save({"loss_funcs": {"metric_loss": cbm.state_dict()}}, path)
    fresh = contrastive_memory(memory_size=4)
    fresh.load_state_dict(torch.load(path, weights_only=True)["loss_funcs"]["metric_loss"])
    assert (fresh.queue_idx, fresh.has_been_filled) == (3, False)
    torch.testing.assert_close(fresh.embedding_memory, cbm.embedding_memory.float())
