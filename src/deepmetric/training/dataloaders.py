"""The data loaders of the trainers and testers, and a dataset of precomputed embeddings."""

import torch


def get_train_dataloader(dataset, batch_size, sampler, num_workers, collate_fn):
    """The trainers' loader: a ``BatchSampler`` (it yields lists of indices) is passed as
    ``batch_sampler`` and decides the batches; any other sampler (or shuffling, without one)
    is passed as ``sampler`` with ``batch_size`` and ``drop_last=True``."""
    workers = {"num_workers": num_workers, "collate_fn": collate_fn, "pin_memory": False}
    if isinstance(sampler, torch.utils.data.BatchSampler):
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **workers)
    batches = {"batch_size": int(batch_size), "drop_last": True, "shuffle": sampler is None}
    return torch.utils.data.DataLoader(dataset, sampler=sampler, **batches, **workers)


def get_eval_dataloader(dataset, batch_size, num_workers, collate_fn):
    """The testers' loader: every item once, in order, the last batch possibly smaller."""
    workers = {"num_workers": num_workers, "collate_fn": collate_fn, "pin_memory": False}
    return torch.utils.data.DataLoader(dataset, batch_size=int(batch_size), shuffle=False, **workers)


class EmbeddingDataset(torch.utils.data.Dataset):
    """Pairs of ``(embedding, label)`` from two aligned sequences."""

    def __init__(self, embeddings, labels):
        self.embeddings = embeddings
        self.labels = labels

    def __len__(self):
        return len(self.embeddings)

    def __getitem__(self, idx):
        return self.embeddings[idx], self.labels[idx]
