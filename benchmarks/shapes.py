"""Benchmark inputs shaped like real retrieval sets, shared by the loss, miner, evaluation,
k-means and training grids.

A shape fixes how many items each class has and how far apart the classes sit:

* ``easy``: the original benchmark input. Evaluation sets have 100 classes whatever N is
  (``labels = arange(N) % 100``); loss and miner batches have 8 samples per class. Embeddings
  are a class centre ``N(0, I)`` plus ``1.2 N(0, I)`` noise: well separated at D = 128.
* ``sop``: classes of 2-12 items, about 5 on average (``2 + Poisson(3.35)``, at most 12), like
  the Stanford Online Products test set (60,502 images of 11,316 classes).
* ``cub``: classes of about 60 items (60 with probability 0.8, otherwise 41-59), like CUB-200's
  test set (5,924 images of 100 classes; N = 5,900 gives 100 classes).
* ``long_tail``: class sizes from a power law, ``P(s) ~ s^-1.6`` for ``1 <= s <= min(1000,
  N / 10)``, like iNaturalist: two thirds of the classes have 1-3 items, a few have hundreds.
* ``early``: classes of 5-15 items (uniform), heavily overlapping, like embeddings early in
  training (precision at 1 about 0.4).

Every shape but ``easy`` keeps its class sizes and grows its number of classes with N. Their
embeddings are ``centre_c + s_c * noise`` with ``centre_c, noise ~ N(0, I)`` and a per-class
spread ``s_c = sigma * exp(0.2 z_c)``, ``z_c ~ N(0, 1)`` (some classes tighter than others);
``sigma`` sets how much the classes overlap (precision at 1 at N = 10,000, D = 128: about 0.78
for ``sop``, 0.71 for ``cub``, 0.77 for ``long_tail``, 0.37 for ``early``; it rises with D).
Items come in a random order.

A loss or miner batch of a shape is what an ``MPerClassSampler``-like sampler draws from a
training set of that shape (``POOL`` items, or twice the batch when that is larger): classes in
random order, ``m`` distinct items of each (all of a class's items when it has fewer than ``m``),
until the batch is full; ``m`` is raised until the classes can fill the batch. So ``sop`` and
``long_tail`` batches have 1-4 items per class, ``cub`` batches (100 classes in the pool) 8 per
class at N = 512 and about 20 at N = 2048, ``early`` batches 8 per class. ``equal_classes=True``
(for losses that need it, such as SmoothAPLoss) takes only classes with at least ``m`` items,
exactly ``m`` each, with ``m`` a divisor of N. Labels are class ids in ``[0, num_classes)`` of
the pool, so classification losses get the pool's class count (``batch_num_classes``).

Everything is deterministic given ``seed``, float32 embeddings and int64 labels.

``python -m benchmarks.shapes`` prints each shape's class-size histogram and the precision at 1
of its raw embeddings (``AccuracyCalculator``, N = 10,000, D = 128), the table in
docs/performance.md.
"""

from dataclasses import dataclass

import torch

EASY_CLASSES = 100
EASY_PER_CLASS = 8
EASY_NOISE = 1.2
# Bucket edges of the class-size histograms: (low, high) inclusive, high None = no limit.
BUCKETS = ((1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 63), (64, 127), (128, 511), (512, None))


@dataclass(frozen=True)
class Shape:
    name: str
    summary: str  # one line for tables
    noise: float  # sigma: the (median) spread of a class around its centre
    per_class: int  # m of the batch sampler
    pool: int  # training-set size that batches are drawn from


SHAPES = {
    "easy": Shape("easy", "100 well-separated classes (8 per class in batches)", EASY_NOISE, 8, 0),
    "sop": Shape("sop", "classes of 2-12 items, about 5 (Stanford Online Products)", 1.1, 4, 60000),
    "cub": Shape("cub", "classes of about 60 items (CUB-200)", 1.45, 8, 5900),
    "long_tail": Shape("long_tail", "power-law class sizes, 1 to hundreds (iNaturalist)", 1.5, 4, 50000),
    "early": Shape("early", "classes of 5-15 items, heavily overlapping (early training)", 1.65, 8, 10000),
}
NAMES = tuple(SHAPES)


def get(name):
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; choose from {', '.join(SHAPES)}")
    return SHAPES[name]


# ------------------------------------------------------------------------------ class sizes


def _draw_sizes(name, count, n, g):
    """``count`` independent class sizes of shape ``name`` (for a set of about ``n`` items)."""
    if name == "sop":
        rate = torch.full((count,), 3.35, dtype=torch.float64)
        return (2 + torch.poisson(rate, generator=g)).clamp(max=12).long()
    if name == "cub":
        full = torch.rand(count, generator=g) < 0.8
        return torch.where(full, torch.tensor(60), torch.randint(41, 60, (count,), generator=g))
    if name == "long_tail":
        top = max(4, min(1000, n // 10))
        weights = torch.arange(1, top + 1, dtype=torch.float64) ** -1.6
        return torch.multinomial(weights, count, replacement=True, generator=g) + 1
    if name == "early":
        return torch.randint(5, 16, (count,), generator=g)
    raise ValueError(f"shape {name!r} has no size distribution")


def class_sizes(name, n, seed=0):
    """Sizes of the classes of an ``n``-item set of shape ``name``: an int64 tensor summing to n
    (the last class drawn is cut to fit; a cut-off class of one item joins the one before,
    except in ``long_tail``, where singletons are common anyway)."""
    get(name)
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if name == "easy":
        classes = min(EASY_CLASSES, n)
        return torch.full((classes,), n // classes).add_((torch.arange(classes) < n % classes).long())
    g = torch.Generator().manual_seed(seed)
    drawn, total = [], 0
    while total < n:
        chunk = _draw_sizes(name, max(16, (n - total) // 2 + 1), n, g)
        drawn.append(chunk)
        total += int(chunk.sum())
    sizes = torch.cat(drawn)
    cum = sizes.cumsum(0)
    last = int(torch.searchsorted(cum, torch.tensor(n)))  # first class reaching n
    sizes = sizes[: last + 1].clone()
    sizes[-1] -= int(cum[last]) - n
    if name != "long_tail" and len(sizes) > 1 and sizes[-1] < 2:
        sizes[-2] += sizes[-1]
        sizes = sizes[:-1]
    return sizes


def histogram(sizes):
    """``[((low, high), number of classes, number of items)]`` over ``BUCKETS``."""
    out = []
    for low, high in BUCKETS:
        inside = (sizes >= low) if high is None else (sizes >= low) & (sizes <= high)
        out.append(((low, high), int(inside.sum()), int(sizes[inside].sum())))
    return out


# ------------------------------------------------------------------------------ embeddings


def _embed(shape, class_ids, num_local, d, g):
    """Embeddings for items whose (local) class is ``class_ids``: centre + per-class noise."""
    centres = torch.randn(num_local, d, generator=g)
    spread = shape.noise * torch.exp(0.2 * torch.randn(num_local, generator=g))
    noise = torch.randn(len(class_ids), d, generator=g)
    return centres[class_ids] + spread[class_ids, None] * noise


def dataset(name, n, d, seed=0):
    """An evaluation set of shape ``name``: ``(embeddings (n, d) float32, labels (n,) int64)``."""
    shape = get(name)
    if name == "easy":
        # the original benchmark input, unchanged
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % EASY_CLASSES
        emb = torch.randn(EASY_CLASSES, d, generator=g)[labels] + EASY_NOISE * torch.randn(n, d, generator=g)
        return emb, labels
    sizes = class_sizes(name, n, seed)
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    labels = labels[torch.randperm(n, generator=g)]
    return _embed(shape, labels, len(sizes), d, g), labels


# ------------------------------------------------------------------------------ batches


def pool_size(name, n):
    return max(get(name).pool, 2 * n)


def batch_num_classes(name, n):
    """Classes a classification loss is built with for batches of ``n``: those of the pool."""
    if name == "easy":
        return n // EASY_PER_CLASS
    return len(class_sizes(name, pool_size(name, n)))


def _smallest_divisor_at_least(n, m):
    return next(k for k in range(max(1, m), n + 1) if n % k == 0)


def batch_plan(name, n, seed=0, equal_classes=False):
    """Which pool classes a batch of ``n`` takes and how many items of each:
    ``(class ids, counts, m)``."""
    shape = get(name)
    sizes = class_sizes(name, pool_size(name, n), seed)
    g = torch.Generator().manual_seed(seed + 2)
    order = torch.randperm(len(sizes), generator=g)
    m = shape.per_class
    if equal_classes:
        m = _smallest_divisor_at_least(n, m)
        while int((sizes >= m).sum()) * m < n:
            m = _smallest_divisor_at_least(n, m + 1)
        order = order[sizes[order] >= m]
        take = torch.full((len(order),), m)
    else:
        while int(sizes.clamp(max=m).sum()) < n:
            m += 1
        take = sizes[order].clamp(max=m)
    cum = take.cumsum(0)
    last = int(torch.searchsorted(cum, torch.tensor(n)))
    classes, counts = order[: last + 1], take[: last + 1].clone()
    counts[-1] -= int(cum[last]) - n
    return classes, counts, m


def batch(name, n, d, seed=0, equal_classes=False):
    """A loss/miner batch of shape ``name``: ``(embeddings (n, d) float32, labels (n,) int64)``,
    samples of a class next to each other as a sampler yields them (see the module docstring)."""
    shape = get(name)
    if name == "easy":
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) // EASY_PER_CLASS
        centres = torch.randn(int(labels.max()) + 1, d, generator=g)
        return centres[labels] + EASY_NOISE * torch.randn(n, d, generator=g), labels
    classes, counts, _ = batch_plan(name, n, seed, equal_classes)
    g = torch.Generator().manual_seed(seed + 3)
    local = torch.repeat_interleave(torch.arange(len(classes)), counts)
    return _embed(shape, local, len(classes), d, g), classes[local]


# ------------------------------------------------------------------------------ the docs table


def precision_at_1(name, n=10000, d=128, seed=0):
    """Precision at 1 of the raw embeddings of a shape (our AccuracyCalculator, self-retrieval)."""
    from deepmetric.evaluation.accuracy_calculator import AccuracyCalculator

    emb, labels = dataset(name, n, d, seed)
    calculator = AccuracyCalculator(include=("precision_at_1",), k=1, device=torch.device("cpu"))
    return calculator.get_accuracy(emb, labels)["precision_at_1"]


def _bucket_name(low, high):
    if high is None:
        return f"{low}+"
    return str(low) if low == high else f"{low}-{high}"


def describe(n=10000, d=128, with_precision=True, large=50000):
    """Markdown: each shape's classes, class-size histogram (classes per bucket) at ``n``, its
    classes and largest class at ``large``, and P@1 of its raw embeddings at ``n``."""
    names = [_bucket_name(low, high) for low, high in BUCKETS]
    head = f"| shape | classes | mean size | largest | {' | '.join(names)} | classes at {large:,} "
    head += f"| largest at {large:,} |"
    head += " P@1 (D=128) | P@1 (D=512) |" if with_precision else ""
    lines = [head, "|---" + "|---:" * (5 + len(names) + (2 if with_precision else 0)) + "|"]
    for name in SHAPES:
        sizes = class_sizes(name, n)
        at_large = class_sizes(name, large)
        counts = [str(c) for _, c, _ in histogram(sizes)]
        row = f"| {name} | {len(sizes)} | {n / len(sizes):.1f} | {int(sizes.max())} | " + " | ".join(counts)
        row += f" | {len(at_large)} | {int(at_large.max())}"
        if with_precision:
            row += f" | {precision_at_1(name, n, d):.3f} | {precision_at_1(name, n, 512):.3f} |"
        else:
            row += " |"
        lines.append(row)
    return "\n".join(lines)


def describe_batches(sizes=(512, 2048, 4096)):
    """Markdown: how batches of each shape look (classes, items per class, classification width)."""
    lines = [
        "| shape | N | classes in batch | items per class | m | classes of the pool |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for name in SHAPES:
        for n in sizes:
            if name == "easy":
                classes = n // EASY_PER_CLASS
                m = EASY_PER_CLASS
                lines.append(f"| {name} | {n} | {classes} | {m} | {m} | {classes} |")
                continue
            classes, counts, m = batch_plan(name, n)
            low, high = int(counts.min()), int(counts.max())
            per = f"{low}-{high} (mean {n / len(classes):.1f})" if low != high else str(low)
            lines.append(f"| {name} | {n} | {len(classes)} | {per} | {m} | {batch_num_classes(name, n)} |")
    return "\n".join(lines)


def main():
    print(describe())
    print()
    print(describe_batches())


if __name__ == "__main__":
    main()

