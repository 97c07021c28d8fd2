"""Inference with a trained embedding model: nearest-neighbour search and match finding.

The default kNN backend is :class:`~deepmetric.evaluation.knn.ExactKNN` (pure torch, exact, bounded
memory). :class:`FaissKNN` / :class:`FaissKMeans` keep the reference library's faiss-based API;
faiss is imported only when they are used (``pip install deepmetric[faiss]``).
"""

import os

import numpy as np
import torch

from ..distances import BatchedDistance, CosineSimilarity
from ..utils import common_functions as c_f
from ..utils.errors import IndexFileError, MissingInputError, OutOfRangeError, SearchInputError
from ._index_files import file_kind, load_torch_index
from .calibration import Threshold, calibrate
from .knn import ExactKNN, drop_own_entry, exact_knn


def _import_faiss(user):
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            f"{user} needs faiss, which is not installed. Install the optional extra with "
            "`pip install deepmetric[faiss]` (or `pip install faiss-cpu`), or use the faiss-free "
            "deepmetric.evaluation.knn.ExactKNN / deepmetric.evaluation.kmeans.TorchKMeans."
        ) from exc
    return faiss


def _check_search_inputs(query, k, reference):
    """The reference's faiss search fails obscurely (or returns -1 indices) on these."""
    for name, x in (("query", query), ("reference", reference)):
        if x is not None and len(getattr(x, "shape", ())) != 2:
            raise SearchInputError(f"{name} must be 2-D (num_embeddings, dim), got shape {tuple(x.shape)}")
    if reference is not None and reference.shape[1] != query.shape[1]:
        raise SearchInputError(
            f"query and reference must have the same width, got {query.shape[1]} and {reference.shape[1]}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SearchInputError(f"k must be a positive int, got {k!r}")


def _to_float32_numpy(x):
    x = c_f.numpy_to_torch(x)
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


class MatchFinder:
    """Decides whether embeddings match: ``value >= threshold`` for similarities
    (``distance.is_inverted``), ``value <= threshold`` for distances.

    ``distance`` defaults to :class:`CosineSimilarity` (the reference requires it).
    ``threshold`` is a number or a calibrated
    :class:`~deepmetric.evaluation.calibration.Threshold` (made for the same kind of distance);
    :attr:`calibration` then reports it, with the figures it achieved.
    """

    def __init__(self, distance=None, threshold=None):
        self.distance = CosineSimilarity() if distance is None else distance
        self.threshold = threshold

    @property
    def threshold(self):
        return self._threshold_setting

    @threshold.setter
    def threshold(self, threshold):
        self._check_calibrated(threshold)
        self._threshold_setting = threshold

    @property
    def calibration(self):
        """The calibrated :class:`~deepmetric.evaluation.calibration.Threshold` in use, or None
        for a plain number."""
        return self.threshold if isinstance(self.threshold, Threshold) else None

    def _check_calibrated(self, threshold):
        if not isinstance(threshold, Threshold):
            return
        name = type(self.distance).__name__
        if threshold.distance != name or threshold.is_distance == bool(self.distance.is_inverted):
            raise ValueError(
                f"threshold was calibrated for {threshold.distance} but this MatchFinder uses {name}; "
                "calibrate with the MatchFinder's distance"
            )

    def operate_on_emb(self, input_func, query_emb, ref_emb=None, *args, **kwargs):
        if ref_emb is None:
            ref_emb = query_emb
        return input_func(query_emb, ref_emb, *args, **kwargs)

    def get_matching_pairs(self, query_emb, ref_emb=None, threshold=None, return_tuples=False):
        """Boolean ``(Nq, Nr)`` numpy matrix of matches, or the list of matching ``(i, j)``."""
        threshold = self._threshold(threshold)
        with torch.no_grad():
            return self.operate_on_emb(
                self._get_matching_pairs, query_emb, ref_emb, threshold, return_tuples
            )

    def _get_matching_pairs(self, query_emb, ref_emb, threshold, return_tuples):
        matches = self._compare(self.distance(query_emb, ref_emb), threshold).cpu().numpy()
        if return_tuples:
            return list(zip(*np.where(matches)))
        return matches

    def is_match(self, x, y, threshold=None):
        """Row ``i`` of ``x`` against row ``i`` of ``y``: a bool for one pair, else a numpy array."""
        threshold = self._threshold(threshold)
        with torch.no_grad():
            output = self._compare(self.distance.pairwise_distance(x, y), threshold)
        if output.nelement() == 1:
            return output.item()
        return output.cpu().numpy()

    def _threshold(self, threshold):
        threshold = self.threshold if threshold is None else threshold
        if threshold is None:
            raise MissingInputError("No threshold: pass threshold= here or to MatchFinder(threshold=...)")
        if isinstance(threshold, Threshold):
            self._check_calibrated(threshold)
            return threshold.value
        return threshold

    def __repr__(self):
        threshold = self.calibration.describe() if self.calibration else self.threshold
        return f"MatchFinder(distance={type(self.distance).__name__}, threshold={threshold})"

    def _compare(self, values, threshold):
        return values >= threshold if self.distance.is_inverted else values <= threshold


class InferenceModel:
    """A trunk (+ embedder) wrapped with a kNN index and a :class:`MatchFinder`.

    Defaults: ``embedder`` Identity; ``match_finder`` cosine similarity with threshold 0.9;
    ``knn_func`` :class:`ExactKNN` (the reference uses a persistent ``FaissKNN``; pass
    ``FaissKNN(reset_before=False, reset_after=False)`` for that); ``data_device`` CUDA when
    available.
    """

    def __init__(
        self,
        trunk,
        embedder=None,
        match_finder=None,
        normalize_embeddings=True,
        knn_func=None,
        data_device=None,
        dtype=None,
    ):
        self.trunk = trunk
        self.embedder = torch.nn.Identity() if embedder is None else embedder
        self.match_finder = (
            MatchFinder(distance=CosineSimilarity(), threshold=0.9) if match_finder is None else match_finder
        )
        self.knn_func = ExactKNN() if knn_func is None else knn_func
        self.normalize_embeddings = normalize_embeddings
        self.data_device = c_f.use_cuda_if_available() if data_device is None else data_device
        self.dtype = dtype

    def get_embeddings_from_tensor_or_dataset(self, inputs, batch_size):
        inputs = self.process_if_list(inputs)
        if isinstance(inputs, (torch.Tensor, list)):
            chunks = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
        elif isinstance(inputs, torch.utils.data.Dataset):
            chunks = (x for x, _ in torch.utils.data.DataLoader(inputs, batch_size=batch_size))
        else:
            raise TypeError(f"Indexing {type(inputs)} is not supported.")
        embeddings = [self.get_embeddings(chunk) for chunk in chunks]
        if not embeddings:
            raise ValueError("inputs is empty: nothing to embed")
        return torch.cat(embeddings)

    def train_knn(self, inputs, batch_size=64):
        """Embed ``inputs`` and make them the search space (replacing any previous one)."""
        self.call_knn(self.knn_func.train, inputs, batch_size)

    def add_to_knn(self, inputs, batch_size=64):
        """Embed ``inputs`` and append them to the search space."""
        self.call_knn(self.knn_func.add, inputs, batch_size)

    def call_knn(self, func, inputs, batch_size):
        func(self.get_embeddings_from_tensor_or_dataset(inputs, batch_size))

    def get_nearest_neighbors(self, query, k):
        """``(distances, indices)``, each ``(Nq, k)``, into the search space built by train_knn."""
        if getattr(self.knn_func, "index", True) is None:
            raise ValueError("The kNN index is empty: call train_knn() (or load_knn_func()) first")
        return self.knn_func(self.get_embeddings(query), k)

    def get_embeddings(self, x):
        x = self.process_if_list(x)
        if isinstance(x, torch.Tensor):
            x = c_f.to_device(x, device=self.data_device, dtype=self.dtype)
        self.trunk.eval()
        self.embedder.eval()
        with torch.no_grad():
            emb = self.embedder(self.trunk(x))
        if self.normalize_embeddings:
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb

    def get_matches(self, query, ref=None, threshold=None, return_tuples=False):
        query_emb = self.get_embeddings(query)
        ref_emb = query_emb if ref is None else self.get_embeddings(ref)
        return self.match_finder.get_matching_pairs(query_emb, ref_emb, threshold, return_tuples)

    def is_match(self, x, y, threshold=None):
        return self.match_finder.is_match(self.get_embeddings(x), self.get_embeddings(y), threshold)

    @property
    def calibration(self):
        """The match finder's calibrated threshold (see :meth:`calibrate`), or None."""
        return getattr(self.match_finder, "calibration", None)

    def calibrate(self, query, query_labels, reference=None, reference_labels=None, target="best_f1",
                  batch_size=64, **kwargs):
        """Embed the inputs, find the threshold meeting ``target`` with the match finder's
        distance (:func:`~deepmetric.evaluation.calibration.calibrate`, same ``target`` and
        keyword arguments), make it the match finder's threshold and return it."""
        query_emb = self.get_embeddings_from_tensor_or_dataset(query, batch_size)
        ref_emb = None
        if reference is not None:
            ref_emb = self.get_embeddings_from_tensor_or_dataset(reference, batch_size)
        threshold = calibrate(
            query_emb, query_labels, ref_emb, reference_labels, target,
            distance=self.match_finder.distance, **kwargs,
        )
        self.match_finder.threshold = threshold
        return threshold

    def save_knn_func(self, filename):
        """Save the index; a calibrated threshold goes next to it, in ``<filename>.threshold.json``
        (a stale one from an earlier save is removed)."""
        self.knn_func.save(filename)
        sidecar = threshold_file(filename)
        if self.calibration is not None:
            self.calibration.save(sidecar)
        elif os.path.exists(sidecar):
            os.unlink(sidecar)

    def load_knn_func(self, filename):
        """Load the index, and the calibrated threshold saved with it, if any."""
        self.knn_func.load(filename)
        sidecar = threshold_file(filename)
        if os.path.exists(sidecar):
            self.match_finder.threshold = Threshold.load(sidecar)

    def process_if_list(self, x):
        if isinstance(x, list) and x and all(isinstance(item, torch.Tensor) for item in x):
            return torch.stack(x)
        return x


class FaissKNN:
    """kNN through a faiss index (default ``IndexFlatL2``: squared L2 distances).

    Args:
        reset_before: build a new index at every call (otherwise search the stored one).
        reset_after: drop the index after every call.
        index_init_fn: ``dim -> faiss index``; default ``faiss.IndexFlatL2``.
        gpus: list/tuple of GPU ids to search on; ``None``: all GPUs when the query is on CUDA.
    """

    def __init__(self, reset_before=True, reset_after=True, index_init_fn=None, gpus=None):
        faiss = _import_faiss("FaissKNN")
        self.reset()
        self.reset_before = reset_before
        self.reset_after = reset_after
        self.index_init_fn = faiss.IndexFlatL2 if index_init_fn is None else index_init_fn
        if gpus is not None:
            if not isinstance(gpus, (list, tuple)):
                raise TypeError(f"gpus must be a list or tuple of GPU ids, got {type(gpus).__name__}")
            if len(gpus) < 1:
                raise ValueError("gpus must contain at least one GPU id")
        self.gpus = gpus

    def __call__(self, query, k, reference=None, ref_includes_query=False):
        _check_search_inputs(query, k, reference)
        if ref_includes_query:
            k = k + 1
        if k < 1:
            raise OutOfRangeError(f"k must be at least 1, got {k}")
        device = query.device
        dim = query.shape[1]
        c_f.LOGGER.info("running k-nn with k=%d", k)
        c_f.LOGGER.info("embedding dimensionality is %d", dim)
        if self.reset_before:
            self.index = self.index_init_fn(dim)
        if self.index is None:
            raise ValueError("The faiss index is empty: call train() or use reset_before=True")
        distances, indices = try_gpu(self.index, query, reference, k, query.is_cuda, self.gpus)
        distances = c_f.to_device(distances, device=device)
        indices = c_f.to_device(indices, device=device)
        if self.reset_after:
            self.reset()
        return return_results(distances, indices, ref_includes_query)

    def train(self, embeddings):
        self.index = self.index_init_fn(embeddings.shape[1])
        self.add(embeddings)

    def add(self, embeddings):
        self.index.add(_to_float32_numpy(embeddings))

    def save(self, filename):
        _import_faiss("FaissKNN.save").write_index(self.index, os.fspath(filename))

    def load(self, filename):
        """Read a faiss index file (``faiss.read_index``), or an index saved by
        ``ExactKNN.save`` in its torch format (its embeddings go into ``index_init_fn(d)``).
        A file that is neither raises :class:`~deepmetric.utils.errors.IndexFileError` (a
        ``RuntimeError``, as faiss raises) naming it."""
        faiss = _import_faiss("FaissKNN.load")
        if file_kind(filename, "FaissKNN.load") == "torch":
            embeddings = load_torch_index(filename, "FaissKNN.load")
            self.index = self.index_init_fn(embeddings.shape[1])
            self.add(embeddings)
            return
        try:
            self.index = faiss.read_index(os.fspath(filename))
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise IndexFileError(
                f"FaissKNN.load: {os.fspath(filename)!r} is not an index faiss can read, nor one "
                f"saved by ExactKNN.save ({reason})"
            ) from exc

    def reset(self):
        self.index = None


class FaissKMeans:
    """k-means through ``faiss.Kmeans(d, nmb_clusters, **kwargs)``; each point gets the id of its
    nearest centroid. See :class:`deepmetric.evaluation.kmeans.TorchKMeans` for the faiss-free one."""

    def __init__(self, **kwargs):
        _import_faiss("FaissKMeans")
        self.kwargs = kwargs

    def __call__(self, x, nmb_clusters):
        faiss = _import_faiss("FaissKMeans")
        device = x.device
        data = _to_float32_numpy(x)
        dim = data.shape[1]
        c_f.LOGGER.info("running k-means clustering with k=%d", nmb_clusters)
        c_f.LOGGER.info("embedding dimensionality is %d", dim)
        kmeans = faiss.Kmeans(dim, nmb_clusters, **self.kwargs)
        kmeans.train(data)
        _, ids = kmeans.index.search(data, 1)
        return torch.as_tensor(ids[:, 0].astype(np.int64), device=device)


class CustomKNN:
    """Exact kNN with any deepmetric distance; the values returned are the distance's own.

    ``batch_size`` rows of the query are processed at a time (``self.distance`` is then a
    :class:`BatchedDistance`, as in the reference). Computed by
    :func:`deepmetric.evaluation.knn.exact_knn`, so equal values are ordered by lower reference index
    (the reference leaves tie order to ``torch.topk``) and memory stays bounded even without
    ``batch_size``.
    """

    def __init__(self, distance, batch_size=None):
        self.batch_size = batch_size
        if batch_size:
            self.distance = BatchedDistance(distance, batch_size=batch_size)
        else:
            self.distance = distance

    def __call__(self, query, k, reference, ref_includes_query=False):
        inner = self.distance.distance if isinstance(self.distance, BatchedDistance) else self.distance
        return exact_knn(
            query,
            k,
            reference,
            ref_includes_query=ref_includes_query,
            distance=inner,
            block_size=self.batch_size or None,
        )


def threshold_file(index_filename):
    """Where :meth:`InferenceModel.save_knn_func` keeps a calibrated threshold."""
    return os.fspath(index_filename) + ".threshold.json"


# ---------------------------------------------------------------------------------------------
# module helpers (reference API)


def add_to_index_and_search(index, query, reference, k):
    """Add ``reference`` (if given) to the faiss ``index``, then search ``query``; torch results."""
    if reference is not None:
        index.add(_to_float32_numpy(reference))
    distances, indices = index.search(_to_float32_numpy(query), k)
    return torch.as_tensor(distances), torch.as_tensor(indices)


def convert_to_gpu_index(index, gpus):
    faiss = _import_faiss("convert_to_gpu_index")
    if "Gpu" in type(index).__name__:
        return index
    if gpus is None:
        return faiss.index_cpu_to_all_gpus(index)
    return faiss.index_cpu_to_gpus_list(index, gpus=list(gpus))


def convert_to_cpu_index(index):
    faiss = _import_faiss("convert_to_cpu_index")
    if "Gpu" not in type(index).__name__:
        return index
    return faiss.index_gpu_to_cpu(index)


def _max_k_for_gpu():
    # faiss GPU k-selection limit (faiss/gpu/utils/DeviceDefs.cuh).
    cuda = torch.version.cuda
    return 1024 if cuda is not None and float(cuda) < 9.5 else 2048


def try_gpu(index, query, reference, k, is_cuda, gpus):
    """Search on GPU when faiss has GPUs, the query is on CUDA (or ``gpus`` given) and ``k``
    is within faiss's GPU limit; otherwise, or if the GPU search fails, on CPU."""
    faiss = _import_faiss("try_gpu")
    num_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    use_gpu = (is_cuda or gpus is not None) and num_gpus > 0
    if use_gpu:
        if k <= _max_k_for_gpu():
            try:
                return add_to_index_and_search(convert_to_gpu_index(index, gpus), query, reference, k)
            except (AttributeError, RuntimeError) as exc:
                c_f.LOGGER.warning(f"faiss GPU search failed ({exc}); using CPU")
        else:
            c_f.LOGGER.warning(
                f"Using CPU for k-nn search because k = {k} > {_max_k_for_gpu()}, "
                "which is the maximum allowable on GPU."
            )
    return add_to_index_and_search(convert_to_cpu_index(index), query, reference, k)


def run_pca(x, output_dimensionality):
    """Fit PCA on ``x`` and project it to ``output_dimensionality`` dims (result on x's device).

    Uses faiss's ``PCAMatrix`` when faiss is installed (as the reference does), otherwise a
    torch SVD of the centred data (same subspace; component signs may differ).
    """
    device = x.device
    try:
        faiss = _import_faiss("run_pca")
    except ImportError:
        faiss = None
    if faiss is not None:
        data = _to_float32_numpy(x)
        mat = faiss.PCAMatrix(data.shape[1], output_dimensionality)
        mat.train(data)
        return torch.as_tensor(mat.apply_py(data), device=device)
    data = x.detach().float()
    centred = data - data.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[:output_dimensionality].t()).to(device)


def mask_reshape_knn_idx(x, matches_self_idx):
    """Drop the masked entry of each row (one per row): ``(n, k + 1) -> (n, k)``."""
    return x[~matches_self_idx].view(x.shape[0], -1)


def return_results(D, I, ref_includes_query):  # noqa: E741 (reference argument names)
    """Remove each query's own entry when ``ref_includes_query`` (query ``i`` is reference
    ``i``); rows whose own index is absent drop their last column instead."""
    if not ref_includes_query:
        return D, I
    return drop_own_entry(D, I, torch.arange(len(I), device=I.device))


def get_topk(distances, indices, k, get_largest):
    """An ``iter_fn`` for :class:`BatchedDistance` that writes each block's top-k into
    ``distances`` / ``indices`` (rows ``s:e``)."""

    def fn(mat, s, e):
        values, idx = torch.topk(mat, k, largest=get_largest, dim=1)
        distances[s:e] = values
        indices[s:e] = idx

    return fn
