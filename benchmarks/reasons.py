"""Why a row misses a target (see ``benchmarks/targets.py``), in the words the tables print.

Keys are ``(row name, target)`` or ``(row name, target, N)``; targets are ``"speed"``,
``"floor"`` and ``"memory"``. Every miss in the published tables needs an entry here; the
summary line lists the ones that have none.
"""

WHY = {}


def why(name, target, n):
    return WHY.get((name, target, n)) or WHY.get((name, target))
