"""The work each benchmark row times, built inside the measuring child process.

Every function takes plain keyword arguments (they travel as JSON) and returns a zero-argument
callable that does the work once. ``library`` is ``"deepmetric"`` or ``"reference"``
(pytorch-metric-learning); an ImportError turns the row into "unavailable".
"""

import importlib

import torch

from benchmarks import shapes

LIBRARIES = {"deepmetric": "deepmetric", "reference": "pytorch_metric_learning"}


def import_library(library):
    """The top-level package with the submodules that cases use (losses, miners, ...) imported."""
    name = LIBRARIES[library]
    for sub in ("distances", "reducers", "regularizers", "losses", "miners"):
        importlib.import_module(f"{name}.{sub}")
    return importlib.import_module(name)


def clustered_batch(n, d, per_class=8, seed=0, noise=1.2):
    """Float32 embeddings clustered like a partly trained model: class centre + noise (the
    ``easy`` shape's batches, ``benchmarks.shapes.batch("easy", ...)``)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) // per_class
    centres = torch.randn(int(labels.max()) + 1, d, generator=g)
    return centres[labels] + noise * torch.randn(n, d, generator=g), labels


def loss_step(library, case, n, d, shape="easy"):
    """One forward and backward pass of the loss case named ``case`` on a batch of ``shape``."""
    from benchmarks.loss_cases import CASES

    lib = import_library(library)
    (spec,) = [c for c in CASES if c.name == case]
    emb, labels = shapes.batch(shape, n, d, equal_classes=spec.equal_classes)
    loss_fn = spec.make(lib, d, shapes.batch_num_classes(shape, n))
    emb.requires_grad_(True)

    def run():
        emb.grad = None
        loss_fn(emb, labels).backward()

    return run


def miner_step(library, case, n, d, shape="easy"):
    """One call of the miner case named ``case`` on a batch of ``shape``."""
    from benchmarks.miner_cases import CASES

    lib = import_library(library)
    (spec,) = [c for c in CASES if c.name == case]
    if spec.miner == "EmbeddingsAlreadyPackagedAsTriplets":
        n -= n % 3  # the batch must be whole triplets
    emb, labels = shapes.batch(shape, n, d)
    miner = getattr(lib.miners, spec.miner)(**spec.kwargs)
    miner(emb[:24], labels[:24])  # first-call overheads (lazy imports, allocator)
    return lambda: miner(emb, labels)


def accuracy_step(library, n, d, shape="easy", k=None):
    """``AccuracyCalculator(k=k)`` with its other arguments at their defaults (every metric,
    NMI and AMI included), the set of ``shape`` being its own reference."""
    module = importlib.import_module(f"{LIBRARIES[library]}.utils.accuracy_calculator")
    emb, labels = shapes.dataset(shape, n, d)
    calculator = module.AccuracyCalculator(k=k)
    return lambda: calculator.get_accuracy(emb, labels)


class _KMeansRun:
    """One k-means of the set of a shape into as many clusters as it has classes; ``report()``
    gives the NMI of the last clustering against the labels."""

    def __init__(self, library, shape, n, d):
        self.emb, self.labels = shapes.dataset(shape, n, d)
        self.clusters = int(self.labels.max()) + 1
        if library == "deepmetric":
            from deepmetric.evaluation.kmeans import TorchKMeans

            # what AccuracyCalculator uses when faiss is missing (niter=20, as the reference)
            kmeans = TorchKMeans(niter=20)
            self.cluster = lambda: kmeans(self.emb, self.clusters)
        elif library == "faiss":
            import faiss

            data = self.emb.numpy()

            def cluster():
                # what the reference's FaissKMeans(niter=20) does: train, then assign every point
                km = faiss.Kmeans(data.shape[1], self.clusters, niter=20)
                km.train(data)
                return torch.from_numpy(km.index.search(data, 1)[1][:, 0])

            self.cluster = cluster
        else:
            raise ValueError(f"unknown k-means library {library!r}")
        self.last = None

    def __call__(self):
        self.last = self.cluster()

    def report(self):
        from sklearn.metrics import normalized_mutual_info_score

        nmi = normalized_mutual_info_score(self.labels.numpy(), self.last.numpy())
        return {"nmi": float(nmi), "clusters": self.clusters}


def kmeans_step(library, shape, n, d):
    """k-means of deepmetric (``TorchKMeans``) or of faiss (``faiss.Kmeans``) on a shape's set."""
    return _KMeansRun(library, shape, n, d)


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
