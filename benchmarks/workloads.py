"""The work each benchmark row times, built inside the measuring child process.

Every function takes plain keyword arguments (they travel as JSON) and returns a zero-argument
callable that does the work once. ``library`` is ``"deepmetric"`` or ``"reference"``
(pytorch-metric-learning); an ImportError turns the row into "unavailable".
"""

import importlib

import torch

LIBRARIES = {"deepmetric": "deepmetric", "reference": "pytorch_metric_learning"}


def import_library(library):
    """The top-level package with the submodules that cases use (losses, miners, ...) imported."""
    name = LIBRARIES[library]
    for sub in ("distances", "reducers", "regularizers", "losses", "miners"):
        importlib.import_module(f"{name}.{sub}")
    return importlib.import_module(name)


def clustered_batch(n, d, per_class=8, seed=0, noise=1.2):
    """Float32 embeddings clustered like a partly trained model: class centre + noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) // per_class
    centres = torch.randn(int(labels.max()) + 1, d, generator=g)
    return centres[labels] + noise * torch.randn(n, d, generator=g), labels


def loss_step(library, case, n, d, per_class=8):
    """One forward and backward pass of the loss case named ``case``."""
    from benchmarks.loss_cases import CASES

    lib = import_library(library)
    (spec,) = [c for c in CASES if c.name == case]
    emb, labels = clustered_batch(n, d, per_class)
    loss_fn = spec.make(lib, d, int(labels.max()) + 1)
    emb.requires_grad_(True)

    def run():
        emb.grad = None
        loss_fn(emb, labels).backward()

    return run


def miner_step(library, case, n, d, per_class=8):
    """One call of the miner case named ``case``."""
    from benchmarks.miner_cases import CASES

    lib = import_library(library)
    (spec,) = [c for c in CASES if c.name == case]
    if spec.miner == "EmbeddingsAlreadyPackagedAsTriplets":
        n -= n % 3  # the batch must be whole triplets
    emb, labels = clustered_batch(n, d, per_class)
    miner = getattr(lib.miners, spec.miner)(**spec.kwargs)
    miner(emb[:24], labels[:24])  # first-call overheads (lazy imports, allocator)
    return lambda: miner(emb, labels)


def accuracy_step(library, n, d, num_classes=100):
    """``AccuracyCalculator()`` with default arguments, the query set being its own reference."""
    module = importlib.import_module(f"{LIBRARIES[library]}.utils.accuracy_calculator")
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % num_classes
    emb = torch.randn(num_classes, d, generator=g)[labels] + 1.2 * torch.randn(n, d, generator=g)
    calculator = module.AccuracyCalculator()
    return lambda: calculator.get_accuracy(emb, labels)


def knn_floor(n, d, block=4096):
    """The dense work exact kNN cannot avoid: every query-reference product, in row blocks."""
    emb = torch.randn(n, d, generator=torch.Generator().manual_seed(0))

    def run():
        for start in range(0, n, block):
            emb[start : start + block] @ emb.T

    return run


def matmul_floor(n, d, backward=True, m=None):
    """The dense work a loss cannot avoid: ``E @ E.T`` for pair-based losses, or ``E @ W.T`` with
    ``m`` class vectors (or memory rows) for the others; forward, and backward when asked."""
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(n, d, generator=g).requires_grad_(backward)
    other = emb if m is None else torch.randn(m, d, generator=g).requires_grad_(backward)
    grad = torch.randn(n, n if m is None else m, generator=torch.Generator().manual_seed(1))

    def run():
        emb.grad = other.grad = None
        sims = emb @ other.T
        if backward:
            sims.backward(grad)

    return run
