"""Error types of deepmetric.

The reference library signals many bad arguments with a bare ``assert``. Asserts vanish under
``python -O`` and say little, so deepmetric raises :class:`ArgumentError` instead: it subclasses
both ``ValueError`` and ``AssertionError``, so code written against either keeps working.
"""


class ArgumentError(ValueError, AssertionError):
    """A bad argument or an inconsistent input, explained in the message."""


def require(condition, message):
    """Raise :class:`ArgumentError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ArgumentError(message)


class IndexArgumentError(ArgumentError, IndexError, RuntimeError):
    """A bad index argument: an index out of range, index lists of mismatched lengths, or
    labels that must index classes but are not integers. It also subclasses ``IndexError`` and
    ``RuntimeError``, what torch raises deep inside for the same mistakes."""
