"""ops.gather's differentiable collectives, with three real gloo processes holding batches of
different sizes: the autograd all-gather (each process gets back the sum of every process's
gradient for its rows), the gradient summed over processes, the scalar sum, and one step of the
ring (rows go to the next rank, gradients back to the previous one)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepmetric.ops import gather

ROWS = [2, 4, 3]  # rank r holds ROWS[r] rows
WORLD = len(ROWS)
OFFSETS = [sum(ROWS[:r]) for r in range(WORLD)]


def _rows_of(rank):
    # Row i of rank r is (r, i, i + 0.5).
    i = torch.arange(ROWS[rank], dtype=torch.float64)
    return torch.stack([torch.full_like(i, rank), i, i + 0.5], dim=1)


def _gather_weights(rank):
    """The weights process ``rank`` puts on the gathered rows (different in every process)."""
    g = torch.Generator().manual_seed(10 + rank)
    return torch.randn(sum(ROWS), 3, generator=g, dtype=torch.float64)


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        x = _rows_of(rank).requires_grad_()
        gathered = gather.gather_rows_with_grad(x)
        (gathered * _gather_weights(rank)).sum().backward()
        gather_grad, x.grad = x.grad.clone(), None

        scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        summed = gather.sum_gradient_over_processes(scale)
        ((rank + 1) * summed).backward()

        received = gather.pass_to_next_rank(x, ROWS[(rank - 1) % WORLD])
        (received * (rank + 1)).sum().backward()

        results = {
            "counts": gather.row_counts(x),
            "gathered": gathered.detach(),
            "gather_grad": gather_grad,
            "summed": summed.detach(),
            "scale_grad": scale.grad.clone(),
            "value_sum": gather.sum_over_processes(torch.tensor(float(rank + 1))),
            "received": received.detach(),
            "ring_grad": x.grad.clone(),
        }
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path_factory.mktemp("gather_autograd") / "res")
    mp.start_processes(_worker, args=(port, out), nprocs=WORLD, join=True, start_method="fork")
    return [torch.load(f"{out}.{rank}") for rank in range(WORLD)]


def test_row_counts_and_the_gathered_rows(results):
    everyone = torch.cat([_rows_of(r) for r in range(WORLD)])
    for result in results:
        assert result["counts"] == ROWS
        assert torch.equal(result["gathered"], everyone)


def test_the_gather_returns_every_process_gradient_of_the_own_rows(results):
    total = sum(_gather_weights(q) for q in range(WORLD))  # d(sum of all losses)/d rows
    for rank, result in enumerate(results):
        rows = slice(OFFSETS[rank], OFFSETS[rank] + ROWS[rank])
        torch.testing.assert_close(result["gather_grad"], total[rows], rtol=1e-12, atol=1e-12)


def test_summed_gradient_and_value(results):
    for result in results:
        assert result["summed"].item() == 2.0  # the forward pass is the identity
        assert result["scale_grad"].item() == 1 + 2 + 3  # the sum of every process's (rank + 1)
        assert result["value_sum"].item() == 6.0


def test_the_ring_sends_forward_and_the_gradient_back(results):
    for rank, result in enumerate(results):
        previous, following = (rank - 1) % WORLD, (rank + 1) % WORLD
        assert torch.equal(result["received"], _rows_of(previous))
        # the next rank weighted the rows it received from this one by (its rank + 1)
        assert torch.equal(result["ring_grad"], torch.full((ROWS[rank], 3), following + 1.0, dtype=torch.float64))
