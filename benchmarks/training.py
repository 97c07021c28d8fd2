"""Training throughput: full iterations of ``trainers.MetricLossOnly``, deepmetric next to the
reference, with the time of an iteration split into its phases.

One timed call is one ``trainer.forward_and_backward()``, the body of the training loop: a batch
from ``samplers.MPerClassSampler`` through a ``DataLoader`` (``dataloader_num_workers=0``, so
that the data time is measured in the process and not hidden in worker processes), the trunk's
forward pass, ``miners.MultiSimilarityMiner``, ``losses.MultiSimilarityLoss``, the backward pass
and an Adam step. Both libraries get the same data, the same trunk initialisation (torch seed)
and the same sampler stream (``common_functions.NUMPY_RANDOM`` seeded), so they compute the same
iterations.

The split is measured from outside, the same way for both libraries: forward hooks on the
trunk and embedder (``forward``), the miner (``miner``) and the loss (``loss``), and timers
around the trainer's ``get_batch`` (``data``), ``backward`` (``backward``), ``zero_grad`` and
``step_optimizers`` (``optimizer``). ``other`` is the rest of the iteration (loss bookkeeping,
moving the batch to the device), so the phases add up to the mean iteration time.

Inputs: a training set of ``TRAIN_SET`` items of a shape (``benchmarks/shapes.py``): 512-wide
feature vectors for the MLP trunk, the shape's 3072-wide embeddings viewed as 3 x 32 x 32
images for the ConvNet trunk. ``m`` is the shape's samples per class, raised until the
training set's classes fill a batch and ``m`` divides the batch size.
"""

import time
from collections import defaultdict

import numpy as np
import torch

from benchmarks import shapes
from benchmarks.workloads import LIBRARIES

TRAIN_SET = 10000
MLP_INPUT = 512
EMBEDDING = 128
PHASES = ("data", "forward", "miner", "loss", "backward", "optimizer", "other")
SAMPLER_LENGTH = 100000  # MPerClassSampler's default length_before_new_iter


def make_trunk(kind):
    """The trunk ``kind`` ("mlp" or "convnet"), initialised from torch's global generator."""
    if kind == "mlp":
        return torch.nn.Sequential(
            torch.nn.Linear(MLP_INPUT, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, EMBEDDING)
        )
    if kind == "convnet":
        layers, width = [], 3
        for out in (32, 64, 128):
            layers += [
                torch.nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False),
                torch.nn.BatchNorm2d(out),
                torch.nn.ReLU(),
            ]
            width = out
        layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, EMBEDDING)]
        return torch.nn.Sequential(*layers)
    raise ValueError(f"unknown trunk {kind!r}; choose 'mlp' or 'convnet'")


def training_set(shape, trunk, size=TRAIN_SET, seed=0):
    """``(inputs, labels)`` of the training set: vectors for the MLP, images for the ConvNet."""
    if trunk == "mlp":
        return shapes.dataset(shape, size, MLP_INPUT, seed)
    x, labels = shapes.dataset(shape, size, 3 * 32 * 32, seed)
    return x.view(size, 3, 32, 32), labels


def samples_per_class(shape, labels, batch_size):
    """The sampler's ``m``: the shape's, raised until the classes fill a batch and m divides it."""
    classes = len(torch.unique(labels))
    m = shapes.get(shape).per_class
    while m * classes < batch_size or batch_size % m:
        m += 1
    return m


def _seed(lib, seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    lib.utils.common_functions.NUMPY_RANDOM = np.random.RandomState(seed)


def _import(library):
    import importlib

    name = LIBRARIES[library]
    for sub in ("losses", "miners", "samplers", "trainers", "utils.common_functions"):
        importlib.import_module(f"{name}.{sub}")
    return importlib.import_module(name)


class PhaseTimer:
    """Adds up wall time per phase; ``time(name, fn)`` wraps a callable, ``hook(name, module)``
    times a module's forward calls with forward hooks."""

    def __init__(self):
        self.totals = defaultdict(float)
        self._started = {}

    def time(self, name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[name] += time.perf_counter() - start

        return timed

    def hook(self, name, module):
        def before(mod, args):
            self._started[id(mod)] = time.perf_counter()

        def after(mod, args, output):
            self.totals[name] += time.perf_counter() - self._started.pop(id(mod))

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)

    def reset(self):
        self.totals.clear()


class TrainingRun:
    """One ``forward_and_backward()`` per call, with the phase split in ``report()``."""

    def __init__(self, library, trunk, batch_size, shape, seed=0, train_set=TRAIN_SET):
        lib = _import(library)
        _seed(lib, seed)
        inputs, labels = training_set(shape, trunk, train_set, seed)
        model = make_trunk(trunk)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        sampler = lib.samplers.MPerClassSampler(
            labels, samples_per_class(shape, labels, batch_size), batch_size=batch_size,
            length_before_new_iter=SAMPLER_LENGTH,
        )
        self.miner = lib.miners.MultiSimilarityMiner()
        self.loss = lib.losses.MultiSimilarityLoss()
        self.trainer = lib.trainers.MetricLossOnly(
            models={"trunk": model},
            optimizers={"trunk_optimizer": optimizer},
            batch_size=batch_size,
            loss_funcs={"metric_loss": self.loss},
            mining_funcs={"tuple_miner": self.miner},
            dataset=torch.utils.data.TensorDataset(inputs, labels),
            sampler=sampler,
            dataloader_num_workers=0,
            data_device=torch.device("cpu"),
        )
        self.timer = PhaseTimer()
        t, timer = self.trainer, self.timer
        for key in ("trunk", "embedder"):
            timer.hook("forward", t.models[key])
        timer.hook("miner", self.miner)
        timer.hook("loss", self.loss)
        t.get_batch = timer.time("data", t.get_batch)
        t.backward = timer.time("backward", t.backward)
        t.zero_grad = timer.time("optimizer", t.zero_grad)
        t.step_optimizers = timer.time("optimizer", t.step_optimizers)
        t.initialize_dataloader()
        t.set_to_train()
        self.iterations = 0
        self.elapsed = 0.0
        self.losses = []

    def __call__(self):
        start = time.perf_counter()
        self.trainer.forward_and_backward()
        self.elapsed += time.perf_counter() - start
        self.iterations += 1
        total = self.trainer.losses["total_loss"]
        self.losses.append(float(total.detach()) if torch.is_tensor(total) else float(total))

    def reset(self):
        self.timer.reset()
        self.iterations, self.elapsed, self.losses = 0, 0.0, []

    def report(self):
        """Mean milliseconds per iteration, in all and per phase (``other``: the rest)."""
        count = max(1, self.iterations)
        phases = {name: 1000 * self.timer.totals.get(name, 0.0) / count for name in PHASES[:-1]}
        mean_ms = 1000 * self.elapsed / count
        phases["other"] = mean_ms - sum(phases.values())
        return {"mean_ms": mean_ms, "phases_ms": phases, "iterations": self.iterations}


def train_step(library, trunk, batch_size, shape="easy", seed=0, train_set=TRAIN_SET):
    """A ``TrainingRun`` (the harness times its calls and collects its ``report()``)."""
    return TrainingRun(library, trunk, batch_size, shape, seed, train_set)


def sampler_pass(library, batch_size, shape="easy", length=SAMPLER_LENGTH):
    """One pass of ``MPerClassSampler`` (``length`` indices) over the MLP training set's labels:
    the work a trainer does once every ``length / batch_size`` iterations."""
    lib = _import(library)
    _seed(lib, 0)
    _, labels = training_set(shape, "mlp")
    sampler = lib.samplers.MPerClassSampler(
        labels, samples_per_class(shape, labels, batch_size), batch_size=batch_size,
        length_before_new_iter=length,
    )
    return lambda: list(iter(sampler))
