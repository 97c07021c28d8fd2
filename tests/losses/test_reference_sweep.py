"""Every loss the reference has, with every built-in reducer, collect_stats on and off, with and
without a miner's tuple, in float32 and float64, on several random batches: value, gradient
with respect to the embeddings and recorded statistics must be the reference's.

Which terms a reducer keeps (and so its divisor) must be decided exactly as the reference
decides, whichever internal path computes the loss: the batches include grid embeddings (many
exactly tied distances) and margins set to the median gap, so that many hinges sit within
rounding of zero. Values may differ only by rounding (``_reference_sweep.RTOL``); the cases not
compared are the documented differences in ``_reference_sweep.known_difference``.
"""

import _reference_sweep as sweep
import pytest
import torch

from conftest import requires_reference

pytestmark = requires_reference

# Three batches per dtype: a Gaussian one and two grid ones (exact ties), each with its own seed.
BATCHES = {
    torch.float32: ((0, "gaussian"), (1, "grid"), (8, "grid")),
    torch.float64: ((2, "gaussian"), (3, "grid"), (4, "grid")),
}


@pytest.fixture(autouse=True)
def _one_thread():
    # Thousands of tiny calls: thread start-up would dominate.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("loss_name", list(sweep.LOSSES))
def test_loss_matches_reference_with_every_reducer(loss_name, dtype):
    problems = []
    for seed, kind in BATCHES[dtype]:
        data = sweep.make_data(seed, dtype, kind)
        for reducer_name in sweep.REDUCERS:
            for collect_stats in (False, True):
                for with_miner in (False, True):
                    for problem in sweep.run_case(
                        loss_name, reducer_name, data, dtype, collect_stats, with_miner
                    ):
                        where = f"seed {seed} {kind}, collect_stats={collect_stats}, miner={with_miner}"
                        problems.append(f"[{reducer_name}; {where}] {problem}")
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])


def test_sweep_detects_a_miscounted_hinge():
    """The comparison itself: a reducer that drops one kept term is reported."""
    data = sweep.make_data(0, torch.float64, "gaussian")
    data.setdefault("thresholds", {})["TripletMarginLoss"] = (0.1, 0.2, 1.0)
    ref, state = sweep.call(
        sweep.LIBRARIES[0], "TripletMarginLoss", "AvgNonZero", data, torch.float64, False, None, None
    )
    ours, _ = sweep.call(
        sweep.LIBRARIES[1], "TripletMarginLoss", "AvgNonZero", data, torch.float64, False, None, state
    )
    assert sweep.compare(ours, ref, torch.float64) == []
    num_kept = ref.stats.get("reducer.num_past_filter") or 1000
    ours.value = ours.value * num_kept / (num_kept - 1)  # a mean over one term fewer
    assert any(p.startswith("value") for p in sweep.compare(ours, ref, torch.float64))
