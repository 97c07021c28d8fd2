"""Base of the datasets that hold all their items in memory (the embedded Digits and Glyphs)."""

import torch


class InMemoryDataset(torch.utils.data.Dataset):
    """``(transform(data[i]), labels[i])`` items of ``self.data`` and ``self.labels``, which a
    subclass fills; ``self.transform`` may be None."""

    data = None
    labels = None
    transform = None

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        x = self.data[idx]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[idx])
