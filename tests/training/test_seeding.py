"""seed_everything: one call seeds python, numpy and torch; the library's own generator
``c_f.NUMPY_RANDOM`` is replaced only when asked (the command line asks, the trainers do not)."""

import random

import numpy as np
import torch

from deepmetric.training.seeding import seed_everything
from deepmetric.utils import common_functions as c_f


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_the_same_seed_gives_the_same_draws_and_another_seed_others():
    seed_everything(123)
    first = draws()
    seed_everything(123)
    assert draws() == first
    seed_everything(124)
    assert draws() != first


def test_numpy_takes_the_seed_modulo_two_to_the_32():
    seed_everything(2**32 + 7)
    big = draws()
    seed_everything(7)
    small = draws()
    assert big[1] == small[1]  # numpy's generator: same seed after the modulo
    assert big[0] != small[0]  # python's takes the whole seed


def test_the_library_generator_is_replaced_only_when_asked(monkeypatch):
    mine = np.random.RandomState(5)
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", mine)
    seed_everything(3)
    assert c_f.NUMPY_RANDOM is mine
    seed_everything(3, library_generator=True)
    assert isinstance(c_f.NUMPY_RANDOM, np.random.RandomState) and c_f.NUMPY_RANDOM is not mine
    assert c_f.NUMPY_RANDOM.rand() == np.random.RandomState(3).rand()
