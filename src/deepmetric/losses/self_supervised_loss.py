"""Self-supervised wrapper: two augmented views of a batch, no labels needed."""

import torch

from ..utils.errors import ShapeError
from .base_loss_wrapper import TUPLE_LOSSES, BaseLossWrapper


class SelfSupervisedLoss(BaseLossWrapper):
    """``SelfSupervisedLoss(loss)(embeddings, ref_emb)``, where ``ref_emb[i]`` is an augmented view
    of the same input as ``embeddings[i]`` and no other row is.

    Sample ``i`` gets the label ``i`` in both views. With ``symmetric=True`` both views are
    anchors: the wrapped loss sees ``cat([embeddings, ref_emb])`` with labels
    ``cat([arange(N), arange(N)])``. With ``symmetric=False`` only ``embeddings`` are anchors
    and ``ref_emb`` is the reference set (``loss(embeddings, labels, ref_emb=ref_emb,
    ref_labels=labels)``). For example ``SelfSupervisedLoss(NTXentLoss())`` is SimCLR's loss.

    Only pair- and triplet-based losses whose label semantics fit are supported (see
    :meth:`supported_losses`, checked by exact class name).
    """

    def __init__(self, loss, symmetric=True, **kwargs):
        super().__init__(loss=loss, **kwargs)
        self.loss = loss
        self.symmetric = symmetric

    @staticmethod
    def supported_losses():
        # the reference's list: every tuple loss but MarginLoss
        return [name for name in TUPLE_LOSSES if name != "MarginLoss"]

    def forward(self, embeddings, ref_emb):
        for name, x in (("embeddings", embeddings), ("ref_emb", ref_emb)):
            if not torch.is_tensor(x):
                raise TypeError(f"SelfSupervisedLoss: {name} must be a torch.Tensor, got {type(x).__name__}")
        if embeddings.shape != ref_emb.shape:
            raise ShapeError(
                "SelfSupervisedLoss needs one augmented view per embedding: embeddings and ref_emb must "
                f"have the same shape, got {tuple(embeddings.shape)} and {tuple(ref_emb.shape)}"
            )
        labels = torch.arange(embeddings.shape[0], device=embeddings.device)
        if self.symmetric:
            both = torch.cat([embeddings, ref_emb], dim=0)
            return self.loss(both, torch.cat([labels, labels], dim=0))
        return self.loss(embeddings=embeddings, labels=labels, ref_emb=ref_emb, ref_labels=labels.clone())
