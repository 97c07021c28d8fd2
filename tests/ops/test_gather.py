"""ops.gather: every process's rows in rank order (two real gloo processes with batches of
different sizes), the local rows keeping their graph, and the answers without a process group."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepmetric.ops import gather

ROWS = [3, 5]  # rank r holds ROWS[r] rows


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows_of(rank, dtype):
    # Row i of rank r is (r, i, i + 0.5): easy to check where it landed.
    i = torch.arange(ROWS[rank], dtype=dtype)
    return torch.stack([torch.full_like(i, rank), i, i + 0.5], dim=1)


def _worker(rank, port, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=len(ROWS))
    try:
        results = {"distributed": gather.is_distributed(), "world_size": gather.world_size()}
        for dtype in (torch.float32, torch.float64):
            x = _rows_of(rank, dtype).requires_grad_()
            parts = gather.all_gather_rows(x)
            together = gather.gather_rows(x)
            local_graph = gather.gather_rows_keeping_local_graph(x)
            # Every row of the result weighted by its global position: only the local rows may
            # receive a gradient, and each exactly its weight.
            weights = torch.arange(1, len(local_graph) + 1, dtype=dtype)[:, None]
            (local_graph * weights).sum().backward()
            results[dtype] = {
                "parts": [p.detach() for p in parts],
                "parts_need_grad": [p.requires_grad for p in parts],
                "together": together.detach(),
                "together_needs_grad": together.requires_grad,
                "local_graph": local_graph.detach(),
                "grad": x.grad.clone(),
            }
        torch.save(results, f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out_path = str(tmp_path_factory.mktemp("gather") / "results.pt")
    mp.spawn(_worker, args=(_free_port(), out_path), nprocs=len(ROWS), join=True)
    return [torch.load(f"{out_path}.{rank}") for rank in range(len(ROWS))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_every_process_receives_every_rank_rows_in_rank_order(results, dtype):
    everyone = torch.cat([_rows_of(r, dtype) for r in range(len(ROWS))])
    for result in results:
        assert result["distributed"] and result["world_size"] == len(ROWS)
        got = result[dtype]
        assert [p.shape[0] for p in got["parts"]] == ROWS  # padding trimmed
        for r, part in enumerate(got["parts"]):
            assert torch.equal(part, _rows_of(r, dtype))
        assert got["parts_need_grad"] == [False, False]
        assert torch.equal(got["together"], everyone) and not got["together_needs_grad"]
        assert torch.equal(got["local_graph"], everyone)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_only_the_local_rows_keep_their_graph(results, dtype):
    for rank, result in enumerate(results):
        offset = sum(ROWS[:rank])
        expected = torch.arange(offset + 1, offset + ROWS[rank] + 1, dtype=dtype)[:, None].expand(-1, 3)
        assert torch.equal(result[dtype]["grad"], expected)


def test_without_a_process_group():
    assert not gather.is_distributed()
    assert gather.world_size() == 1
