"""The embedded Glyphs dataset: 100+ character classes drawn from matplotlib's fonts, split into
disjoint halves, every drawing a function of the seed; a clear error without matplotlib."""

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from deepmetric.datasets import Glyphs, glyphs  # noqa: E402


def test_more_than_a_hundred_classes_of_every_category():
    characters, categories, fonts = glyphs.class_table()
    assert len(characters) >= 100 and len(set(characters)) == len(characters)
    assert set(categories) == set(glyphs.CATEGORIES)
    assert min(len(f) for f in fonts) >= glyphs.MIN_FONTS_PER_CLASS
    # shapes that only a scale would tell apart are left out
    for dropped in "cosuvwxzl0ΑΒΕΖΗΙΚΜΝΟΡΤΥΧο":
        assert dropped not in characters


def test_train_and_test_hold_disjoint_halves_of_every_category():
    train, test = Glyphs("train", samples_per_class=3), Glyphs("test", samples_per_class=3)
    train_classes, test_classes = set(train.labels.tolist()), set(test.labels.tolist())
    assert not train_classes & test_classes
    assert len(train_classes | test_classes) == len(train.characters)
    assert abs(len(train_classes) - len(test_classes)) <= len(glyphs.CATEGORIES)
    for category in range(len(train.category_names)):
        assert (train.super_labels == category).any() and (test.super_labels == category).any()
    assert len(train) == 3 * len(train_classes) and train.data.shape[1:] == (1, 32, 32)
    x, label = test[4]
    assert x.dtype == torch.float32 and label == int(test.labels[4])
    assert 0.0 <= float(train.data.min()) and float(train.data.max()) <= 1.0


def test_every_drawing_is_a_function_of_the_seed():
    a = Glyphs("train+test", samples_per_class=2, image_size=16, seed=7)
    b = Glyphs("train+test", samples_per_class=2, image_size=16, seed=7)
    assert torch.equal(a.data, b.data)
    c = Glyphs("train+test", samples_per_class=2, image_size=16, seed=8)
    assert not torch.equal(a.data, c.data)
    # a split holds the same drawings as the whole dataset
    test = Glyphs("test", samples_per_class=2, image_size=16, seed=7)
    first = int(test.labels[0])
    whole = (a.labels == first).nonzero().flatten()
    assert torch.equal(test.data[:2], a.data[whole])


def test_drawings_vary_and_have_ink():
    data = Glyphs("train", samples_per_class=6).data
    ink = data.flatten(1).mean(dim=1)
    assert (ink > 0.03).all()  # no blank drawing
    same_class = data[:6].flatten(1)
    assert torch.cdist(same_class, same_class).triu(1)[torch.triu_indices(6, 6, 1).unbind()].min() > 1.0


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"split": "val"}, "split 'val' is not supported"),
        ({"samples_per_class": 1}, "samples_per_class must be an integer of at least 2"),
        ({"image_size": 4}, "image_size must be an integer of at least 8"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        Glyphs(**kwargs)


def test_without_matplotlib_the_error_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    glyphs.class_table.cache_clear()
    glyphs._render_classes.cache_clear()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    try:
        with pytest.raises(ImportError, match=r"pip install 'deepmetric\[plot\]'"):
            Glyphs("train", samples_per_class=2)
        from deepmetric.cli.main import main

        assert main(["train", "--output", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert "config key 'dataset.name': Glyphs: " in err and "pip install 'deepmetric[plot]'" in err
        assert not (tmp_path / "run").exists()
    finally:
        monkeypatch.undo()
        glyphs.class_table.cache_clear()


def test_raw_pixels_are_a_weak_embedding_of_unseen_glyphs():
    # what the demo's baseline measures: the same character in another font is rarely nearest
    from deepmetric.utils.accuracy_calculator import AccuracyCalculator

    test = Glyphs("test", samples_per_class=10)
    calculator = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), k="max_bin_count")
    raw = test.data.flatten(1)
    result = calculator.get_accuracy(raw, test.labels, raw, test.labels, ref_includes_query=True)
    assert result["mean_average_precision_at_r"] < 0.15
    assert np.isfinite(result["precision_at_1"])
