"""Stream a large query set through a distance in chunks of rows."""

import torch


class BatchedDistance(torch.nn.Module):
    """Calls ``iter_fn(mat, s, e)`` for each chunk ``query_emb[s:e]`` against the reference set.

    ``forward`` returns ``None``: everything that should persist happens inside ``iter_fn``.
    Only ``batch_size x M`` distances exist at a time. Attributes that the wrapper lacks
    (``is_inverted``, ``normalize_embeddings``, ...) are read from the wrapped distance.
    """

    def __init__(self, distance, iter_fn=None, batch_size=32):
        super().__init__()
        self.distance = distance
        self.iter_fn = iter_fn
        self.batch_size = batch_size

    def forward(self, query_emb, ref_emb=None):
        ref_emb = ref_emb if ref_emb is not None else query_emb
        n = query_emb.shape[0]
        for s in range(0, n, self.batch_size):
            e = s + self.batch_size
            mat = self.distance(query_emb[s:e], ref_emb)
            self.iter_fn(mat, s, e)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "distance":
                raise
            return getattr(self.distance, name)
