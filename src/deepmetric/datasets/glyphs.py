"""Glyphs: an embedded few-shot dataset of characters rendered at run time from the fonts that ship
inside matplotlib (DejaVu, STIX, Computer Modern). Nothing is downloaded and no file is written.

Like Omniglot, every class is a character (Latin letters, digits, Greek letters, symbols) and
every sample is that character drawn in a random font with a random rotation, scale,
translation, stroke width and pixel noise. The classes are split in two halves: ``"train"`` holds
the samples of one half, ``"test"`` those of the other, so a model trained on ``"train"`` is
evaluated on characters it has never seen (zero-shot retrieval, the usual protocol of metric
learning).

Each item is a float32 ``(1, image_size, image_size)`` tensor, ink 1 on a background of 0.
Everything is a function of ``seed`` (for a given matplotlib, whose fonts are the source): the
class split and the drawing of sample ``j`` of class ``c`` depend on ``(seed, c, j)`` only, so a
split is a subset of ``"train+test"``.

Rendering needs matplotlib (the ``plot`` extra), and uses its FreeType bindings directly (no
figure, no Pillow); a few thousand samples take a second or two, and a rendered split is kept in
memory for the life of the process.
"""

import functools
import os

import numpy as np
import torch

from ..utils.errors import ArgumentError
from .in_memory import InMemoryDataset

# Characters whose drawings no rotation, scale or stroke can turn into another class's. Dropped:
# lower-case letters that are their capital made smaller (c o s u v w x z), l and 0 (I and O),
# Greek capitals drawn like Latin ones, and small marks (. , ' ° -) that scaling turns into blobs.
CATEGORIES = {
    "latin_upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "latin_lower": "abdefghijkmnpqrty",
    "digit": "123456789",
    "greek_upper": "ΓΔΘΛΞΠΣΦΨΩ",
    "greek_lower": "αβγδεζηθλμξπρσςτφχψω",
    "symbol": "&@%#$?!*+=()[]{}/\\<>§¶©®±×÷€£¥¢¿∞√∂∇∫≈≠≤≥←→↑↓♠♣♥♦",
}

# DejaVu and STIX map Unicode; the Computer Modern fonts use TeX's own encoding, in which only
# letters, digits and these marks sit at their ASCII places.
UNICODE_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)
TEX_FONTS = ("cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf")
TEX_SAFE_MARKS = "&@%#?!*+=()[]/"
MIN_FONTS_PER_CLASS = 8

# Drawing ranges: rotation in degrees, the glyph's longer side as a share of the image, the
# centre's shift as a share of the free margin, extra stroke width in pixels of the 2x canvas
# (thinning would break the hairlines of the light faces), standard deviation of the pixel noise.
ROTATION = 15.0
SCALE = (0.6, 0.9)
STROKE = (0, 1)
NOISE = (0.0, 0.15)
OVERSAMPLE = 2  # drawn at twice the size, then averaged down: smooth edges and sub-pixel strokes


def require_matplotlib():
    try:
        import matplotlib
        from matplotlib import ft2font
    except ImportError:
        raise ImportError(
            "the Glyphs dataset renders characters with matplotlib's fonts, and matplotlib is not "
            "installed: pip install 'deepmetric[plot]' (or pip install matplotlib)"
        ) from None
    return matplotlib, ft2font


@functools.lru_cache(maxsize=1)
def class_table():
    """``(characters, categories, fonts)``: every class in a fixed order, its category name and the
    font files that draw it (at least ``MIN_FONTS_PER_CLASS`` of them)."""
    matplotlib, ft2font = require_matplotlib()
    folder = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    faces = {name: ft2font.FT2Font(os.path.join(folder, name)) for name in UNICODE_FONTS + TEX_FONTS}
    characters, categories, fonts = [], [], []
    for category, chars in CATEGORIES.items():
        for ch in chars:
            usable = [n for n in UNICODE_FONTS if faces[n].get_char_index(ord(ch))]
            if ch.isascii() and (ch.isalnum() or ch in TEX_SAFE_MARKS):
                usable += [n for n in TEX_FONTS if not (n == "cmti10.ttf" and ch == "$")]
            if len(usable) >= MIN_FONTS_PER_CLASS:
                characters.append(ch)
                categories.append(category)
                fonts.append(tuple(os.path.join(folder, n) for n in usable))
    return tuple(characters), tuple(categories), tuple(fonts)


def class_split(num_classes, categories, seed):
    """Boolean mask of the training classes: half of every category, drawn from ``seed``."""
    rng = np.random.default_rng([seed, 0x5EED])
    train = np.zeros(num_classes, dtype=bool)
    categories = np.asarray(categories)
    for category in dict.fromkeys(categories):
        members = np.flatnonzero(categories == category)
        chosen = rng.permutation(members)[: (len(members) + 1) // 2]
        train[chosen] = True
    return train


class Glyphs(InMemoryDataset):
    """Characters in many fonts, for few-shot and zero-shot metric learning (no download).

    Args:
        split: ``"train"`` (the samples of half of the classes), ``"test"`` (the other, unseen
            half) or ``"train+test"``.
        samples_per_class: drawings of each character.
        image_size: side of the square images, in pixels.
        seed: fixes the class split and every drawing.
        transform: applied to each ``(1, image_size, image_size)`` tensor.

    Attributes: ``data`` (``(N, 1, S, S)`` float32), ``labels`` (class index into
    ``characters``, an int64 tensor), ``characters`` (one string per class of the whole
    dataset), ``super_labels`` (category of each item: Latin upper/lower, digit, Greek
    upper/lower, symbol; for ``HierarchicalSampler``), ``category_names``.
    """

    SPLITS = ("train", "test", "train+test")

    def __init__(self, split="train", samples_per_class=40, image_size=32, seed=0, transform=None):
        if split not in self.SPLITS:
            raise ArgumentError(f"split {split!r} is not supported; use one of {', '.join(self.SPLITS)}")
        for name, value, low in (("samples_per_class", samples_per_class, 2), ("image_size", image_size, 8)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ArgumentError(f"{name} must be an integer of at least {low}, got {value!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ArgumentError(f"seed must be a non-negative integer, got {seed!r}")
        self.characters, categories, _ = class_table()
        self.category_names = tuple(dict.fromkeys(categories))
        in_train = class_split(len(self.characters), categories, seed)
        keep = {"train": in_train, "test": ~in_train, "train+test": np.ones_like(in_train)}[split]
        classes = tuple(int(c) for c in np.flatnonzero(keep))
        self.split = split
        self.seed = seed
        self.transform = transform
        # a copy: the rendering is cached for the next instance, which must not see changes to this one
        self.data = _render_classes(classes, samples_per_class, image_size, seed).clone()
        self.labels = torch.tensor(classes, dtype=torch.int64).repeat_interleave(samples_per_class)
        category_index = {name: i for i, name in enumerate(self.category_names)}
        self.super_labels = torch.tensor(
            [category_index[categories[c]] for c in classes], dtype=torch.int64
        ).repeat_interleave(samples_per_class)



@functools.lru_cache(maxsize=8)
def _render_classes(classes, samples_per_class, image_size, seed):
    """``(len(classes) * samples_per_class, 1, S, S)`` float32: every drawing, class by class."""
    characters, _, fonts = class_table()
    out = np.empty((len(classes), samples_per_class, image_size, image_size), dtype=np.float32)
    for i, c in enumerate(classes):
        rng = np.random.default_rng([seed, c])
        for j in range(samples_per_class):
            out[i, j] = _draw(characters[c], fonts[c], image_size, rng)
    return torch.from_numpy(out.reshape(-1, 1, image_size, image_size))


@functools.cache
def _face(path):
    _, ft2font = require_matplotlib()
    return ft2font.FT2Font(path)


def _draw(ch, font_paths, size, rng):
    """One drawing of ``ch``: all random choices come from ``rng`` in a fixed order."""
    font = font_paths[rng.integers(len(font_paths))]
    angle = rng.uniform(-ROTATION, ROTATION)
    scale = rng.uniform(*SCALE)
    shift = rng.uniform(-1.0, 1.0, size=2)
    stroke = int(rng.integers(STROKE[0], STROKE[1] + 1))
    noise = rng.uniform(*NOISE)
    canvas_size = size * OVERSAMPLE
    glyph = _glyph_bitmap(font, ch, angle, scale * canvas_size)
    glyph = _change_stroke(glyph, stroke)
    glyph = glyph[:canvas_size, :canvas_size]
    h, w = glyph.shape
    canvas = np.zeros((canvas_size, canvas_size), dtype=np.float32)
    top = int(round((canvas_size - h) / 2 * (1 + shift[0])))
    left = int(round((canvas_size - w) / 2 * (1 + shift[1])))
    top, left = min(max(top, 0), canvas_size - h), min(max(left, 0), canvas_size - w)
    canvas[top : top + h, left : left + w] = glyph
    image = canvas.reshape(size, OVERSAMPLE, size, OVERSAMPLE).mean(axis=(1, 3))
    image += rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0)


def _glyph_bitmap(font_path, ch, angle, longest_side):
    """The rotated glyph as a float bitmap whose longer side is about ``longest_side`` pixels."""
    face = _face(font_path)
    reference = 64.0
    bitmap = _rasterise(face, ch, angle, reference)
    longest = max(bitmap.shape)
    bitmap = _rasterise(face, ch, angle, reference * longest_side / max(longest, 1))
    bitmap = bitmap[: int(longest_side) + 2, : int(longest_side) + 2]  # rounding of the bounding box
    return _crop_to_ink(bitmap)


def _rasterise(face, ch, angle, points):
    face.clear()
    face.set_size(points, 72)
    face.set_text(ch, angle)
    face.draw_glyphs_to_bitmap(antialiased=True)
    return _crop_to_ink(np.asarray(face.get_image(), dtype=np.float32) / 255.0)


def _crop_to_ink(bitmap):
    rows = np.flatnonzero(bitmap.max(axis=1) > 0.05)
    cols = np.flatnonzero(bitmap.max(axis=0) > 0.05)
    if len(rows) == 0:
        return np.zeros((1, 1), dtype=np.float32)
    return bitmap[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _change_stroke(bitmap, pixels):
    """Thicken (``pixels > 0``: a max filter, the bitmap grows by ``pixels`` on every side) or thin
    (``pixels < 0``: a min filter) the strokes."""
    if pixels == 0:
        return bitmap
    p = abs(pixels)
    h, w = bitmap.shape
    if pixels > 0:
        padded = np.pad(bitmap, 2 * p)
        views = [
            padded[dy : dy + h + 2 * p, dx : dx + w + 2 * p]
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
        ]
        return np.max(views, axis=0)
    padded = np.pad(bitmap, p)
    views = [padded[dy : dy + h, dx : dx + w] for dy in range(2 * p + 1) for dx in range(2 * p + 1)]
    return np.min(views, axis=0)
