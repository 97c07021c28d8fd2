"""Shared test fixtures and helpers."""

import importlib.util
import os

import numpy as np
import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers share the machine's cores; one thread each avoids oversubscription.
    torch.set_num_threads(1)


def reference_available():
    """True when pytorch-metric-learning (the oracle for comparison tests) is installed."""
    return importlib.util.find_spec("pytorch_metric_learning") is not None


requires_reference = pytest.mark.skipif(
    not reference_available(), reason="pytorch-metric-learning (oracle) not installed"
)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture(
    params=[torch.float16, torch.float32, torch.float64], ids=["float16", "float32", "float64"]
)
def any_dtype(request):
    return request.param


def tolerance(dtype):
    """(rtol, atol) suited to comparing results computed in ``dtype``."""
    if dtype == torch.float16:
        return 1e-2, 1e-2
    if dtype == torch.bfloat16:
        return 5e-2, 5e-2
    if dtype == torch.float32:
        return 1e-5, 1e-6
    return 1e-10, 1e-12


@pytest.fixture
def seed_both(monkeypatch):
    """``seed_both(s)`` gives deepmetric's and the reference's ``c_f.NUMPY_RANDOM`` each a
    ``RandomState(s)`` (two generators in the same state) and calls ``torch.manual_seed(s)``;
    both modules get their generator back after the test. Skips without the reference."""
    theirs = pytest.importorskip("pytorch_metric_learning.utils.common_functions")
    from deepmetric.utils import common_functions as ours

    def seed(s):
        monkeypatch.setattr(ours, "NUMPY_RANDOM", np.random.RandomState(s))
        monkeypatch.setattr(theirs, "NUMPY_RANDOM", np.random.RandomState(s))
        torch.manual_seed(s)

    return seed


@pytest.fixture(autouse=True)
def _library_generator_restored():
    """Every test gets ``c_f.NUMPY_RANDOM`` back as it found it: a run seeded by the CLI replaces
    it on purpose (as the reference's own seeding does), and a later test that seeds numpy's
    global generator must not draw from a generator left behind by another test."""
    from deepmetric.utils import common_functions as c_f

    saved = c_f.NUMPY_RANDOM
    yield
    c_f.NUMPY_RANDOM = saved
