"""sharded_knn: two gloo processes, each with a shard, give exactly the single-process kNN."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepmetric.distances import CosineSimilarity
from deepmetric.evaluation.knn import exact_knn
from deepmetric.evaluation.sharded_knn import sharded_knn

# (query rows, reference rows) of each rank; rank 1 holds no reference rows in the second case.
SPLITS = {
    "same_set": ([(0, 9), (9, 20)], [(0, 9), (9, 20)]),
    "separate_sets": ([(0, 4), (4, 11)], [(0, 17), (17, 17)]),
}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(name="l2"):
    g = torch.Generator().manual_seed(0)
    if name == "cosine":
        # Normalising makes rounding depend on the block shapes, so avoid exact ties here.
        return torch.randn(20, 3, generator=g), torch.randn(17, 3, generator=g)
    # Small integers: squared L2 distances are exact and often tied, so the tie-breaking rule is
    # exercised.
    query = torch.randint(-2, 3, (20, 3), generator=g).float()
    reference = torch.randint(-2, 3, (17, 3), generator=g).float()
    return query, reference


def _expected(case, k, distance, name):
    query, reference = _data(name)
    if case == "same_set":
        return exact_knn(query, k, query, ref_includes_query=True, distance=distance)
    return exact_knn(query[:11], k, reference, distance=distance)


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        results = {}
        for case, (q_rows, r_rows) in SPLITS.items():
            (qs, qe), (rs, re) = q_rows[rank], r_rows[rank]
            for name, distance in (("l2", None), ("cosine", CosineSimilarity())):
                query, reference = _data(name)
                ref_set = query if case == "same_set" else reference
                for k in (1, 5):
                    results[(case, name, k)] = sharded_knn(
                        query[qs:qe],
                        k,
                        ref_set[rs:re],
                        ref_includes_query=case == "same_set",
                        distance=distance,
                    )
        query, reference = _data()
        try:
            sharded_knn(query[:3], 40, reference[:3])
        except ValueError as err:
            results["too_many"] = str(err)
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def shard_results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sharded") / "result")
    mp.start_processes(_worker, args=(_free_port(), out), nprocs=2, join=True, start_method="fork")
    return [torch.load(f"{out}.{rank}") for rank in range(2)]


@pytest.mark.parametrize("case", list(SPLITS))
@pytest.mark.parametrize("name", ["l2", "cosine"])
@pytest.mark.parametrize("k", [1, 5])
def test_sharded_knn_equals_single_process(shard_results, case, name, k):
    distance = CosineSimilarity() if name == "cosine" else None
    values = torch.cat([r[(case, name, k)][0] for r in shard_results])
    indices = torch.cat([r[(case, name, k)][1] for r in shard_results])
    expected_values, expected_indices = _expected(case, k, distance, name)
    torch.testing.assert_close(values, expected_values)
    assert torch.equal(indices, expected_indices)


def test_k_larger_than_all_shards_together_is_rejected(shard_results):
    assert "exceeds the number of reference embeddings over all ranks (6)" in shard_results[0]["too_many"]


def test_without_a_process_group_it_is_exact_knn():
    query, reference = _data()
    values, indices = sharded_knn(query, 3, reference)
    expected_values, expected_indices = exact_knn(query, 3, reference)
    assert torch.equal(indices, expected_indices) and torch.equal(values, expected_values)
