"""Index files of the kNN backends: faiss flat indexes and deepmetric's own torch files.

The reference saves ``InferenceModel``'s index with ``faiss.write_index``; for a flat index the
file is a four-letter code (``IxF2`` for ``IndexFlatL2``, ``IxFI`` for ``IndexFlatIP``), a
header and the raw float32 vectors, little-endian::

    fourcc | d: int32 | ntotal: int64 | 2 x int64 (1 << 20) | is_trained: uint8 |
    metric_type: int32 | count: uint64 (= ntotal * d) | count x float32

This module reads and writes that layout without faiss, so files move both ways between the
reference (faiss) and ``ExactKNN``. Embeddings a flat faiss index cannot hold (another distance,
float64) are saved with ``torch.save`` as ``{"format": "deepmetric.ExactKNN", "index": tensor}``.
A file is recognised by its first bytes, never by trying to unpickle it.
"""

import os
import struct
import tempfile

import numpy as np
import torch

from ..distances.dot_product_similarity import DotProductSimilarity
from ..distances.lp_distance import LpDistance
from ..utils.errors import IndexFileError, IndexFileNotFoundError

TORCH_FORMAT = "deepmetric.ExactKNN"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's (zip) format
_FAISS_FLAT = {b"IxF2": 1, b"IxFI": 0}  # fourcc -> faiss metric_type (METRIC_L2 = 1, IP = 0)
_HEADER = struct.Struct("<iqqqBi")  # d, ntotal, two dummies, is_trained, metric_type
_COUNT = struct.Struct("<Q")
_DUMMY = 1 << 20


def file_kind(filename, user):
    """``"torch"``, ``"faiss-flat"`` or ``"faiss"`` (another faiss index type, or something
    only faiss can tell) from the first bytes of ``filename``."""
    head = _read_head(filename, user)
    if head.startswith(_ZIP_MAGIC):
        return "torch"
    if head[:4] in _FAISS_FLAT:
        return "faiss-flat"
    return "faiss"


def load_index_file(filename, user):
    """``(embeddings, distance)`` stored in ``filename``: a faiss flat index (``distance`` is its
    metric as a deepmetric distance) or a deepmetric torch file (``distance`` None). Anything
    else raises :class:`IndexFileError` naming the file and the formats expected."""
    kind = file_kind(filename, user)
    if kind == "torch":
        return load_torch_index(filename, user), None
    if kind == "faiss-flat":
        return read_faiss_flat(filename, user)
    raise IndexFileError(
        f"{user}: {os.fspath(filename)!r} is neither a faiss flat index (IndexFlatL2 / "
        "IndexFlatIP, as written by faiss.write_index) nor an index saved by ExactKNN.save; "
        "other faiss index types can be loaded with FaissKNN"
    )


def load_torch_index(filename, user):
    """The embeddings tensor of a torch file written by :func:`save_exact_index`."""
    try:
        state = torch.load(filename, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged archive
        raise IndexFileError(
            f"{user}: {os.fspath(filename)!r} looks like a torch file but cannot be read as an "
            f"ExactKNN index ({type(exc).__name__}: {exc})"
        ) from exc
    index = state.get("index") if isinstance(state, dict) else None
    if not isinstance(index, torch.Tensor) or index.ndim != 2:
        raise IndexFileError(
            f"{user}: {os.fspath(filename)!r} is a torch file but not an ExactKNN index "
            "(expected a dict with a 2-D 'index' tensor)"
        )
    return index


def read_faiss_flat(filename, user):
    """``(vectors, distance)`` of a faiss ``IndexFlatL2`` / ``IndexFlatIP`` file."""
    name = os.fspath(filename)
    with _open(filename, user) as f:
        data = f.read()
    fourcc, body = data[:4], data[4:]
    problem = None
    if len(body) < _HEADER.size + _COUNT.size:
        problem = "the header is truncated"
    else:
        d, ntotal, _, _, _, metric = _HEADER.unpack_from(body)
        (count,) = _COUNT.unpack_from(body, _HEADER.size)
        start = _HEADER.size + _COUNT.size
        if metric != _FAISS_FLAT[fourcc]:
            problem = f"metric type {metric} does not match its code {fourcc.decode()}"
        elif d < 1 or ntotal < 0 or count != ntotal * d:
            problem = f"it declares {ntotal} vectors of width {d} but {count} numbers"
        elif len(body) - start != 4 * count:
            problem = f"it should hold {4 * count} bytes of vectors, not {len(body) - start}"
    if problem is not None:
        raise IndexFileError(f"{user}: {name!r} is not a valid faiss flat index: {problem}")
    vectors = np.frombuffer(body, dtype="<f4", count=count, offset=start).reshape(ntotal, d)
    if metric == 1:
        distance = LpDistance(normalize_embeddings=False, p=2, power=2)
    else:
        distance = DotProductSimilarity(normalize_embeddings=False)
    return torch.from_numpy(vectors.astype(np.float32)), distance


def save_exact_index(filename, index, distance):
    """Write ``index`` (the stored embeddings) as a faiss flat index when a flat faiss index
    searches it with the same metric (squared L2 or dot product of raw float32 vectors),
    otherwise as a torch file. The file is replaced atomically."""
    metric = _faiss_metric(distance)
    exact_in_float32 = index.dtype in (torch.float32, torch.float16, torch.bfloat16)
    if metric is not None and exact_in_float32:
        vectors = index.detach().float().cpu().contiguous().numpy()
        n, d = vectors.shape
        fourcc = b"IxF2" if metric == 1 else b"IxFI"
        payload = (
            fourcc
            + _HEADER.pack(d, n, _DUMMY, _DUMMY, 1, metric)
            + _COUNT.pack(n * d)
            + vectors.astype("<f4").tobytes()
        )
        _atomic_write(filename, lambda f: f.write(payload))
    else:
        state = {"format": TORCH_FORMAT, "index": index.detach().cpu()}
        _atomic_write(filename, lambda f: torch.save(state, f))


def _faiss_metric(distance):
    kind = type(distance)
    if kind is LpDistance and distance.p == 2 and distance.power == 2 and not distance.normalize_embeddings:
        return 1
    if kind is DotProductSimilarity and distance.power == 1 and not distance.normalize_embeddings:
        return 0
    return None


def _atomic_write(filename, write):
    path = os.fspath(filename)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _open(filename, user):
    try:
        return open(filename, "rb")
    except FileNotFoundError:
        raise IndexFileNotFoundError(f"{user}: no index file at {os.fspath(filename)!r}") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise IndexFileError(f"{user}: cannot read {os.fspath(filename)!r} ({exc.strerror})") from exc


def _read_head(filename, user):
    with _open(filename, user) as f:
        return f.read(8)
