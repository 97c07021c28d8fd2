"""The random draws of faiss' k-means, reproduced without faiss.

faiss draws with ``faiss::RandomGenerator``: a 32-bit Mersenne Twister (``std::mt19937``) seeded
with ``(unsigned int) seed``. ``rand_int(m)`` is ``mt() % m`` and ``rand_float()`` is
``float(mt()) / float(mt.max())`` in single precision. numpy's ``MT19937`` bit generator is the
same engine; only its seeding differs, so the state is built here with the standard
``init_genrand`` recurrence and handed to numpy, which then yields the very same 32-bit words.
"""

import numpy as np

_MT_N = 624
_MASK32 = 0xFFFFFFFF
_FLOAT_MT_MAX = np.float32(4294967295.0)  # rounds to 2**32, as in C++


def _mt19937(seed):
    """A numpy ``MT19937`` in the state ``std::mt19937(seed)`` starts from."""
    key = [int(seed) & _MASK32]
    for i in range(1, _MT_N):
        prev = key[-1]
        key.append((1812433253 * (prev ^ (prev >> 30)) + i) & _MASK32)
    engine = np.random.MT19937()
    engine.state = {
        "bit_generator": "MT19937",
        "state": {"key": np.array(key, dtype=np.uint32), "pos": _MT_N},
    }
    return engine


class FaissRandomGenerator:
    """``faiss::RandomGenerator(seed)``: the same sequence of draws."""

    def __init__(self, seed):
        self._engine = _mt19937(seed)
        self._buffer = []  # words drawn ahead, next one last

    def raw(self, count):
        """The next ``count`` 32-bit outputs of the engine, as a list of Python ints."""
        ahead = [self._buffer.pop() for _ in range(min(count, len(self._buffer)))]
        return ahead + self._engine.random_raw(count - len(ahead)).tolist()

    def rand_float(self):
        """The next word as a float in [0, 1], rounded as faiss rounds it (single precision)."""
        if not self._buffer:
            self._buffer = self._engine.random_raw(256).tolist()[::-1]
        return float(np.float32(self._buffer.pop()) / _FLOAT_MT_MAX)


def rand_perm_prefix(n, m, seed):
    """The first ``m`` entries of ``faiss::rand_perm(perm, n, seed)``.

    faiss shuffles ``0..n-1`` with Fisher-Yates, step ``i`` swapping entry ``i`` with entry
    ``i + rand_int(n - i)``. Entry ``i`` is final after step ``i``, so the first ``m`` entries
    need only the first ``m`` steps, and a dictionary of the displaced entries replaces the
    array of ``n``.
    """
    draws = FaissRandomGenerator(seed).raw(m)
    displaced = {}
    prefix = []
    for i, word in enumerate(draws):
        j = i + word % (n - i)
        prefix.append(displaced.get(j, j))
        displaced[j] = displaced.get(i, i)
    return prefix
