"""Error types of deepmetric.

The reference library signals many bad arguments with a bare ``assert``. Asserts vanish under
``python -O`` and say little, so deepmetric raises :class:`ArgumentError` instead: it subclasses
both ``ValueError`` and ``AssertionError``, so code written against either keeps working.

Where the reference fails on a bad input with whatever breaks first deep inside (an
``IndexError`` from indexing, a ``RuntimeError`` from a matrix product, an ``AttributeError`` on
``None``, a ``ZeroDivisionError``), deepmetric checks the input up front and raises one of the
classes below: each keeps a clear message naming the argument and also subclasses the types the
reference raises for that kind of mistake, so a ported ``except RuntimeError:`` (or
``IndexError``, ...) still catches it.
"""


class ArgumentError(ValueError, AssertionError):
    """A bad argument or an inconsistent input, explained in the message."""


# --- Errors that also carry the reference's exception types -----------------------------------


class ShapeError(ArgumentError, IndexError, RuntimeError):
    """A tensor of the wrong shape: wrong number of dimensions, mismatched widths or lengths, an
    empty batch, a row count that does not match (the reference: ``IndexError`` or
    ``RuntimeError`` from indexing or a matrix product)."""


class IndexArgumentError(ArgumentError, IndexError, RuntimeError):
    """A bad index argument: an index out of range, index lists of mismatched lengths, or
    labels that must index classes but are not integers. It also subclasses ``IndexError`` and
    ``RuntimeError``, what torch raises deep inside for the same mistakes."""


class OutOfRangeError(IndexArgumentError):
    """A label, index or ``k`` outside its valid range (the reference: ``IndexError`` from
    indexing, or ``RuntimeError`` from ``one_hot``, ``scatter`` or ``topk``)."""


class MissingInputError(ArgumentError, AttributeError, TypeError, IndexError):
    """A required input is ``None`` (labels, ref_labels, reference_labels, a threshold); the
    reference fails with ``AttributeError`` or ``TypeError`` on ``None``, or with ``IndexError``
    comparing the wrong labels."""


class UnknownNameError(ArgumentError, AttributeError, KeyError):
    """An unknown name (a reduction type, a dataset split); the reference fails with the
    ``AttributeError`` or ``KeyError`` of the lookup."""

    __str__ = ValueError.__str__  # KeyError's own __str__ would quote the message


class SizeArgumentError(ArgumentError, ZeroDivisionError, IndexError, RuntimeError):
    """A size, count or bin-width argument outside its range (``num_bins=0``, ``m=0``,
    ``num_classes=0``, ...); the reference divides by it (``ZeroDivisionError``) or builds empty
    tensors from it (``IndexError``/``RuntimeError``)."""


class NotATensorError(TypeError, AttributeError):
    """A tensor argument given as something else (a list, a NumPy array); the reference fails
    with ``AttributeError`` on ``.shape``, ``.norm`` or ``.device``."""


class DtypeError(TypeError, IndexError, RuntimeError):
    """A tensor of the wrong dtype (integer embeddings, floating-point labels); the reference
    fails inside torch with ``IndexError`` or ``RuntimeError``."""


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


def require(condition, message, error=ArgumentError):
    """Raise ``error`` (default :class:`ArgumentError`) with ``message`` unless ``condition``
    holds."""
    if not condition:
        raise error(message)
