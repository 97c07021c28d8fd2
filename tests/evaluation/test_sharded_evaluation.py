"""sharded_accuracy: two gloo processes, each with a shard of the query and reference sets, get
exactly the metrics of AccuracyCalculator on the whole sets."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepmetric.evaluation.sharded_evaluation import sharded_accuracy
from deepmetric.utils.accuracy_calculator import AccuracyCalculator

# (query rows, reference rows) of each rank
SPLITS = {
    "same_set": ([(0, 23), (23, 50)], None),
    "separate_sets": ([(0, 10), (10, 30)], [(0, 31), (31, 40)]),
}
CALCULATORS = {
    "default": lambda: AccuracyCalculator(),
    "at_k_and_avg_of_avgs": lambda: AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "mean_reciprocal_rank"),
        k_values=(1, 3),
        avg_of_avgs=True,
    ),
    "max_bin_count": lambda: AccuracyCalculator(exclude=("NMI", "AMI"), k="max_bin_count"),
    # pair-level figures: counts summed over ranks, own pairs (query i, reference i) left out
    "verification": lambda: AccuracyCalculator(
        include=("roc_auc", "eer", "best_f1", "tar_at_far_0.1", "fnmr_at_fmr_0.05", "precision_at_1")
    ),
}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (50,), generator=g)
    labels[-1] = 7  # a lone label
    emb = torch.randn(5 + 3, 4, generator=g)[labels] + 0.8 * torch.randn(50, 4, generator=g)
    ref_labels = torch.randint(0, 5, (40,), generator=g)
    ref = torch.randn(5, 4, generator=g)[ref_labels] + 0.8 * torch.randn(40, 4, generator=g)
    return emb, labels, ref, ref_labels


def _expected(case, name):
    emb, labels, ref, ref_labels = _data()
    calculator = CALCULATORS[name]()
    if case == "same_set":
        return calculator.get_accuracy(emb, labels)
    return calculator.get_accuracy(emb[:30], labels[:30], ref, ref_labels)


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        emb, labels, ref, ref_labels = _data()
        results = {}
        for case, (q_rows, r_rows) in SPLITS.items():
            qs, qe = q_rows[rank]
            for name, make in CALCULATORS.items():
                if r_rows is None:
                    results[(case, name)] = sharded_accuracy(make(), emb[qs:qe], labels[qs:qe])
                else:
                    rs, re = r_rows[rank]
                    results[(case, name)] = sharded_accuracy(
                        make(), emb[qs:qe], labels[qs:qe], ref[rs:re], ref_labels[rs:re]
                    )
        # a rank without query rows still takes part in the verification passes
        qs, qe = [(0, 0), (0, 30)][rank]
        rs, re = SPLITS["separate_sets"][1][rank]
        results[("empty_query_shard", "verification")] = sharded_accuracy(
            CALCULATORS["verification"](), emb[qs:qe], labels[qs:qe], ref[rs:re], ref_labels[rs:re]
        )
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def shard_results(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sharded_eval") / "result")
    mp.start_processes(_worker, args=(_free_port(), out), nprocs=2, join=True, start_method="fork")
    return [torch.load(f"{out}.{rank}") for rank in range(2)]


@pytest.mark.parametrize("case", list(SPLITS))
@pytest.mark.parametrize("name", list(CALCULATORS))
def test_sharded_metrics_equal_single_process(shard_results, case, name):
    expected = _expected(case, name)
    for result in shard_results:
        got = result[(case, name)]
        assert list(got) == list(expected)
        for metric, value in expected.items():
            assert got[metric] == pytest.approx(value, rel=1e-12, abs=1e-12), metric


def test_without_a_process_group_it_is_the_calculator():
    emb, labels, _, _ = _data()
    assert sharded_accuracy(AccuracyCalculator(), emb, labels) == AccuracyCalculator().get_accuracy(
        emb, labels
    )


def test_a_rank_without_queries_takes_part_in_verification(shard_results):
    expected = _expected("separate_sets", "verification")
    for result in shard_results:
        got = result[("empty_query_shard", "verification")]
        assert list(got) == list(expected)
        for metric, value in expected.items():
            assert got[metric] == pytest.approx(value, rel=1e-12, abs=1e-12), metric
