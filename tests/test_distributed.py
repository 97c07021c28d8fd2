"""utils.distributed: two real gloo processes on CPU against one process on the whole batch."""

import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepmetric import losses, miners
from deepmetric.reducers import MeanReducer
from deepmetric.samplers import MPerClassSampler
from deepmetric.utils import distributed as dist_utils

WORLD_SIZE = 2
# Rank r embeds INPUT_ROWS[r] rows (different sizes on purpose); together they form the global batch.
INPUT_ROWS = [(0, 6), (6, 10)]
DTYPES = [torch.float32, torch.float64]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 5, generator=g, dtype=dtype)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 1])
    return x, labels


def _model(dtype):
    torch.manual_seed(1)
    return torch.nn.Linear(5, 4).to(dtype)


def _cases():
    """name -> (loss factory, miner factory or None, efficient)."""
    return {
        "contrastive": (lambda: losses.ContrastiveLoss(), None, False),
        "triplet": (lambda: losses.TripletMarginLoss(margin=0.5), None, False),
        "triplet_with_miner": (
            lambda: losses.TripletMarginLoss(margin=0.5),
            lambda: miners.TripletMarginMiner(margin=0.5),
            False,
        ),
        "contrastive_with_pair_miner": (
            lambda: losses.ContrastiveLoss(),
            lambda: miners.PairMarginMiner(pos_margin=0.3, neg_margin=1.2),
            False,
        ),
        "contrastive_efficient": (lambda: losses.ContrastiveLoss(), None, True),
        "cross_batch_memory": (
            lambda: losses.CrossBatchMemory(losses.ContrastiveLoss(), 4, memory_size=32),
            None,
            False,
        ),
    }


def _step(model, x, labels, loss_fn, miner):
    """One training step's loss and parameter gradients."""
    model.zero_grad()
    emb = model(x)
    indices = miner(emb, labels) if miner is not None else None
    loss = loss_fn(emb, labels, indices)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def _worker(rank, port, out_path):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        start, end = INPUT_ROWS[rank]
        results = {dtype: _run_cases(rank, start, end, dtype) for dtype in DTYPES}
        # A sampler built inside the process group takes its world size and rank from it.
        sampler = MPerClassSampler(
            [i % 5 for i in range(40)], m=2, batch_size=4, length_before_new_iter=80
        )
        shares = [None] * WORLD_SIZE
        dist.all_gather_object(shares, (sampler.num_replicas, sampler.rank, list(sampler)))
        results["sampler_shares"] = shares
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


def _run_cases(rank, start, end, dtype):
    x, labels = _data(dtype)
    results = {}
    for name, (make_loss, make_miner, efficient) in _cases().items():
        model = _model(dtype)
        loss_fn = dist_utils.DistributedLossWrapper(make_loss(), efficient=efficient)
        miner = None
        if make_miner is not None:
            miner = dist_utils.DistributedMinerWrapper(make_miner(), efficient=efficient)
        loss, grads = _step(model, x[start:end], labels[start:end], loss_fn, miner)
        # What DistributedDataParallel does: average the gradients over processes.
        for g in grads:
            dist.all_reduce(g)
            g /= WORLD_SIZE
        results[name] = (loss, grads)
    results["gathered_other_rank"] = dist_utils.all_gather(x[start:end] * 0 + rank)
    for masked in (False, True):
        steps = _efficient_memory_steps(start, end, dtype, masked)
        everyone = [None] * WORLD_SIZE
        dist.all_gather_object(everyone, steps)
        results[f"efficient_memory_masked_{masked}"] = everyone
    return results


MEMORY_SIZE = 12  # the global batch has 10 rows: the memory wraps around in the second step
MEMORY_STEPS = 3


def _memory_batch(x, step):
    return x * (step + 1)  # another batch each step, from the same rows


def _enqueue_mask(start, end):
    """Every third global row is only enqueued, the others are anchors."""
    return torch.arange(start, end) % 3 == 0


def _memory_loss():
    # A mean over every pair: an anchor's pairing with its own copy (a zero term) would show.
    return losses.ContrastiveLoss(reducer=MeanReducer())


def _efficient_memory_steps(start, end, dtype, masked):
    """Per step of DistributedLossWrapper(CrossBatchMemory, efficient=True): this rank's loss,
    its (not yet averaged) gradients, the memory and the queue position."""
    x, labels = _data(dtype)
    model = _model(dtype)
    wrapper = dist_utils.DistributedLossWrapper(
        losses.CrossBatchMemory(_memory_loss(), 4, memory_size=MEMORY_SIZE), efficient=True
    )
    out = []
    for step in range(MEMORY_STEPS):
        model.zero_grad()
        mask = _enqueue_mask(start, end) if masked else None
        loss = wrapper(model(_memory_batch(x[start:end], step)), labels[start:end], enqueue_mask=mask)
        loss.backward()
        memory = wrapper.loss
        out.append((loss.detach(), [p.grad.clone() for p in model.parameters()],
                    memory.embedding_memory.clone(), memory.label_memory.clone(), memory.queue_idx))
    return out


@pytest.fixture(scope="module")
def _all_results(tmp_path_factory):
    # One pair of processes runs every case in both dtypes (process start-up dominates).
    out_path = str(tmp_path_factory.mktemp("dist") / "results.pt")
    mp.spawn(_worker, args=(_free_port(), out_path), nprocs=WORLD_SIZE, join=True)
    return torch.load(out_path)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def two_process_results(request, _all_results):
    return request.param, _all_results[request.param]


def _single_process(name, dtype):
    make_loss, make_miner, _ = _cases()[name]
    x, labels = _data(dtype)
    miner = make_miner() if make_miner is not None else None
    return _step(_model(dtype), x, labels, make_loss(), miner)


@pytest.mark.parametrize(
    "name",
    ["contrastive", "triplet", "triplet_with_miner", "contrastive_with_pair_miner", "cross_batch_memory"],
)
def test_loss_and_gradients_equal_single_process_on_global_batch(two_process_results, name):
    dtype, results = two_process_results
    dist_loss, dist_grads = results[name]
    loss, grads = _single_process(name, dtype)
    assert loss > 0
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(dist_loss, loss * WORLD_SIZE, **tol)
    for g_dist, g in zip(dist_grads, grads):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g_dist, g, **tol)


def test_efficient_mode_gives_a_finite_loss_with_gradients(two_process_results):
    _, results = two_process_results
    loss, grads = results["contrastive_efficient"]
    assert torch.isfinite(loss) and loss > 0
    assert all(g.abs().sum() > 0 for g in grads)


def test_all_gather_returns_the_other_ranks_rows_only(two_process_results):
    _, results = two_process_results
    # Rank 0 sees rank 1's 4 rows (filled with 1), not its own 6.
    gathered = results["gathered_other_rank"]
    assert gathered.shape == (4, 5)
    assert bool((gathered == 1).all())


def test_m_per_class_sampler_splits_an_epoch_between_ranks(_all_results):
    (world0, rank0, share0), (world1, rank1, share1) = _all_results["sampler_shares"]
    assert (world0, rank0, world1, rank1) == (2, 0, 2, 1)
    assert len(share0) == len(share1) == 40
    batches0 = {tuple(share0[i : i + 4]) for i in range(0, 40, 4)}
    batches1 = {tuple(share1[i : i + 4]) for i in range(0, 40, 4)}
    assert not batches0 & batches1  # different batches of the same epoch list


def test_loss_wrapper_without_process_group_warns_and_returns_plain_loss():
    x, labels = _data(torch.float64)
    wrapper = dist_utils.DistributedLossWrapper(losses.ContrastiveLoss())
    with pytest.warns(UserWarning, match="without an initialised"):
        out = wrapper(x, labels)
    torch.testing.assert_close(out, losses.ContrastiveLoss()(x, labels))


def test_miner_wrapper_without_process_group_is_the_plain_miner():
    x, labels = _data(torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = dist_utils.DistributedMinerWrapper(miners.BatchHardMiner())(x, labels)
    expected = miners.BatchHardMiner()(x, labels)
    assert all(torch.equal(a, b) for a, b in zip(out, expected))


def test_helpers_without_process_group():
    x, labels = _data(torch.float32)
    assert not dist_utils.is_distributed()
    assert dist_utils.all_gather(x) is None
    assert dist_utils.all_gather_embeddings_and_labels(x, labels) == (None, None)
    all_emb, all_labels, local = dist_utils.gather(x, labels)
    assert all_emb is x and all_labels is labels and local is labels
    assert dist_utils.select_ref_or_regular(1, None) == 1
    assert dist_utils.select_ref_or_regular(1, 2) == 2


def test_get_indices_tuple_removes_each_anchors_own_copy():
    labels = torch.tensor([0, 1])
    ref_labels = torch.tensor([0, 1, 0, 1])  # local rows first, then another rank's
    a1, p, a2, _n = dist_utils.get_indices_tuple(labels, ref_labels)
    # (0, 0) and (1, 1) are self-pairs; the positives left are (0, 2) and (1, 3).
    assert sorted(zip(a1.tolist(), p.tolist())) == [(0, 2), (1, 3)]
    assert len(a2) == 4


def _expected_memory_steps(rank, dtype, masked):
    """The efficient memory written out: every process enqueues the global batch (its masked rows)
    in rank order; rank ``rank``'s anchors (its unmasked rows) pair with every memory row except
    their own copy, and the loss is the mean contrastive loss of those pairs, times the world size."""
    x, labels = _data(dtype)
    model = _model(dtype)
    start, end = INPUT_ROWS[rank]
    memory = torch.zeros(MEMORY_SIZE, 4, dtype=dtype)
    memory_labels = torch.zeros(MEMORY_SIZE, dtype=torch.long)
    position, filled, out = 0, False, []
    for step in range(MEMORY_STEPS):
        model.zero_grad()
        emb = model(_memory_batch(x, step))
        queued = torch.ones(10, dtype=torch.bool)
        if masked:
            queued = torch.cat([_enqueue_mask(a, b) for a, b in INPUT_ROWS])
        rows = torch.nonzero(queued).flatten()
        slots = (position + torch.arange(len(rows))) % MEMORY_SIZE
        memory[slots] = emb.detach()[rows]
        memory_labels[slots] = labels[rows]
        filled = filled or position + len(rows) >= MEMORY_SIZE
        position = (position + len(rows)) % MEMORY_SIZE
        size = MEMORY_SIZE if filled else position
        anchors = [i for i in range(start, end) if not (masked and queued[i])]
        pairs = {"pos": [], "neg": []}
        for k, i in enumerate(anchors):
            for j in range(size):
                if not masked and j == int(slots[i]):  # unmasked: global row i sits in slots[i]
                    continue
                pairs["pos" if labels[i] == memory_labels[j] else "neg"].append((k, j))
        a1, p = (torch.tensor(v) for v in zip(*pairs["pos"]))
        a2, n = (torch.tensor(v) for v in zip(*pairs["neg"]))
        loss = _memory_loss()(emb[anchors], labels[anchors], (a1, p, a2, n),
                                        memory[:size].clone(), memory_labels[:size].clone()) * WORLD_SIZE
        loss.backward()
        out.append((loss.detach(), [q.grad.clone() for q in model.parameters()],
                    memory.clone(), memory_labels.clone(), position))
    return out


@pytest.mark.parametrize("masked", [False, True], ids=["all_rows", "enqueue_mask"])
def test_efficient_cross_batch_memory_keeps_one_memory_and_pairs_local_rows_with_it(
    two_process_results, masked
):
    dtype, results = two_process_results
    per_rank = results[f"efficient_memory_masked_{masked}"]
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    for rank in range(WORLD_SIZE):
        expected = _expected_memory_steps(rank, dtype, masked)
        for got, want in zip(per_rank[rank], expected):
            torch.testing.assert_close(got[0], want[0], **tol)
            for g, w in zip(got[1], want[1]):
                torch.testing.assert_close(g, w, **tol)
            torch.testing.assert_close(got[2], want[2], **tol)
            assert torch.equal(got[3], want[3]) and got[4] == want[4]
    # the same memory in every process
    for a, b in zip(per_rank[0], per_rank[1]):
        assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])


def test_efficient_cross_batch_memory_without_process_group_is_the_plain_memory():
    x, labels = _data(torch.float64)
    plain = losses.CrossBatchMemory(losses.ContrastiveLoss(), 5, memory_size=16)
    wrapped = dist_utils.DistributedLossWrapper(
        losses.CrossBatchMemory(losses.ContrastiveLoss(), 5, memory_size=16), efficient=True
    )
    for step in range(3):
        with pytest.warns(UserWarning, match="without an initialised"):
            got = wrapped(x * (step + 1), labels)
        assert torch.equal(got, plain(x * (step + 1), labels))


def test_wrappers_reject_wrong_types():
    with pytest.raises(TypeError, match="metric loss"):
        dist_utils.DistributedLossWrapper(torch.nn.MSELoss())
    with pytest.raises(TypeError, match="BaseMiner"):
        dist_utils.DistributedMinerWrapper(losses.ContrastiveLoss())
