"""Sample the dataset in proportion to how often a miner picks each item."""

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, WeightedRandomSampler
from torch.utils.data.sampler import Sampler

from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu


class TuplesToWeightsSampler(Sampler):
    """Every epoch: embed the dataset (or a random subset of ``subset_size`` items) with
    ``model``, mine it with ``miner``, and sample items with replacement, with weights
    proportional to how often each item occurs in the mined tuples.

    Args:
        model: maps a batch of inputs to embeddings.
        miner: a deepmetric miner.
        dataset: yields ``(input, label)``; single-level labels.
        subset_size: embed and mine only this many random items per epoch (``None``: all),
            drawn with ``c_f.safe_random_choice``.
        **tester_kwargs: the ``BaseTester`` arguments that matter here: ``batch_size``
            (default 32), ``dataloader_num_workers`` (default 2), ``data_device`` (default:
            CUDA when available), ``dtype`` (of the inputs) and ``normalize_embeddings``
            (default True: the miner sees L2-normalised embeddings, as the tester gives them).

    The reference embeds through a ``BaseTester``; deepmetric embeds with a small helper
    (model in eval mode, ``no_grad``, a plain ``DataLoader``), which gives the same
    embeddings. ``self.tester`` is therefore absent. The draws are the reference's: the
    subset from ``c_f.NUMPY_RANDOM``, the items by a ``WeightedRandomSampler`` over weights on
    ``data_device``, so the same seeds give the same stream.
    """

    def __init__(self, model, miner, dataset, subset_size=None, **tester_kwargs):
        self.model = model
        self.miner = miner
        self.dataset = dataset
        self.subset_size = subset_size
        self.batch_size = int(tester_kwargs.get("batch_size", 32))
        self.num_workers = int(tester_kwargs.get("dataloader_num_workers", 2))
        self.device = tester_kwargs.get("data_device") or c_f.use_cuda_if_available()
        self.dtype = tester_kwargs.get("dtype")
        self.normalize_embeddings = tester_kwargs.get("normalize_embeddings", True)
        self.weights = None

    def __len__(self):
        return self.subset_size if self.subset_size else len(self.dataset)

    def __iter__(self):
        c_f.LOGGER.info("Computing embeddings in TuplesToWeightsSampler")
        if self.subset_size:
            indices = c_f.safe_random_choice(np.arange(len(self.dataset)), self.subset_size)
            subset = Subset(self.dataset, indices)
        else:
            indices = np.arange(len(self.dataset))
            subset = self.dataset
        embeddings, labels = embed_dataset(
            self.model,
            subset,
            self.batch_size,
            self.num_workers,
            self.device,
            dtype=self.dtype,
            normalize=self.normalize_embeddings,
        )
        tuples = self.miner(embeddings, labels)
        # On data_device as in the reference: the multinomial below then uses that device's
        # generator.
        weights = torch.zeros(len(self.dataset), dtype=torch.float32, device=self.device)
        # Duplicate indices (a subset drawn with replacement) keep the last write, as in the
        # reference.
        weights[torch.as_tensor(indices, device=self.device)] = lmu.convert_to_weights(
            tuples, labels, dtype=torch.float32
        ).to(self.device)
        self.weights = weights
        return iter(WeightedRandomSampler(weights, len(self), replacement=True))


def embed_dataset(model, dataset, batch_size, num_workers, device, dtype=None, normalize=False):
    """``(embeddings, labels)`` of a dataset of ``(input, label)`` items, model in eval mode
    (its mode is restored afterwards); ``normalize``: L2-normalise the rows."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    all_embeddings, all_labels = [], []
    try:
        with torch.no_grad():
            for inputs, labels in loader:
                all_embeddings.append(model(c_f.to_device(inputs, device=device, dtype=dtype)))
                all_labels.append(torch.as_tensor(labels).reshape(len(labels), -1)[:, 0])
    finally:
        model.train(was_training)
    labels = torch.cat(all_labels).to(device)
    embeddings = torch.cat(all_embeddings)
    if normalize:
        embeddings = torch.nn.functional.normalize(embeddings)
    return embeddings, labels
