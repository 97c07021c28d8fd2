"""Where the reference fails on a bad input with an exception type, ours is (also) that type.

Each case is one call of the public API with a bad input, the exception type the reference
raises for it, and a word our message must contain (the argument it names). The oracle test
checks the reference really raises that type; the other checks ours is an instance of it, comes
from deepmetric's own checks and names the argument.
"""

import importlib
import importlib.util

import pytest
import torch

from conftest import requires_reference
from deepmetric.utils import errors

needs_faiss = pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss not installed")


class _Library:
    """The submodules a case needs, from ``deepmetric`` or the reference."""

    def __init__(self, root):
        self.root = root

    def __getattr__(self, name):
        path = {
            "AC": "utils.accuracy_calculator",
            "inference": "utils.inference",
        }.get(name, name)
        return importlib.import_module(f"{self.root}.{path}")


OURS = _Library("deepmetric")
REFERENCE = _Library("pytorch_metric_learning")


def emb(n=8, d=4, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def lab(n=8, classes=4):
    return torch.arange(n) % classes


class _TinyDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        return emb(12)[i], i % 3


def _tester(L):
    return L.testers.GlobalEmbeddingSpaceTester(dataloader_num_workers=0, batch_size=4, data_device="cpu")


def _class_loss(L, name, **kwargs):
    return getattr(L.losses, name)(**{"num_classes": 4, "embedding_size": 4, **kwargs})


def _xbm(L, **kwargs):
    return L.losses.CrossBatchMemory(L.losses.ContrastiveLoss(), **{"embedding_size": 4, **kwargs})


def _inference_model(L):
    knn = L.inference.CustomKNN(L.distances.CosineSimilarity())
    return L.inference.InferenceModel(torch.nn.Identity(), knn_func=knn, data_device="cpu")


def _faiss_inference_model_width(L):
    model = L.inference.InferenceModel(torch.nn.Identity(), data_device="cpu")
    model.train_knn(emb(5))
    return model.get_nearest_neighbors(emb(3, 3), 2)


TRIPLET_OUT_OF_RANGE = (torch.tensor([0, 20]), torch.tensor([4, 4]), torch.tensor([1, 3]))
PAIRS_OUT_OF_RANGE = (torch.tensor([0, 20]), torch.tensor([4, 4]), torch.tensor([0, 1]), torch.tensor([1, 30]))

# id, call(L), the reference's exception type, a word our message names (None: torch's own error)
CASES = [
    # not a tensor
    ("loss-labels-list", lambda L: L.losses.TripletMarginLoss()(emb(), lab().tolist()), AttributeError, "labels"),
    ("loss-embeddings-numpy", lambda L: L.losses.ContrastiveLoss()(emb().numpy(), lab()), AttributeError, "embeddings"),
    ("miner-labels-list", lambda L: L.miners.MultiSimilarityMiner()(emb(), lab().tolist()), AttributeError, "labels"),
    # wrong dtype
    ("loss-integer-embeddings", lambda L: L.losses.ContrastiveLoss()(torch.ones(8, 4, dtype=torch.long), lab()), RuntimeError, "embeddings"),
    ("miner-integer-embeddings", lambda L: L.miners.TripletMarginMiner()(torch.ones(8, 4, dtype=torch.long), lab()), RuntimeError, "embeddings"),
    ("arcface-float-labels", lambda L: _class_loss(L, "ArcFaceLoss")(emb(), lab().float()), IndexError, "labels"),
    ("normalized-softmax-float-labels", lambda L: _class_loss(L, "NormalizedSoftmaxLoss")(emb(), lab().float()), RuntimeError, "labels"),
    # wrong shape
    ("angular-1d-embeddings", lambda L: L.losses.AngularLoss()(torch.randn(8), lab()), IndexError, "embeddings"),
    ("angular-3d-embeddings", lambda L: L.losses.AngularLoss()(torch.randn(8, 2, 4), lab()), RuntimeError, "embeddings"),
    ("vicreg-1d-embeddings", lambda L: L.losses.VICRegLoss()(torch.randn(8), ref_emb=torch.randn(8)), IndexError, "embeddings"),
    ("loss-ref-emb-width", lambda L: L.losses.ContrastiveLoss()(emb(), lab(), ref_emb=emb(6, 3), ref_labels=lab(6)), RuntimeError, "ref_emb"),
    ("miner-ref-emb-width", lambda L: L.miners.BatchHardMiner()(emb(), lab(), emb(8, 5), lab()), RuntimeError, "ref_emb"),
    ("xbm-labels-shorter", lambda L: _xbm(L)(emb(), lab(5)), RuntimeError, "labels"),
    ("xbm-empty-batch", lambda L: _xbm(L)(emb(0), lab(0)), IndexError, "embeddings"),
    ("batch-hard-miner-empty-batch", lambda L: L.miners.BatchHardMiner()(emb(0), lab(0)), IndexError, "embeddings"),
    ("distance-weighted-miner-empty-batch", lambda L: L.miners.DistanceWeightedMiner()(emb(0), lab(0)), RuntimeError, "embeddings"),
    ("arcface-embedding-width", lambda L: _class_loss(L, "ArcFaceLoss")(emb(8, 5), lab()), RuntimeError, "embedding_size"),
    ("arcface-get-logits-width", lambda L: _class_loss(L, "ArcFaceLoss").get_logits(emb(8, 5)), RuntimeError, "embedding_size"),
    ("xbm-embedding-width", lambda L: _xbm(L, embedding_size=5)(emb(), lab()), RuntimeError, "embedding_size"),
    ("vicreg-ref-emb-rows", lambda L: L.losses.VICRegLoss()(emb(), ref_emb=emb(6)), RuntimeError, "ref_emb"),
    ("self-supervised-ref-emb-width", lambda L: L.losses.SelfSupervisedLoss(L.losses.TripletMarginLoss())(emb(), emb(8, 3)), RuntimeError, "ref_emb"),
    ("cosine-similarity-width", lambda L: L.distances.CosineSimilarity()(emb(4, 3), emb(5, 4)), RuntimeError, "ref_emb"),
    ("lp-distance-width", lambda L: L.distances.LpDistance()(emb(4, 3), emb(5, 4)), RuntimeError, "ref_emb"),
    ("snr-distance-width", lambda L: L.distances.SNRDistance()(emb(4, 3), emb(5, 4)), RuntimeError, "ref_emb"),
    ("batched-distance-width", lambda L: L.distances.BatchedDistance(L.distances.CosineSimilarity(), batch_size=2)(emb(4, 3), emb(5, 4)), RuntimeError, "ref_emb"),
    ("sparse-centers-rows", lambda L: L.regularizers.SparseCentersRegularizer(num_classes=4, centers_per_class=2)(emb(7)), IndexError, "centers_per_class"),
    ("sparse-centers-in-loss", lambda L: _class_loss(L, "ArcFaceLoss", weight_regularizer=L.regularizers.SparseCentersRegularizer(num_classes=3, centers_per_class=2))(emb(), lab()), IndexError, "centers_per_class"),
    ("hierarchical-sampler-1d-labels", lambda L: list(L.samplers.HierarchicalSampler(lab(), batch_size=4, samples_per_class=2, batches_per_super_tuple=1)), IndexError, "labels"),
    ("accuracy-1d-query", lambda L: L.AC.AccuracyCalculator().get_accuracy(torch.randn(10), lab(10)), IndexError, "query"),
    ("accuracy-empty-query", lambda L: L.AC.AccuracyCalculator().get_accuracy(emb(0), lab(0)), RuntimeError, "query"),
    ("accuracy-reference-width", lambda L: L.AC.AccuracyCalculator().get_accuracy(emb(10), lab(10), emb(10, 5), lab(10)), AssertionError, "width"),
    ("custom-knn-width", lambda L: L.inference.CustomKNN(L.distances.CosineSimilarity())(emb(10), 2, emb(5, 3), False), RuntimeError, "width"),
    ("custom-knn-empty-reference", lambda L: L.inference.CustomKNN(L.distances.CosineSimilarity())(emb(10), 2, emb(0), False), RuntimeError, "reference"),
    ("match-finder-width", lambda L: L.inference.MatchFinder(L.distances.CosineSimilarity(), 0.5).get_matching_pairs(emb(10), emb(5, 3)), RuntimeError, "ref_emb"),
    ("inference-model-get-matches-width", lambda L: _inference_model(L).get_matches(emb(10), emb(5, 3)), RuntimeError, "ref_emb"),
    ("faiss-inference-model-width", _faiss_inference_model_width, AssertionError, "width"),
    # a required input is missing
    ("loss-ref-emb-without-ref-labels", lambda L: L.losses.ContrastiveLoss()(emb(), lab(), ref_emb=emb(6)), IndexError, "ref_labels"),
    ("nca-ref-emb-without-ref-labels", lambda L: L.losses.NCALoss()(emb(), lab(), ref_emb=emb(6)), AttributeError, "ref_labels"),
    ("miner-ref-emb-without-ref-labels", lambda L: L.miners.PairMarginMiner()(emb(9), lab(9), emb(6)), IndexError, "ref_labels"),
    ("p2sgrad-labels-none", lambda L: L.losses.P2SGradLoss(4, 4)(emb(), None), AttributeError, "labels"),
    ("tcm-labels-none", lambda L: L.losses.ThresholdConsistentMarginLoss()(emb(), None), AttributeError, "labels"),
    ("miner-labels-none", lambda L: L.miners.MultiSimilarityMiner()(emb(), None), AttributeError, "labels"),
    ("xbm-labels-none", lambda L: _xbm(L)(emb(), None), AttributeError, "labels"),
    ("class-weighted-reducer-labels-none", lambda L: L.reducers.ClassWeightedReducer(torch.ones(4))({"loss": {"losses": torch.rand(8), "indices": torch.arange(8), "reduction_type": "element"}}, emb(), None), TypeError, "labels"),
    ("match-finder-no-threshold", lambda L: L.inference.MatchFinder(L.distances.CosineSimilarity()).get_matching_pairs(emb(10)), TypeError, "threshold"),
    ("accuracy-reference-without-labels", lambda L: L.AC.AccuracyCalculator().get_accuracy(emb(10), lab(10), emb(10), None), AttributeError, "reference_labels"),
    # a label, index or k out of range
    ("arcface-labels-above-num-classes", lambda L: _class_loss(L, "ArcFaceLoss")(emb(), lab() + 10), IndexError, "labels"),
    ("soft-triple-negative-labels", lambda L: _class_loss(L, "SoftTripleLoss", centers_per_class=2)(emb(), lab() - 10), IndexError, "labels"),
    ("proxy-anchor-labels-above-num-classes", lambda L: _class_loss(L, "ProxyAnchorLoss")(emb(), lab() + 10), RuntimeError, "labels"),
    ("p2sgrad-labels-above-num-classes", lambda L: L.losses.P2SGradLoss(4, 4)(emb(), lab() + 10), RuntimeError, "labels"),
    ("tcm-pair-index-beyond-batch", lambda L: L.losses.ThresholdConsistentMarginLoss()(emb(), lab(), PAIRS_OUT_OF_RANGE), IndexError, "indices_tuple"),
    ("custom-knn-k-above-reference", lambda L: L.inference.CustomKNN(L.distances.CosineSimilarity())(emb(10), 50, emb(5), True), RuntimeError, "k=50"),
    ("faiss-knn-k-zero", lambda L: L.inference.FaissKNN()(emb(10), 0, emb(5), False), RuntimeError, "k must"),
    ("triplet-loss-index-beyond-batch", lambda L: L.losses.TripletMarginLoss()(emb(), lab(), TRIPLET_OUT_OF_RANGE), IndexError, None),
    ("contrastive-loss-index-beyond-batch", lambda L: L.losses.ContrastiveLoss()(emb(), lab(), PAIRS_OUT_OF_RANGE), IndexError, None),
    # a size or count argument out of range
    ("arcface-num-classes-zero", lambda L: _class_loss(L, "ArcFaceLoss", num_classes=0)(emb(), lab()), IndexError, "num_classes"),
    ("arcface-embedding-size-zero", lambda L: _class_loss(L, "ArcFaceLoss", embedding_size=0)(emb(), lab()), RuntimeError, "embedding_size"),
    ("soft-triple-centers-zero", lambda L: _class_loss(L, "SoftTripleLoss", centers_per_class=0)(emb(), lab()), RuntimeError, "centers_per_class"),
    ("subcenter-arcface-sub-centers-zero", lambda L: _class_loss(L, "SubCenterArcFaceLoss", sub_centers=0)(emb(), lab()), RuntimeError, "sub_centers"),
    ("large-margin-margin-zero", lambda L: _class_loss(L, "LargeMarginSoftmaxLoss", margin=0)(emb(), lab()), ZeroDivisionError, "margin"),
    ("histogram-n-bins-zero", lambda L: L.losses.HistogramLoss(n_bins=0)(emb(), lab()), ZeroDivisionError, "n_bins"),
    ("histogram-delta-zero", lambda L: L.losses.HistogramLoss(delta=0)(emb(), lab()), ZeroDivisionError, "delta"),
    ("fast-ap-num-bins-zero", lambda L: L.losses.FastAPLoss(num_bins=0)(emb(), lab()), ZeroDivisionError, "num_bins"),
    ("dynamic-soft-margin-num-bins-zero", lambda L: L.losses.DynamicSoftMarginLoss(num_bins=0)(emb(), lab()), ZeroDivisionError, "num_bins"),
    ("m-per-class-m-zero", lambda L: list(L.samplers.MPerClassSampler(lab(), m=0)), ZeroDivisionError, "m must"),
    ("m-per-class-no-labels", lambda L: list(L.samplers.MPerClassSampler([], m=2)), ZeroDivisionError, "labels"),
    # an unknown name
    ("reducer-unknown-reduction-type", lambda L: L.reducers.MeanReducer()({"loss": {"losses": torch.rand(8), "indices": torch.arange(8), "reduction_type": "bogus"}}, emb(), lab()), AttributeError, "reduction_type"),
    ("tester-unknown-split", lambda L: _tester(L).test({"train": _TinyDataset()}, 0, torch.nn.Identity(), torch.nn.Identity(), splits_to_eval=[("val", ["train"])]), KeyError, "splits_to_eval"),
]

PARAMS = [
    pytest.param(call, reference_type, argument, id=case, marks=[needs_faiss] if case.startswith("faiss") else [])
    for case, call, reference_type, argument in CASES
]


def _raised(call, library):
    try:
        call(library)
    except Exception as err:  # noqa: BLE001 - the test is about which type comes out
        return err
    pytest.fail("no exception was raised")


@requires_reference
@pytest.mark.parametrize("call, reference_type, argument", PARAMS)
def test_the_reference_raises_this_type(call, reference_type, argument):
    err = _raised(call, REFERENCE)
    assert isinstance(err, reference_type), f"the reference raised {type(err).__name__}: {err}"


@pytest.mark.parametrize("call, reference_type, argument", PARAMS)
def test_ours_is_also_the_reference_type(call, reference_type, argument):
    err = _raised(call, OURS)
    assert isinstance(err, reference_type), f"ours raised {type(err).__mro__}: {err}"
    if argument is not None:  # one of our own checks, with a message that names the argument
        assert type(err).__module__.startswith("deepmetric"), type(err)
        assert argument in str(err), str(err)


@pytest.mark.parametrize(
    "error, bases",
    [
        (errors.ArgumentError, (ValueError, AssertionError)),
        (errors.ShapeError, (ValueError, AssertionError, IndexError, RuntimeError)),
        (errors.OutOfRangeError, (ValueError, AssertionError, IndexError, RuntimeError)),
        (errors.MissingInputError, (ValueError, AssertionError, AttributeError, TypeError, IndexError)),
        (errors.UnknownNameError, (ValueError, AssertionError, AttributeError, KeyError)),
        (errors.SizeArgumentError, (ValueError, AssertionError, ZeroDivisionError, IndexError, RuntimeError)),
        (errors.NotATensorError, (TypeError, AttributeError)),
        (errors.DtypeError, (TypeError, IndexError, RuntimeError)),
    ],
)
def test_error_classes_carry_their_types_and_plain_messages(error, bases):
    err = error("labels must be 1-D")
    assert all(isinstance(err, base) for base in bases)
    assert str(err) == "labels must be 1-D"  # not quoted, even for the KeyError subclass


def test_require_raises_the_given_error_class():
    errors.require(True, "never raised", errors.ShapeError)
    with pytest.raises(errors.ArgumentError, match="m must be positive"):
        errors.require(False, "m must be positive")
    with pytest.raises(ZeroDivisionError, match="m must be positive") as info:
        errors.require(False, "m must be positive", errors.SizeArgumentError)
    assert type(info.value) is errors.SizeArgumentError
