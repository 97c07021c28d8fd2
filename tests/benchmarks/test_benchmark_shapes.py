"""The benchmark input shapes (benchmarks/shapes.py) and the training-throughput workload."""

import pytest
import torch

from benchmarks import shapes
from benchmarks.workloads import clustered_batch
from conftest import requires_reference


@pytest.mark.parametrize("name", shapes.NAMES)
@pytest.mark.parametrize("n", [1, 7, 513, 4096])
def test_class_sizes_add_up_to_n(name, n):
    sizes = shapes.class_sizes(name, n)
    assert sizes.dtype == torch.int64 and int(sizes.sum()) == n and bool((sizes >= 1).all())


def test_class_size_statistics_of_each_shape():
    n = 20000
    easy = shapes.class_sizes("easy", n)
    assert easy.tolist() == [200] * 100
    sop = shapes.class_sizes("sop", n)
    assert 2 <= int(sop.min()) and int(sop.max()) <= 12
    assert 5.1 < n / len(sop) < 5.6  # Stanford Online Products: 60,502 / 11,316 = 5.35
    cub = shapes.class_sizes("cub", n)[:-1]  # the last class is cut to fit
    assert 41 <= int(cub.min()) and int(cub.max()) == 60
    assert (cub == 60).float().mean() > 0.7
    assert len(shapes.class_sizes("cub", 5900)) in (100, 101, 102)  # CUB-200's test set: 100 classes
    tail = shapes.class_sizes("long_tail", n)
    assert (tail <= 3).float().mean() > 0.6  # most classes have 1-3 items ...
    assert int((tail >= 100).sum()) >= 10 and int(tail.max()) <= 1000  # ... a few have hundreds
    assert (tail == 1).any()
    early = shapes.class_sizes("early", n)[:-1]
    assert 5 <= int(early.min()) and int(early.max()) <= 15
    assert 9.5 < n / len(early) < 10.5


def test_histogram_buckets_count_every_class_once():
    sizes = torch.tensor([1, 2, 3, 5, 60, 600])
    hist = shapes.histogram(sizes)
    assert sum(c for _, c, _ in hist) == 6 and sum(items for _, _, items in hist) == int(sizes.sum())
    assert dict((bucket, c) for bucket, c, _ in hist)[(2, 3)] == 2
    assert dict((bucket, c) for bucket, c, _ in hist)[(512, None)] == 1


@pytest.mark.parametrize("name", shapes.NAMES)
def test_sets_and_batches_are_deterministic_float32_for_any_width(name):
    for make in (shapes.dataset, shapes.batch):
        emb, labels = make(name, 300, 17)
        again, labels_again = make(name, 300, 17)
        other, _ = make(name, 300, 17, seed=1)
        assert emb.shape == (300, 17) and emb.dtype == torch.float32 and labels.dtype == torch.int64
        assert torch.equal(emb, again) and torch.equal(labels, labels_again)
        assert not torch.equal(emb, other)


def test_easy_is_the_original_benchmark_input():
    emb, labels = shapes.batch("easy", 512, 128)
    old_emb, old_labels = clustered_batch(512, 128)
    assert torch.equal(emb, old_emb) and torch.equal(labels, old_labels)
    emb, labels = shapes.dataset("easy", 1000, 64)
    g = torch.Generator().manual_seed(0)
    expected = torch.arange(1000) % 100
    assert torch.equal(labels, expected)
    assert torch.equal(emb, torch.randn(100, 64, generator=g)[expected] + 1.2 * torch.randn(1000, 64, generator=g))


@pytest.mark.parametrize("name", ["sop", "cub", "long_tail", "early"])
@pytest.mark.parametrize("n", [512, 2048])
def test_batches_look_like_sampler_batches(name, n):
    emb, labels = shapes.batch(name, n, 8)
    classes, counts, m = shapes.batch_plan(name, n)
    assert len(labels) == n and int(counts.sum()) == n
    # samples of a class sit next to each other, at most m of each, distinct classes
    assert torch.equal(labels, torch.repeat_interleave(classes, counts))
    assert int(counts.max()) <= m and len(torch.unique(classes)) == len(classes)
    assert int(labels.max()) < shapes.batch_num_classes(name, n)
    pool = shapes.class_sizes(name, shapes.pool_size(name, n))
    assert bool((counts <= pool[classes]).all())  # distinct items: never more than a class has


def test_batch_sizes_per_class_per_shape():
    def per_class(name, n):
        _, counts, _ = shapes.batch_plan(name, n)
        return n / len(counts)

    assert 3.5 < per_class("sop", 2048) <= 4  # classes of ~5, m = 4
    assert per_class("long_tail", 2048) < 3  # mostly tiny classes
    assert 7 < per_class("early", 2048) <= 8
    assert per_class("cub", 512) == 8 and per_class("cub", 2048) > 15  # 100 classes fill the batch


@pytest.mark.parametrize("name", shapes.NAMES)
def test_equal_class_batches_for_losses_that_need_them(name):
    _, labels = shapes.batch(name, 2048, 4, equal_classes=True)
    _, counts = torch.unique(labels, return_counts=True)
    assert len(labels) == 2048 and bool((counts == counts[0]).all())


def test_unknown_shape_is_rejected():
    with pytest.raises(ValueError, match="unknown shape 'imagenet'"):
        shapes.dataset("imagenet", 10, 4)


def test_early_overlaps_like_embeddings_early_in_training():
    p_at_1 = shapes.precision_at_1("early", n=2000, d=128)
    assert 0.3 <= p_at_1 <= 0.5
    assert shapes.precision_at_1("easy", n=2000, d=128) == 1.0


def test_training_run_splits_its_time_into_phases_that_add_up():
    from benchmarks.training import PHASES, train_step

    run = train_step("deepmetric", "mlp", 32, "sop", train_set=400)
    run()
    run.reset()
    run()
    run()
    report = run.report()
    assert report["iterations"] == 2 and list(report["phases_ms"]) == list(PHASES)
    assert sum(report["phases_ms"].values()) == pytest.approx(report["mean_ms"])
    assert all(report["phases_ms"][p] > 0 for p in ("data", "forward", "miner", "loss", "backward", "optimizer"))


@requires_reference
@pytest.mark.parametrize("trunk", ["mlp", "convnet"])
def test_both_trainers_compute_the_same_iterations(trunk):
    from benchmarks.training import train_step

    losses = {}
    for library in ("deepmetric", "reference"):
        run = train_step(library, trunk, 32, "cub", train_set=300)
        for _ in range(3):
            run()
        losses[library] = run.losses
    assert losses["deepmetric"] == pytest.approx(losses["reference"], rel=1e-5)


def test_samples_per_class_fills_the_batch():
    from benchmarks.training import samples_per_class

    labels = torch.arange(1000) % 100
    assert samples_per_class("cub", labels, 256) == 8
    assert samples_per_class("cub", labels, 1024) == 16  # 100 classes x 8 < 1024
    assert samples_per_class("sop", torch.arange(1000) % 500, 1024) == 4


def test_recorded_kmeans_reasons_quote_the_shapes_class_counts():
    from benchmarks import reasons

    for shape in ("sop", "early"):
        classes = len(shapes.class_sizes(shape, 50000))
        text = reasons.why("AccuracyCalculator()", "floor", 50000, shape)
        assert f"into the set's {classes:,} classes" in text
        assert f"at least {1 + 21 * 50000 * classes * 128 / 3.2e11:.1f} floors" in text
    assert reasons.why("AccuracyCalculator()", "floor", 50000, "cub") is None
