"""One call that seeds every random generator a training run draws from."""

import random

import numpy as np
import torch

from ..utils import common_functions as c_f


def seed_everything(seed, library_generator=False):
    """Seed python's ``random``, numpy's global generator and torch (CPU and every CUDA device)
    with ``seed`` (numpy with ``seed mod 2**32``, the range it accepts).

    ``library_generator=True`` also replaces ``c_f.NUMPY_RANDOM``, the generator the library's
    samplers and miners draw from, by ``np.random.RandomState(seed mod 2**32)``; otherwise a
    generator a user has put there is left as it is.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if library_generator:
        c_f.NUMPY_RANDOM = np.random.RandomState(seed % 2**32)
