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


class SearchInputError(ArgumentError, RuntimeError, IndexError):
    """Embeddings, ``k`` or a cluster count that a nearest-neighbour search, a k-means run or an
    evaluation cannot use (wrong shape, empty, too few points, NaN).

    For the same inputs the reference library fails inside faiss or torch with a
    ``RuntimeError``, an ``AssertionError`` or an ``IndexError`` depending on the call, so this
    subclasses all of them (and ``ValueError``, through :class:`ArgumentError`).
    """


class IndexFileError(ValueError, RuntimeError):
    """A file given to load a search index is not one (or cannot be read). The reference reads
    index files with faiss, which raises ``RuntimeError`` there."""


class IndexFileNotFoundError(IndexFileError, FileNotFoundError):
    """The index file to load does not exist (faiss raises ``RuntimeError`` there)."""
