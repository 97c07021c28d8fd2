"""Retrieval and clustering accuracy of an embedding space: the ``AccuracyCalculator``.

Every query is ranked against a reference set by a k-nearest-neighbour search; a neighbour is
*relevant* when ``label_comparison_fn(query_label, neighbour_label)`` holds (see
:mod:`.relevance`). The k-NN metrics, with ``R`` the number of relevant reference items of a
query, ``K`` the number of neighbours retrieved and ``P@i`` the precision of the first ``i``
(formulas in :mod:`.retrieval_metrics`):

* ``precision_at_1``, ``r_precision`` (precision of the first ``min(R, K)``),
  ``mean_average_precision_at_r`` (Musgrave et al., "A Metric Learning Reality Check", ECCV
  2020), ``mean_average_precision`` (over the ``K`` retrieved) and ``mean_reciprocal_rank``;
* ``NMI`` / ``AMI``: normalized / adjusted mutual information between the query labels and a
  k-means clustering of the queries into as many clusters as there are query labels.

Metrics the reference library lacks, one set per ``k`` in ``k_values`` (or named in ``include``):
``precision_at_<k>``, ``recall_at_<k>`` (the CMC curve at rank ``k``) and
``mean_average_precision_at_<k>`` (divided by ``min(R, k)``, so 1 for a perfect ranking).

Verification metrics, computed only when named in ``include`` (never part of the default set),
over every (query, reference) pair, positive when the labels match, scored by the k-NN
backend's distance (:mod:`.verification`, exact, without the N x M matrix): ``roc_auc``,
``eer``, ``best_f1``, ``tar_at_far_<rate>`` and ``fnmr_at_fmr_<rate>`` (e.g.
``fnmr_at_fmr_1e-3``). They are single numbers over pairs whatever ``avg_of_avgs`` and
``return_per_class`` say.

Queries whose label has no match in the reference set ("lone" queries) cannot retrieve anything
relevant and are left out of every k-NN metric. Per-query values are averaged over queries,
or per class then over classes (``avg_of_avgs``), or returned per class (``return_per_class``).

The built-in k-NN metrics (the ``calculate_*`` methods marked with
:func:`~.retrieval_metrics.computed_per_query`) are computed query by query from the ranks of
each query's relevant items, a block of queries at a time, so even ``k=None`` (rank the whole
reference set) never holds more than ``knn_block_entries`` neighbour labels at once. When most of
every ranking is wanted (``k=None`` or ``4 k >=`` the reference size), equality of labels is the
comparison and the ``knn_func`` provides ``positive_ranks`` (``ExactKNN`` does), no row is
sorted: the ranks are counted directly (:mod:`.positive_ranks`; same ranks as the search, ties
included; rows it cannot settle go through the search). A subclass's own ``calculate_*`` methods,
and built-in ones it overrides, receive the full ``knn_labels`` as in the reference.
"""

import dataclasses
import functools
import re

import torch
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from ..utils import common_functions as c_f
from ..utils.errors import MissingInputError, SearchInputError
from . import verification
from .inference import FaissKMeans
from .kmeans import TorchKMeans
from .knn import ExactKNN, drop_own_entry
from .relevance import (
    EQUALITY,
    get_label_match_counts,
    get_lone_query_labels,
    get_relevance_mask,
    relevance,
    try_getting_not_lone_labels,
)
from .retrieval_metrics import (
    computed_per_query,
    maybe_get_avg_of_avgs,
    mean_average_precision,
    mean_average_precision_at_k,
    mean_reciprocal_rank,
    nan_accuracy,
    per_query_values,
    precision_at_k,
    r_precision,
    ranks_of_relevant,
    recall_at_k,
)

_AT_K_PATTERN = re.compile(r"^(precision|recall|mean_average_precision)_at_([1-9][0-9]*)$")
_AT_K_KINDS = ("precision", "recall", "mean_average_precision")
# Largest float32 range in which every integer is exact: labels beyond it are kept in float64.
_FLOAT32_EXACT_INT = 2**24


def default_kmeans_func(device):
    """The reference's k-means, ``FaissKMeans(niter=20, gpu=<device is CUDA>)``, when faiss can
    be imported; otherwise ``TorchKMeans(niter=20)``, faiss' algorithm with the same draws."""
    try:
        return FaissKMeans(niter=20, gpu=torch.device(device).type == "cuda")
    except ImportError:
        return TorchKMeans(niter=20)


@dataclasses.dataclass
class _Search:
    """One evaluation's k-NN search: the sets, each query's number of relevant references, the
    metrics computed per query (``{name: (kind, cut-off)}``), the neighbours per query and
    whether each query is its own reference entry (1) or not (0)."""

    query: torch.Tensor
    reference: torch.Tensor
    query_labels: torch.Tensor
    reference_labels: torch.Tensor
    relevant: torch.Tensor
    requests: dict
    width: int
    own: int


# ----------------------------------------------------------------------------------- the class
class AccuracyCalculator:
    """Computes retrieval (k-NN) and clustering accuracy metrics of embeddings.

    Same API and metric definitions as pytorch-metric-learning's ``AccuracyCalculator``; see
    the module docstring for the metrics. Each method ``calculate_<name>`` defines a metric
    ``<name>`` (subclasses add their own; list them in ``requires_knn()`` to receive the k-NN
    keyword arguments, or in ``requires_clustering()`` for ``cluster_labels``).

    Args:
        include / exclude: metric names to compute / skip (tuples or lists). Empty include: all.
        avg_of_avgs: average per class, then over classes.
        return_per_class: return a list of per-class values (ascending label order).
        k: neighbours per query: ``None`` = the whole reference set, ``"max_bin_count"`` = the
            largest match count of a query label, or a positive int. R-precision and MAP@R are
            exact only when ``k`` is at least the largest match count.
        label_comparison_fn: ``fn(x, y) -> bool tensor`` deciding relevance (default ``torch.eq``).
        device: where labels and embeddings are compared (default: CUDA if available).
        knn_func: ``fn(query, k, reference, ref_includes_query) -> (distances, indices)``.
            Default :class:`~deepmetric.evaluation.knn.ExactKNN` (squared Euclidean, like
            faiss's ``IndexFlatL2``); no faiss needed. The calculator also uses, when the object
            has them, ``search`` (the same call without its log lines; the calculator then logs
            once per evaluation with ``log_search(k, query)`` and searches block by block) and
            ``positive_ranks`` (the ranks of each query's positives in the order of ``search``,
            see :meth:`~deepmetric.evaluation.knn.ExactKNN.positive_ranks`; a subclass of
            ``ExactKNN`` that changes the order sets ``positive_ranks = None``).
        kmeans_func: ``fn(x, n_clusters) -> cluster ids`` for NMI/AMI. Default: the
            reference's, ``FaissKMeans(niter=20, gpu=<device is CUDA>)``, when faiss is
            installed, else :class:`~deepmetric.evaluation.kmeans.TorchKMeans` ``(niter=20)``,
            the same algorithm and seed in torch.
        k_values: extra cut-offs; each ``k`` adds ``precision_at_<k>``, ``recall_at_<k>`` and
            ``mean_average_precision_at_<k>`` (naming such a metric in ``include`` adds it too).
        postprocess: a step applied to the k-NN search, ``knn_func -> knn_func``, e.g.
            :class:`~deepmetric.evaluation.rerank.KReciprocalRerank` or
            :class:`~deepmetric.evaluation.rerank.QueryExpansion`; the k-NN metrics then use its
            neighbours.
        knn_block_entries: at most this many neighbour labels (queries x neighbours) are held at
            once; queries are searched and scored block by block.
    """

    def __init__(
        self,
        include=(),
        exclude=(),
        avg_of_avgs=False,
        return_per_class=False,
        k=None,
        label_comparison_fn=None,
        device=None,
        knn_func=None,
        kmeans_func=None,
        k_values=(),
        knn_block_entries=2**23,
        postprocess=None,
    ):
        self.function_keyword = "calculate_"
        names = [x for x in dir(self) if x.startswith(self.function_keyword)]
        self.original_function_dict = {
            name[len(self.function_keyword) :]: getattr(self, name) for name in names
        }
        self._at_k_metrics = {}
        self._verification_metrics = []
        self._register_at_k(k_values, include, exclude)
        self._register_verification(include, exclude)
        self.check_primary_metrics(include, exclude)
        self.original_function_dict = self.get_function_dict(include, exclude)
        self.curr_function_dict = self.get_function_dict()

        if avg_of_avgs and return_per_class:
            raise ValueError("avg_of_avgs and return_per_class are mutually exclusive")
        self.avg_of_avgs = avg_of_avgs
        self.return_per_class = return_per_class

        if device is None:
            device = c_f.use_cuda_if_available()
        self.device = torch.device(device)
        self.knn_func = ExactKNN() if knn_func is None else knn_func
        self.postprocess = postprocess
        if postprocess is not None:
            if not callable(postprocess):
                raise TypeError(f"postprocess must be callable (knn_func -> knn_func), got {postprocess!r}")
            self.knn_func = postprocess(self.knn_func)
        self.kmeans_func = default_kmeans_func(self.device) if kmeans_func is None else kmeans_func

        if (isinstance(k, bool) or not (isinstance(k, int) and k > 0)) and k not in (None, "max_bin_count"):
            raise ValueError(f"k must be an integer greater than 0, or None, or 'max_bin_count', got {k!r}")
        self.k = k
        if (
            isinstance(knn_block_entries, bool)
            or not isinstance(knn_block_entries, int)
            or knn_block_entries < 1
        ):
            raise ValueError(f"knn_block_entries must be a positive int, got {knn_block_entries!r}")
        self.knn_block_entries = knn_block_entries

        if label_comparison_fn:
            self.label_comparison_fn = label_comparison_fn
            if any(x in self.requires_clustering() for x in self.get_curr_metrics()):
                raise NotImplementedError(
                    "Unsupported: clustering + custom label comparison "
                    "(exclude 'NMI' and 'AMI' to use label_comparison_fn)"
                )
        else:
            self.label_comparison_fn = EQUALITY

    # ------------------------------------------------------------------ metric selection
    def _register_at_k(self, k_values, include, exclude):
        if not isinstance(k_values, (tuple, list)):
            raise TypeError(
                f"k_values must be a tuple or list of positive ints, got {type(k_values).__name__}"
            )
        for value in k_values:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"k_values must contain positive ints, got {value!r}")
        requested = []
        for value in sorted(set(k_values)):
            requested += [f"{kind}_at_{value}" for kind in _AT_K_KINDS]
        for group in (include, exclude):
            if isinstance(group, (tuple, list)):
                requested += [x for x in group if isinstance(x, str) and _AT_K_PATTERN.match(x)]
        for name in requested:
            if name in self.original_function_dict:
                continue  # a built-in (precision_at_1) or a subclass's own calculate_ method
            kind, value = _AT_K_PATTERN.match(name).groups()
            self._at_k_metrics[name] = (kind, int(value))
            metric = functools.partial(self._calculate_at_k, kind, int(value))
            formula = "mean_average_precision_at_k" if kind == "mean_average_precision" else kind
            self.original_function_dict[name] = computed_per_query(formula, int(value))(metric)

    def _register_verification(self, include, exclude):
        for group in (include, exclude):
            if not isinstance(group, (tuple, list)):
                continue
            for name in group:
                if name in self.original_function_dict or not verification.is_metric_name(name):
                    continue
                verification.parse_metric_name(name)  # a rate outside (0, 1): ValueError naming it
                self._verification_metrics.append(name)
                self.original_function_dict[name] = functools.partial(self._calculate_verification, name)

    def verification_metrics(self):
        """Names of the verification metrics this calculator was asked for (in ``include``)."""
        return list(self._verification_metrics)

    def _calculate_verification(self, name, **kwargs):
        return self.verification_figures([name], **kwargs)[name]

    def verification_figures(
        self, names, query, query_labels, reference, reference_labels, ref_includes_query, **kwargs
    ):
        """``{name: value}`` of the verification metrics ``names`` over every pair, scored by
        the k-NN backend's distance (its ``distance`` attribute; default squared Euclidean)."""
        counts = verification.verification_counts(
            query,
            query_labels,
            reference,
            reference_labels,
            ref_includes_query,
            distance=getattr(self.knn_func, "distance", None),
            label_comparison_fn=self.label_comparison_fn,
        )
        return verification.figures(counts, names)

    def get_function_dict(self, include=(), exclude=()):
        if len(include) == 0:
            include = list(self.original_function_dict.keys())
        included = [k for k in include if k not in exclude]
        return {k: v for k, v in self.original_function_dict.items() if k in included}

    def select_metrics(self, include=(), exclude=()):
        """Make ``include`` minus ``exclude`` (empty ``include``: every metric) the metrics of the
        current evaluation (``get_curr_metrics()``) and return their names."""
        self.curr_function_dict = self.get_function_dict(include, exclude)
        return self.get_curr_metrics()

    def get_curr_metrics(self):
        return list(self.curr_function_dict.keys())

    def requires_clustering(self):
        return ["NMI", "AMI"]

    def requires_knn(self):
        return [
            "precision_at_1",
            "mean_average_precision",
            "mean_average_precision_at_r",
            "r_precision",
        ] + list(self._at_k_metrics)

    def knn_metrics(self):
        """Names of the metrics that need the k-NN search: ``requires_knn()`` and
        ``mean_reciprocal_rank`` (which the reference forgets in ``requires_knn()``)."""
        return set(self.requires_knn()) | {"mean_reciprocal_rank"}

    def check_primary_metrics(self, include=(), exclude=()):
        allowed = list(self.original_function_dict.keys())
        for group in (include, exclude):
            if not isinstance(group, (tuple, list)):
                raise TypeError(f"Arguments must be of type tuple, not {type(group)}.")
            unknown = [x for x in group if x not in allowed]
            if unknown:
                raise ValueError(
                    f"Unknown metric name(s) {unknown}. Primary metrics must be one or more of: {allowed}, "
                    "or precision_at_<k>, recall_at_<k>, mean_average_precision_at_<k>, or the "
                    "verification metrics roc_auc, eer, best_f1, tar_at_far_<rate>, fnmr_at_fmr_<rate>."
                )

    def description(self):
        return "avg_of_avgs" if self.avg_of_avgs else ""

    # ------------------------------------------------------------------ per-query metrics
    def _formula(self, name, k):
        """``(kind, cut-off)`` of a metric marked :func:`computed_per_query`, else None."""
        method = self.original_function_dict.get(name)
        mark = getattr(method, "per_query", None)
        if mark is None:
            return None
        kind, cutoff = mark
        return kind, (k if cutoff is None else cutoff)

    def computes_per_query(self, name):
        """Whether :meth:`per_query_accuracy` computes the metric ``name``: its ``calculate_``
        method is marked :func:`computed_per_query` (the built-in k-NN metrics, unless a subclass
        overrides them without the mark, and the ``*_at_<k>`` metrics)."""
        return self._formula(name, None) is not None

    def cutoff(self, name, k):
        """How many neighbours the metric ``name`` looks at when the calculator's k is ``k``."""
        return self._formula(name, k)[1]

    def per_query_accuracy(
        self, names, k, query_labels, label_counts, ref_includes_query, knn_labels=None, ranks=None
    ):
        """``{name: (B,) float64}``: the value of each metric ``name`` for each query, computed
        from its retrieved neighbours or from the ranks of its relevant references.

        Args:
            names: metrics for which :meth:`computes_per_query` holds.
            k: the calculator's k (``determine_k``, at most the references available).
            query_labels: ``(B,)`` labels of the queries (non-lone ones).
            label_counts: ``(unique_query_labels, match_counts)`` of the whole query set
                (``get_label_match_counts``), from which each query's ``R`` is taken.
            ref_includes_query: whether each query is itself a reference item.
            knn_labels: ``(B, K)`` labels of the retrieved neighbours, nearest first; or
            ranks: ``(B, R')`` float64 1-based ranks of each query's relevant references among
                all references (other than itself), ascending, ``inf`` padded.
        """
        unknown = [name for name in names if not self.computes_per_query(name)]
        if unknown:
            raise ValueError(f"{unknown} are not computed per query by {type(self).__name__}")
        if (knn_labels is None) == (ranks is None):
            raise ValueError("per_query_accuracy needs exactly one of knn_labels and ranks")
        requests = {name: self._formula(name, k) for name in names}
        gt = query_labels[:, None]
        _, relevant = get_relevance_mask((len(gt), 0), gt, ref_includes_query, label_counts)
        if ranks is not None:
            return per_query_values(ranks, relevant, requests)
        rel = relevance(gt, knn_labels, self.label_comparison_fn)
        return per_query_values(ranks_of_relevant(rel), relevant, requests, retrieved=rel.shape[1])

    # ------------------------------------------------------------------ built-in metrics
    def get_cluster_labels(self, query, query_labels, **kwargs):
        num_clusters = len(torch.unique(query_labels.flatten()))
        return self.kmeans_func(query, num_clusters)

    def calculate_NMI(self, query_labels, cluster_labels, **kwargs):
        return normalized_mutual_info_score(c_f.to_numpy(query_labels), c_f.to_numpy(cluster_labels))

    def calculate_AMI(self, query_labels, cluster_labels, **kwargs):
        return adjusted_mutual_info_score(c_f.to_numpy(query_labels), c_f.to_numpy(cluster_labels))

    def _of_not_lone(self, metric, knn_labels, query_labels, not_lone_query_mask, label_counts, *args, **kw):
        """``metric(knn_labels, gt_labels, *args, avg_of_avgs, ...)`` over the non-lone queries;
        NaN when every query is lone."""
        knn_labels, query_labels = try_getting_not_lone_labels(knn_labels, query_labels, not_lone_query_mask)
        if knn_labels is None:
            return nan_accuracy(label_counts[0], self.return_per_class)
        options = (self.avg_of_avgs, self.return_per_class, self.label_comparison_fn)
        return metric(knn_labels, query_labels[:, None], *args, *options, **kw)

    @computed_per_query("precision", 1)
    def calculate_precision_at_1(self, knn_labels, query_labels, not_lone_query_mask, label_counts, **kwargs):
        rows = (knn_labels, query_labels, not_lone_query_mask, label_counts)
        return self._of_not_lone(precision_at_k, *rows, 1)

    @computed_per_query("mean_average_precision_at_r")
    def calculate_mean_average_precision_at_r(
        self, knn_labels, query_labels, not_lone_query_mask, ref_includes_query, label_counts, **kwargs
    ):
        counted = (ref_includes_query, label_counts)
        rows = (knn_labels, query_labels, not_lone_query_mask, label_counts)
        return self._of_not_lone(mean_average_precision, *rows, *counted, at_r=True)

    @computed_per_query("mean_average_precision")
    def calculate_mean_average_precision(
        self, knn_labels, query_labels, not_lone_query_mask, ref_includes_query, label_counts, **kwargs
    ):
        counted = (ref_includes_query, label_counts)
        rows = (knn_labels, query_labels, not_lone_query_mask, label_counts)
        return self._of_not_lone(mean_average_precision, *rows, *counted)

    @computed_per_query("mean_reciprocal_rank")
    def calculate_mean_reciprocal_rank(
        self, knn_labels, query_labels, not_lone_query_mask, label_counts, **kwargs
    ):
        rows = (knn_labels, query_labels, not_lone_query_mask, label_counts)
        return self._of_not_lone(mean_reciprocal_rank, *rows)

    @computed_per_query("r_precision")
    def calculate_r_precision(
        self, knn_labels, query_labels, not_lone_query_mask, ref_includes_query, label_counts, **kwargs
    ):
        counted = (ref_includes_query, label_counts)
        rows = (knn_labels, query_labels, not_lone_query_mask, label_counts)
        return self._of_not_lone(r_precision, *rows, *counted)

    def _calculate_at_k(
        self,
        kind,
        k,
        knn_labels,
        query_labels,
        not_lone_query_mask,
        ref_includes_query,
        label_counts,
        **kwargs,
    ):
        rows = (knn_labels, query_labels, not_lone_query_mask, label_counts)
        if kind == "precision":
            return self._of_not_lone(precision_at_k, *rows, k)
        if kind == "recall":
            return self._of_not_lone(recall_at_k, *rows, k)
        return self._of_not_lone(mean_average_precision_at_k, *rows, k, ref_includes_query, label_counts)

    # ------------------------------------------------------------------ main entry point
    def checked_inputs(self, query, query_labels, reference, reference_labels):
        """The four inputs as tensors on ``self.device``: embeddings float32 ``(N, D)`` and finite,
        labels float32 (float64 for integers beyond ``2**24``, and both in float64 when their
        dtypes differ); raises when an embedding set and its labels differ in length."""
        query = self._to_tensor(query, "query", False)
        reference = self._to_tensor(reference, "reference", False)
        query_labels = self._to_tensor(query_labels, "query_labels", True)
        reference_labels = self._to_tensor(reference_labels, "reference_labels", True)
        if query_labels.dtype != reference_labels.dtype:
            query_labels, reference_labels = query_labels.double(), reference_labels.double()
        if len(query) != len(query_labels) or len(reference) != len(reference_labels):
            raise ValueError(
                "embeddings and labels must have the same length: "
                f"query {len(query)} vs query_labels {len(query_labels)}, "
                f"reference {len(reference)} vs reference_labels {len(reference_labels)}"
            )
        return query, query_labels, reference, reference_labels

    def _to_tensor(self, x, name, is_labels):
        if x is None:
            raise MissingInputError(f"{name} must be given")
        x = c_f.numpy_to_torch(x)
        if not torch.is_tensor(x):
            x = torch.as_tensor(x)
        x = x.to(self.device)
        if is_labels:
            if x.dtype == torch.bool or x.is_complex():
                raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
            needs_64 = not x.is_floating_point() and x.numel() > 0 and int(x.abs().max()) > _FLOAT32_EXACT_INT
            return x.to(torch.float64 if needs_64 else torch.float32)
        if x.dim() != 2:
            raise SearchInputError(f"{name} must be a 2-D (N, D) tensor, got shape {tuple(x.shape)}")
        x = x.to(torch.float32)
        if not torch.isfinite(x).all():
            raise SearchInputError(f"{name} contains NaN or Inf values")
        return x

    def get_accuracy(
        self,
        query,
        query_labels,
        reference=None,
        reference_labels=None,
        ref_includes_query=False,
        include=(),
        exclude=(),
    ):
        if reference is None:
            reference, reference_labels = query, query_labels
            ref_includes_query = True
        query, query_labels, reference, reference_labels = self.checked_inputs(
            query, query_labels, reference, reference_labels
        )
        if len(query) == 0 or len(reference) == 0:
            raise SearchInputError("query and reference must contain at least one embedding each")
        if query.shape[1] != reference.shape[1]:
            raise SearchInputError(
                f"query and reference must have the same width, got {query.shape[1]} and {reference.shape[1]}"
            )
        if ref_includes_query and not (
            len(reference) >= len(query)
            and query_labels.shape[1:] == reference_labels.shape[1:]
            and torch.allclose(query, reference[: len(query)])
            and torch.allclose(query_labels, reference_labels[: len(query)])
        ):
            raise ValueError(
                "When ref_includes_query is True, the first len(query) elements of reference must be equal "
                "to query.\nLikewise, the first len(query_labels) elements of reference_labels must be equal "
                "to query_labels.\n"
            )

        names = self.select_metrics(include, exclude)
        kwargs = {
            "query": query,
            "reference": reference,
            "query_labels": query_labels,
            "reference_labels": reference_labels,
            "ref_includes_query": ref_includes_query,
            "label_comparison_fn": self.label_comparison_fn,
        }
        precomputed = {}
        knn_names = [x for x in names if x in self.knn_metrics()]
        if knn_names:
            precomputed = self._knn_metrics_and_kwargs(knn_names, kwargs)
        verification_names = [x for x in names if x in self._verification_metrics]
        if verification_names:
            precomputed.update(self.verification_figures(verification_names, **kwargs))
        if any(x in self.requires_clustering() for x in names):
            kwargs["cluster_labels"] = self.get_cluster_labels(**kwargs)

        rest = {k: v for k, v in self.curr_function_dict.items() if k not in precomputed}
        computed = self._get_accuracy(rest, **kwargs)
        return {k: precomputed[k] if k in precomputed else computed[k] for k in self.curr_function_dict}

    def _knn_metrics_and_kwargs(self, knn_names, kwargs):
        """Run the k-NN search; fills the k-NN kwargs and returns the metrics computed per query."""
        query, reference = kwargs["query"], kwargs["reference"]
        query_labels, reference_labels = kwargs["query_labels"], kwargs["reference_labels"]
        ref_includes_query = kwargs["ref_includes_query"]
        cmp = self.label_comparison_fn
        own = int(bool(ref_includes_query))

        label_counts = get_label_match_counts(query_labels, reference_labels, cmp)
        lone_labels, not_lone = get_lone_query_labels(query_labels, label_counts, ref_includes_query, cmp)
        base_k = self.determine_k(label_counts[1], len(reference), ref_includes_query)
        available = len(reference) - own

        requests = {name: self._formula(name, min(base_k, available)) for name in knn_names}
        own_formulas = {name: req for name, req in requests.items() if req is not None}
        others = [name for name in knn_names if name not in own_formulas]
        widest = max([base_k] + [req[1] for req in own_formulas.values()])
        if widest > available:
            # The reference pads faiss' missing neighbours with index -1 (read as the label of the
            # last reference); only the neighbours that exist are used here.
            extra = " other than the query itself" if own else ""
            c_f.LOGGER.warning(
                f"k={widest} is more than the {available} reference embeddings{extra}: "
                f"the metrics use the {available} that exist (precision_at_<k> counts the "
                "missing ones as misses)"
            )
        base_k, width = min(base_k, available), min(widest, available)
        any_valid = bool(not_lone.any())
        if not any_valid:
            c_f.LOGGER.warning("None of the query labels are in the reference set.")

        kwargs["label_counts"] = label_counts
        kwargs["lone_query_labels"] = lone_labels
        kwargs["not_lone_query_mask"] = not_lone
        _, inverse = torch.unique(query_labels, dim=0, return_inverse=True)
        relevant_all = label_counts[1][inverse.reshape(-1)] - own

        full = None
        if others or self.postprocess is not None:
            # Metrics of subclasses need every neighbour label at once, as in the reference; a
            # post-processing step (re-ranking) sees every query at once, so that its result does
            # not depend on how the queries would be split into blocks.
            if width >= 1:
                distances, indices = self.knn_func(query, width, reference, ref_includes_query)
            else:
                distances = torch.zeros(len(query), 0, device=query.device)
                indices = torch.zeros(len(query), 0, dtype=torch.long, device=query.device)
            indices = indices.to(reference_labels.device)
            kwargs["knn_distances"] = distances[:, :base_k]
            kwargs["knn_labels"] = reference_labels[indices[:, :base_k]]
            full = reference_labels[indices]

        if not own_formulas:
            return {}
        if not any_valid:
            return {name: nan_accuracy(label_counts[0], self.return_per_class) for name in own_formulas}

        rows = torch.nonzero(not_lone).reshape(-1)
        gt = query_labels[rows][:, None]
        if full is not None:
            rel = relevance(gt, full[rows], cmp)
            values = per_query_values(ranks_of_relevant(rel), relevant_all[rows], own_formulas, rel.shape[1])
        else:
            labels = (query_labels, reference_labels)
            job = _Search(query, reference, *labels, relevant_all, own_formulas, width, own)
            _, announce = self._quiet_search()
            if announce is not None:
                announce(width + own, query)
            if self._ranks_wanted(job):
                values = self._rankwise(job, rows)
            else:
                values = self._blockwise(job, rows)
        return {
            name: maybe_get_avg_of_avgs(v, gt, self.avg_of_avgs, self.return_per_class)
            for name, v in values.items()
        }

    def _quiet_search(self):
        """``(search, announce)``: the knn_func's ``search`` and ``log_search`` when it has both
        (one log per evaluation instead of one per block), else ``(knn_func, None)``."""
        search = getattr(self.knn_func, "search", None)
        announce = getattr(self.knn_func, "log_search", None)
        if search is None or announce is None:
            return self.knn_func, None
        return search, announce

    def _ranks_wanted(self, job):
        """Whether to count ranks instead of searching: the knn_func provides ``positive_ranks``
        (not None), labels are compared by equality (and have no NaN), and most of every row is
        ranked."""
        return (
            getattr(self.knn_func, "positive_ranks", None) is not None
            and self.label_comparison_fn is EQUALITY
            and 4 * job.width >= len(job.reference) - job.own
            and not bool(torch.isnan(job.query_labels).any() or torch.isnan(job.reference_labels).any())
        )

    def _rankwise(self, job, rows):
        """Per-query metrics of the queries ``rows`` from the ranks of their positives
        (``knn_func.positive_ranks``); rows whose ranks hinge on tied keys, or every row when
        the knn_func cannot rank with its distance, go through :meth:`_blockwise` instead."""
        nq = len(job.query_labels)
        # Class ids shared by queries and references (adding 0.0 merges -0.0 into 0.0, as == does).
        both = torch.cat([job.query_labels, job.reference_labels]) + 0.0
        _, ids = torch.unique(both, dim=0 if both.dim() > 1 else None, return_inverse=True)
        ids = ids.reshape(-1)
        query_ids, reference_ids = ids[:nq][rows], ids[nq:]
        own_columns = rows if job.own else None  # query i is reference i
        block = max(1, self.knn_block_entries // len(job.reference))
        blocks = self.knn_func.positive_ranks(
            job.query[rows], job.reference, query_ids, reference_ids, own_columns, block
        )
        if blocks is None:
            return self._blockwise(job, rows)
        out = {name: torch.empty(len(rows), dtype=torch.float64, device=rows.device) for name in job.requests}
        pending = []
        for local, ranks, unresolved in blocks:
            count = job.relevant[rows[local]]
            unresolved = unresolved | (torch.isfinite(ranks).sum(dim=1) != count)
            for name, v in per_query_values(ranks, count, job.requests).items():
                out[name][local] = v
            pending.append(local[unresolved])
        pending = torch.cat(pending)
        if len(pending):
            for name, v in self._blockwise(job, rows[pending]).items():
                out[name][pending] = v
        return out

    def _blockwise(self, job, rows):
        """Per-query metrics of the queries ``rows`` from their neighbours, searched in blocks."""
        search, _ = self._quiet_search()
        block = max(1, self.knn_block_entries // max(1, job.width))
        parts = {name: [] for name in job.requests}
        for s in range(0, len(rows), block):
            block_rows = rows[s : s + block]
            # Self matches are removed here by position, so the search must not do it by row number.
            distances, indices = search(job.query[block_rows], job.width + job.own, job.reference, False)
            if job.own:
                distances, indices = drop_own_entry(distances, indices, block_rows.to(indices.device))
            neighbours = job.reference_labels[indices.to(job.reference_labels.device)]
            rel = relevance(job.query_labels[block_rows][:, None], neighbours, self.label_comparison_fn)
            ranks = ranks_of_relevant(rel)
            for name, v in per_query_values(ranks, job.relevant[block_rows], job.requests, job.width).items():
                parts[name].append(v)
        return {name: torch.cat(v) for name, v in parts.items()}

    def _get_accuracy(self, function_dict, **kwargs):
        return {k: v(**kwargs) for k, v in function_dict.items()}

    def determine_k(self, bin_counts, num_reference_embeddings, ref_includes_query):
        self_count = int(bool(ref_includes_query))
        max_bin_count = int(torch.max(bin_counts).item()) if bin_counts.numel() else 0
        if self.k == "max_bin_count":
            return max_bin_count - self_count
        if self.k is None:
            return num_reference_embeddings - self_count
        if self.k < max_bin_count:
            inexact = set(self.get_curr_metrics()) & {"r_precision", "mean_average_precision_at_r"}
            if inexact:
                c_f.LOGGER.warning(
                    f"\nWarning: You are computing {inexact}, but the value for k ({self.k}) is less "
                    f"than the max bin count ({max_bin_count}) so the values for these metrics will be "
                    "incorrect. To fix this, set k='max_bin_count'.\nIf you're looking for "
                    f"MAP@{self.k} instead of MAP@R, then you should use 'mean_average_precision' rather "
                    "than mean_average_precision_at_r"
                )
        return self.k
