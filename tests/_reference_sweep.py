"""Oracle sweep helpers: run one loss call in deepmetric and in the reference library on the same
inputs and report every difference (value, dtype, gradient, recorded statistics, error type).

A case is a loss (name and constructor arguments, identical in both libraries), a reducer, the
collect_stats switch, an optional miner tuple, a dtype and a seed. Learnable parameters are
copied from the reference's module to ours, and the random generators are seeded before each
call, so both libraries see exactly the same numbers.
"""

import importlib
import math

import numpy as np
import torch

LIBRARIES = ("pytorch_metric_learning", "deepmetric")
N, D, C = 32, 16, 4  # batch size, embedding width, classes
# Relative tolerances (to the largest magnitude) where the computations differ in rounding.
RTOL = {torch.float32: {"value": 1e-6, "grad": 1e-5}, torch.float64: {"value": 1e-8, "grad": 1e-6}}


def module(library, family):
    return importlib.import_module(f"{library}.{family}")


# ----------------------------------------------------------------------------- the losses


def _cls(**extra):
    return {"num_classes": C, "embedding_size": D, **extra}


# name -> (loss class name, constructor kwargs builder(library, data) -> kwargs, miner kind)
# The builder may read the data (for margins set so that many hinges are near zero).
def _tight_triplet_margin(data):
    """A margin equal to the median of d_an - d_ap over all triplets: about half of the hinges
    sit within rounding of zero."""
    emb, labels = data["embeddings"].double(), data["labels"]
    mat = torch.cdist(torch.nn.functional.normalize(emb), torch.nn.functional.normalize(emb))
    same = labels[:, None] == labels[None]
    gaps = (mat[:, None, :] - mat[:, :, None])[same[:, :, None] & ~same[:, None, :]]
    return float(gaps.median())


def _tight_pair_margins(data):
    emb, labels = data["embeddings"].double(), data["labels"]
    mat = torch.cdist(torch.nn.functional.normalize(emb), torch.nn.functional.normalize(emb))
    same = labels[:, None] == labels[None]
    same.fill_diagonal_(False)
    return float(mat[same].median()), float(mat[~same].median())


LOSSES = {
    "AngularLoss": ("AngularLoss", lambda lib, d: {}, "triplet"),
    "ArcFaceLoss": ("ArcFaceLoss", lambda lib, d: _cls(), "pair"),
    "CircleLoss": ("CircleLoss", lambda lib, d: {}, "pair"),
    "ContrastiveLoss": ("ContrastiveLoss", lambda lib, d: {}, "pair"),
    "ContrastiveLoss[tight]": (
        "ContrastiveLoss",
        lambda lib, d: dict(zip(("pos_margin", "neg_margin"), _tight_pair_margins(d))),
        "pair",
    ),
    "ContrastiveLoss[cosine]": (
        "ContrastiveLoss",
        lambda lib, d: {"pos_margin": 1, "neg_margin": 0.1,
                        "distance": module(lib, "distances").CosineSimilarity()},
        "pair",
    ),
    "CosFaceLoss": ("CosFaceLoss", lambda lib, d: _cls(), "pair"),
    "DynamicSoftMarginLoss": ("DynamicSoftMarginLoss", lambda lib, d: {}, "pair"),
    "FastAPLoss": ("FastAPLoss", lambda lib, d: {}, "pair"),
    "GeneralizedLiftedStructureLoss": ("GeneralizedLiftedStructureLoss", lambda lib, d: {}, "pair"),
    "HistogramLoss": ("HistogramLoss", lambda lib, d: {}, "triplet"),
    "InstanceLoss": ("InstanceLoss", lambda lib, d: {}, None),
    "IntraPairVarianceLoss": ("IntraPairVarianceLoss", lambda lib, d: {}, "pair"),
    "LargeMarginSoftmaxLoss": ("LargeMarginSoftmaxLoss", lambda lib, d: _cls(), "pair"),
    "LiftedStructureLoss": ("LiftedStructureLoss", lambda lib, d: {}, "pair"),
    "ManifoldLoss": ("ManifoldLoss", lambda lib, d: {"l": D, "K": 8}, None),
    "MarginLoss": ("MarginLoss", lambda lib, d: {}, "triplet"),
    "MarginLoss[learn_beta]": (
        "MarginLoss", lambda lib, d: {"learn_beta": True, "num_classes": C}, "triplet"
    ),
    "MultiSimilarityLoss": ("MultiSimilarityLoss", lambda lib, d: {}, "pair"),
    "NCALoss": ("NCALoss", lambda lib, d: {}, "pair"),
    "NPairsLoss": ("NPairsLoss", lambda lib, d: {}, "pair"),
    "NTXentLoss": ("NTXentLoss", lambda lib, d: {}, "pair"),
    "NormalizedSoftmaxLoss": ("NormalizedSoftmaxLoss", lambda lib, d: _cls(), "pair"),
    "P2SGradLoss": ("P2SGradLoss", lambda lib, d: {"descriptors_dim": D, "num_classes": C}, None),
    "PNPLoss": ("PNPLoss", lambda lib, d: {}, None),
    "ProxyAnchorLoss": ("ProxyAnchorLoss", lambda lib, d: _cls(), "pair"),
    "ProxyNCALoss": ("ProxyNCALoss", lambda lib, d: _cls(), "pair"),
    "RankedListLoss": ("RankedListLoss", lambda lib, d: {"margin": 0.4, "Tn": 1}, None),
    "SignalToNoiseRatioContrastiveLoss": (
        "SignalToNoiseRatioContrastiveLoss", lambda lib, d: {}, "pair"
    ),
    "SmoothAPLoss": ("SmoothAPLoss", lambda lib, d: {}, None),
    "SoftTripleLoss": ("SoftTripleLoss", lambda lib, d: _cls(), "pair"),
    "SphereFaceLoss": ("SphereFaceLoss", lambda lib, d: _cls(), "pair"),
    "SubCenterArcFaceLoss": ("SubCenterArcFaceLoss", lambda lib, d: _cls(), "pair"),
    "SupConLoss": ("SupConLoss", lambda lib, d: {}, "pair"),
    "ThresholdConsistentMarginLoss": ("ThresholdConsistentMarginLoss", lambda lib, d: {}, "pair"),
    "TripletMarginLoss": ("TripletMarginLoss", lambda lib, d: {}, "triplet"),
    "TripletMarginLoss[tight]": (
        "TripletMarginLoss", lambda lib, d: {"margin": _tight_triplet_margin(d)}, "triplet"
    ),
    "TripletMarginLoss[zero_margin]": ("TripletMarginLoss", lambda lib, d: {"margin": 0.0}, "triplet"),
    "TripletMarginLoss[cosine]": (
        "TripletMarginLoss",
        lambda lib, d: {"margin": 0.1, "distance": module(lib, "distances").CosineSimilarity()},
        "triplet",
    ),
    "TripletMarginLoss[squared]": (
        "TripletMarginLoss",
        lambda lib, d: {"margin": 0.2, "distance": module(lib, "distances").LpDistance(power=2)},
        "triplet",
    ),
    "TripletMarginLoss[smooth]": ("TripletMarginLoss", lambda lib, d: {"smooth_loss": True}, "triplet"),
    "TripletMarginLoss[swap]": ("TripletMarginLoss", lambda lib, d: {"swap": True}, "triplet"),
    "TripletMarginLoss[per_anchor]": (
        "TripletMarginLoss", lambda lib, d: {"triplets_per_anchor": 5}, "triplet"
    ),
    "TupletMarginLoss": ("TupletMarginLoss", lambda lib, d: {}, "pair"),
    "MarginLoss[per_anchor]": ("MarginLoss", lambda lib, d: {"triplets_per_anchor": 3}, "triplet"),
    "IntraPairVarianceLoss[distance]": (
        "IntraPairVarianceLoss", lambda lib, d: {"distance": module(lib, "distances").LpDistance()},
        "pair",
    ),
    # Wrappers (built and called by WRAPPERS below); the reducer goes to the wrapped losses.
    "MultipleLosses": ("MultipleLosses", None, "triplet"),
    "CrossBatchMemory": ("CrossBatchMemory", None, None),
    "SelfSupervisedLoss": ("SelfSupervisedLoss", None, None),
    "VICRegLoss": ("VICRegLoss", lambda lib, d: {}, None),
}

# Losses whose per-term values are computed exactly as the reference computes them (bit for
# bit, checked with DoNothingReducer): a threshold placed exactly on a term's value must then be
# decided the same way. The others compute their terms differently (fused kernels, other
# formulas), equal to rounding, so only thresholds that fall between terms are compared.
EXACT_TERMS = (
    "CircleLoss", "ContrastiveLoss", "ContrastiveLoss[tight]", "ContrastiveLoss[cosine]",
    "CosFaceLoss", "GeneralizedLiftedStructureLoss", "HistogramLoss",
    "IntraPairVarianceLoss", "MarginLoss", "MarginLoss[learn_beta]", "NCALoss", "NPairsLoss",
    "TripletMarginLoss", "TripletMarginLoss[tight]",
    "TripletMarginLoss[zero_margin]", "TripletMarginLoss[cosine]", "TripletMarginLoss[squared]",
    "TripletMarginLoss[smooth]", "TripletMarginLoss[swap]", "TripletMarginLoss[per_anchor]",
)

# ... except with a miner's tuple, where these compute their terms another way (to rounding).
INEXACT_TERMS_WITH_MINER = ("CircleLoss", "GeneralizedLiftedStructureLoss")


def exact_terms(loss_name, with_miner):
    return loss_name in EXACT_TERMS and not (with_miner and loss_name in INEXACT_TERMS_WITH_MINER)


# Losses whose per-term output is a column (N, 1) in the reference and 1-D here. The reference's
# ClassWeightedReducer then broadcasts the column against the row of class weights (the mean of
# an N x N outer product: mean(loss) * mean(weight)) and its PerAnchorReducer fails; both are
# listed in docs/compatibility.md, and DoNothingReducer terms are compared flattened.
COLUMN_TERMS = (
    "AngularLoss", "CircleLoss", "GeneralizedLiftedStructureLoss", "LiftedStructureLoss",
    "MultiSimilarityLoss", "TupletMarginLoss",
)


def known_difference(loss_name, reducer_name, data, with_miner):
    """Why this case is not compared (a deliberate, documented difference), or None."""
    cls_name = LOSSES[loss_name][0]
    if cls_name in COLUMN_TERMS and reducer_name == "ClassWeighted":
        return "the reference weights an (N, 1) column by a row of weights (outer product)"
    if reducer_name == "Threshold[on_a_term]" and not exact_terms(loss_name, with_miner):
        return "terms equal the reference's to rounding only; a threshold on one is adversarial"
    if cls_name == "SignalToNoiseRatioContrastiveLoss" and data["kind"] == "grid":
        return "SNRDistance's matrix equals the reference's to rounding, and grid data puts " \
            "distances exactly on the margins"
    return None


def works_where_reference_fails(loss_name, reducer_name):
    """True for the documented cases where the reference raises and deepmetric returns."""
    cls_name = LOSSES[loss_name][0]
    if reducer_name.startswith("PerAnchor"):
        # the reference fails on an (N, 1) column of pair terms, and on a reference set larger
        # than the batch (CrossBatchMemory's queue)
        return cls_name in COLUMN_TERMS or cls_name == "CrossBatchMemory"
    return False


# Losses that draw random numbers (the generators are seeded before each call of these).
RANDOM_LOSSES = ("ManifoldLoss", "TripletMarginLoss[per_anchor]", "MarginLoss[per_anchor]", "MultipleLosses")


# ----------------------------------------------------------------------------- building and calling


def build_loss(library, loss_name, data, reducer_for):
    """The loss ``loss_name`` of ``library``; ``reducer_for(sub_loss_names)`` gives the reducer
    of each (wrapped) loss, or None for its default."""
    losses = module(library, "losses")
    cls_name, kwargs_fn, _ = LOSSES[loss_name]

    def with_reducer(cls, **kwargs):
        names = cls(**kwargs).sub_loss_names()
        reducer = reducer_for(names)
        return cls(**kwargs) if reducer is None else cls(reducer=reducer, **kwargs)

    if cls_name == "MultipleLosses":
        inner = [with_reducer(losses.TripletMarginLoss), with_reducer(losses.ContrastiveLoss)]
        return losses.MultipleLosses(inner, weights=[1.0, 0.5])
    if cls_name == "CrossBatchMemory":
        inner = with_reducer(losses.ContrastiveLoss)
        return losses.CrossBatchMemory(inner, embedding_size=D, memory_size=24)
    if cls_name == "SelfSupervisedLoss":
        return losses.SelfSupervisedLoss(with_reducer(losses.TripletMarginLoss))
    return with_reducer(getattr(losses, cls_name), **kwargs_fn(library, data))


def invoke(loss_name, loss, emb, labels, indices_tuple):
    """Call ``loss`` as its kind is called."""
    cls_name = LOSSES[loss_name][0]
    if cls_name == "CrossBatchMemory":
        half = len(emb) // 2  # the first call fills the queue, the second reads it
        loss(emb[:half], labels[:half])
        return loss(emb[half:], labels[half:])
    if cls_name in ("SelfSupervisedLoss", "VICRegLoss"):
        half = len(emb) // 2
        return loss(emb[:half], emb[half : 2 * half])
    if cls_name == "ManifoldLoss":
        return loss(emb, None, indices_tuple)
    return loss(emb, labels, indices_tuple)


# ----------------------------------------------------------------------------- the reducers


REDUCERS = (
    "default", "Mean", "Sum", "AvgNonZero", "Threshold[low]", "Threshold[on_a_term]",
    "Threshold[high]", "Threshold[low,high]", "Divisor", "PerAnchor", "PerAnchor[AvgNonZero]",
    "ClassWeighted", "DoNothing", "Multiple",
)


def build_reducer(library, name, thresholds, sub_loss_names):
    """The reducer ``name`` built in ``library`` (None: the loss's default). ``thresholds`` is
    ``(low, on_a_term, high)`` from :func:`term_thresholds`."""
    r = module(library, "reducers")
    low, on_a_term, high = thresholds
    builders = {
        "default": lambda: None,
        "Mean": r.MeanReducer,
        "Sum": r.SumReducer,
        "AvgNonZero": r.AvgNonZeroReducer,
        "Threshold[low]": lambda: r.ThresholdReducer(low=low),
        "Threshold[on_a_term]": lambda: r.ThresholdReducer(low=on_a_term),
        "Threshold[high]": lambda: r.ThresholdReducer(high=high),
        "Threshold[low,high]": lambda: r.ThresholdReducer(low=low, high=high),
        "Divisor": r.DivisorReducer,
        "PerAnchor": r.PerAnchorReducer,
        "PerAnchor[AvgNonZero]": lambda: r.PerAnchorReducer(r.AvgNonZeroReducer()),
        "ClassWeighted": lambda: r.ClassWeightedReducer(torch.linspace(0.5, 2.0, C)),
        "DoNothing": r.DoNothingReducer,
        # the first sub-loss thresholded, the others summed
        "Multiple": lambda: r.MultipleReducers(
            {sub_loss_names[0]: r.ThresholdReducer(low=low)}, default_reducer=r.SumReducer()
        ),
    }
    return builders[name]()


# ----------------------------------------------------------------------------- the data


def make_data(seed, dtype, kind="gaussian"):
    """Embeddings (N, D) and labels with C classes of N / C rows. ``kind="grid"`` puts every
    coordinate on {-1, 0, 1}, so that many distances tie exactly."""
    g = torch.Generator().manual_seed(seed)
    if kind == "grid":
        emb = torch.randint(-1, 2, (N, D), generator=g).double()
        emb[emb.abs().sum(1) == 0, 0] = 1.0
    else:
        emb = torch.randn(N, D, generator=g, dtype=torch.float64)
    labels = torch.arange(C).repeat_interleave(N // C)[torch.randperm(N, generator=g)]
    return {"embeddings": emb.to(dtype), "labels": labels, "seed": seed, "kind": kind}


def term_thresholds(loss_name, data, dtype):
    """(low, on_a_term, high) for the threshold reducers, from the reference's terms (its
    DoNothingReducer output): low and high sit in gaps between terms near the quantiles 0.3 and
    0.8 (a term computed with other roundings cannot cross them), on_a_term is the exact value
    of the median term (only meaningful where terms are computed exactly as the reference
    does)."""
    out = run_reference_terms(loss_name, data, dtype)
    if out is None or out.numel() < 2:
        return 0.1, 0.2, 1.0
    values = torch.unique(out.double())  # sorted
    low, high = _in_a_gap(values, 0.3), _in_a_gap(values, 0.8)
    mid = float(values[len(values) // 2])
    if not low < high:
        high = low + 1.0
    return low, mid, high


def _in_a_gap(values, quantile):
    """The midpoint of the widest gap between consecutive values near ``quantile``."""
    k = min(len(values) - 2, int(quantile * (len(values) - 1)))
    lo, hi = max(0, k - 3), min(len(values) - 1, k + 4)
    gaps = values[lo + 1 : hi + 1] - values[lo:hi]
    j = lo + int(torch.argmax(gaps))
    return float((values[j] + values[j + 1]) / 2)


def run_reference_terms(loss_name, data, dtype):
    lib = LIBRARIES[0]
    reducers = module(lib, "reducers")
    try:
        loss = build_loss(lib, loss_name, data, lambda names: reducers.DoNothingReducer())
        torch.manual_seed(0)
        out = invoke(loss_name, loss, data["embeddings"].to(dtype), data["labels"], None)
    except Exception:  # noqa: BLE001 - a loss without per-term output: default thresholds
        return None
    if not isinstance(out, dict):
        return None
    terms = [
        v["losses"].detach().flatten()
        for v in out.values()
        if isinstance(v, dict) and torch.is_tensor(v["losses"]) and v["losses"].numel() > 1
    ]
    return torch.cat(terms) if terms else None


def mined(kind, data, dtype):
    """A miner tuple from the reference's miners (the same tuple is given to both libraries)."""
    if kind is None:
        return None
    miners = module(LIBRARIES[0], "miners")
    emb, labels = data["embeddings"].to(dtype), data["labels"]
    if kind == "triplet":
        return miners.TripletMarginMiner(margin=0.2, type_of_triplets="all")(emb, labels)
    return miners.PairMarginMiner(pos_margin=0.6, neg_margin=1.2)(emb, labels)


# ----------------------------------------------------------------------------- one call


class Outcome:
    def __init__(self, value=None, grad=None, error=None, stats=None):
        self.value, self.grad, self.error, self.stats = value, grad, error, stats


def _stats(root):
    out = {}
    for path, sub in root.named_modules():
        for name in getattr(sub, "_record_these_stats", []):
            value = getattr(sub, name, None)
            if torch.is_tensor(value):
                value = value.detach().double().tolist() if value.numel() > 1 else float(value)
            out[f"{path}.{name}"] = value
    return out


def call(library, loss_name, reducer_name, data, dtype, collect_stats, indices_tuple, state):
    """Run the case in ``library``; returns an :class:`Outcome` and the loss's state dict."""
    cf = module(library, "utils.common_functions")
    previous = cf.COLLECT_STATS
    cf.COLLECT_STATS = collect_stats
    try:
        thresholds = data["thresholds"][loss_name]
        torch.manual_seed(data["seed"])  # the same learnable parameters whatever ran before
        try:
            loss = build_loss(
                library, loss_name, data,
                lambda names: build_reducer(library, reducer_name, thresholds, names),
            )
        except Exception as e:  # noqa: BLE001 - compared with the other library's
            return Outcome(error=e), None
        if state is not None:
            loss.load_state_dict(state)
        loss = loss.to(dtype)
        emb = data["embeddings"].to(dtype).clone().requires_grad_(True)
        labels = data["labels"]
        if loss_name in RANDOM_LOSSES:
            torch.manual_seed(data["seed"])
            np.random.seed(data["seed"])
        try:
            value = invoke(loss_name, loss, emb, labels, indices_tuple)
            if isinstance(value, dict):
                total = sum(
                    v["losses"].sum() for v in value.values() if torch.is_tensor(v["losses"])
                )
            else:
                total = value
            grad = None
            if torch.is_tensor(total) and total.requires_grad:
                grad = torch.autograd.grad(total, emb, allow_unused=True)[0]
        except Exception as e:  # noqa: BLE001 - compared with the other library's
            return Outcome(error=e), loss.state_dict()
        return Outcome(value, grad, stats=_stats(loss)), loss.state_dict()
    finally:
        cf.COLLECT_STATS = previous


# ----------------------------------------------------------------------------- comparison


def _close(ours, ref, rtol):
    ours, ref = torch.as_tensor(ours).double(), torch.as_tensor(ref).double()
    if ours.shape != ref.shape:
        return False
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return bool(torch.allclose(ours, ref, rtol=rtol, atol=rtol * scale + 1e-12, equal_nan=True))


def compare(ours, ref, dtype, exact_terms=False):
    """A list of differences (empty when the outcomes agree)."""
    rtol = RTOL[dtype]
    if ref.error is not None:
        if ours.error is None:
            return [f"reference raised {type(ref.error).__name__}: {ref.error}, ours returned"]
        if not isinstance(ours.error, type(ref.error)):
            return [
                f"reference raised {type(ref.error).__name__}, ours {type(ours.error).__name__}: "
                f"{ours.error}"
            ]
        return []
    if ours.error is not None:
        return [f"ours raised {type(ours.error).__name__}: {ours.error}"]
    problems = []
    if isinstance(ref.value, dict):
        problems += _compare_loss_dicts(ours.value, ref.value, 0.0 if exact_terms else rtol["value"])
    else:
        if not torch.is_tensor(ours.value) or ours.value.dtype != ref.value.dtype:
            problems.append(f"value type {getattr(ours.value, 'dtype', type(ours.value))} != "
                            f"{ref.value.dtype}")
        elif not _close(ours.value.detach(), ref.value.detach(), rtol["value"]):
            problems.append(f"value {float(ours.value):.10g} != {float(ref.value):.10g}")
    if (ref.grad is None) != (ours.grad is None):
        problems.append(f"gradient presence differs (ours {ours.grad is not None})")
    elif ref.grad is not None and not _close(ours.grad, ref.grad, rtol["grad"]):
        diff = float((ours.grad.double() - ref.grad.double()).abs().max())
        problems.append(f"gradient differs (max abs diff {diff:.3g}, scale "
                        f"{float(ref.grad.abs().max()):.3g})")
    for key, value in ref.stats.items():
        if key.endswith("num_below_high"):
            continue  # the reference never fills it (see docs/compatibility.md)
        if key not in ours.stats:
            problems.append(f"stat {key} missing")
        elif not _same_stat(ours.stats[key], value):
            problems.append(f"stat {key}: {ours.stats[key]} != {value}")
    return problems


def _same_stat(a, b):
    if isinstance(b, float) and isinstance(a, (int, float)):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) or (math.isnan(a) and math.isnan(b))
    if isinstance(b, list) and isinstance(a, list):
        return len(a) == len(b) and all(_same_stat(x, y) for x, y in zip(a, b))
    return a == b


def _compare_loss_dicts(ours, ref, rtol):
    if not isinstance(ours, dict) or set(ours) != set(ref):
        return [f"loss dict keys {sorted(ours) if isinstance(ours, dict) else ours} != {sorted(ref)}"]
    problems = []
    for name, r in ref.items():
        o = ours[name]
        if o["reduction_type"] != r["reduction_type"]:
            problems.append(f"{name}: reduction_type {o['reduction_type']} != {r['reduction_type']}")
            continue
        r_losses, o_losses = torch.as_tensor(r["losses"]).detach(), torch.as_tensor(o["losses"]).detach()
        if r_losses.ndim == 2 and r_losses.shape[1] == 1:
            r_losses = r_losses.flatten()  # a column in the reference (COLUMN_TERMS)
        if torch.is_tensor(r["losses"]) != torch.is_tensor(o["losses"]):
            problems.append(f"{name}: losses differ (tensor / number)")
        elif rtol == 0.0 and not torch.equal(o_losses, r_losses):
            problems.append(f"{name}: losses differ (not bit for bit)")
        elif not _close(o_losses, r_losses, rtol):
            problems.append(f"{name}: losses differ")
        ri, oi = r["indices"], o["indices"]
        if torch.is_tensor(ri):
            ri, oi = (ri,), (oi,) if torch.is_tensor(oi) else oi
        if ri is not None and (
            oi is None or len(oi) != len(ri) or any(not torch.equal(x.cpu(), y.cpu()) for x, y in zip(oi, ri))
        ):
            problems.append(f"{name}: indices differ")
    return problems


def run_case(loss_name, reducer_name, data, dtype, collect_stats, with_miner):
    """Differences between the two libraries for one case (empty list: they agree)."""
    if known_difference(loss_name, reducer_name, data, with_miner):
        return []
    thresholds = data.setdefault("thresholds", {})
    if loss_name not in thresholds:
        thresholds[loss_name] = term_thresholds(loss_name, data, dtype)
    kind = LOSSES[loss_name][2] if with_miner else None
    if (kind, dtype) not in data.setdefault("mined", {}):
        data["mined"][(kind, dtype)] = mined(kind, data, dtype)
    indices = data["mined"][(kind, dtype)]
    if with_miner and indices is None:
        return []
    ref, state = call(LIBRARIES[0], loss_name, reducer_name, data, dtype, collect_stats, indices, None)
    ours, _ = call(LIBRARIES[1], loss_name, reducer_name, data, dtype, collect_stats, indices, state)
    if ref.error is not None and ours.error is None and works_where_reference_fails(loss_name, reducer_name):
        return []
    return compare(ours, ref, dtype, exact_terms=exact_terms(loss_name, with_miner))
