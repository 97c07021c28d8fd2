import pytest
import torch

from deepmetric.miners import EmbeddingsAlreadyPackagedAsTriplets
from deepmetric.utils.errors import ArgumentError


def test_consecutive_rows_form_triplets(dtype):
    a, p, n = EmbeddingsAlreadyPackagedAsTriplets()(torch.randn(9, 4, dtype=dtype), torch.arange(9))
    assert a.tolist() == [0, 3, 6] and p.tolist() == [1, 4, 7] and n.tolist() == [2, 5, 8]
    assert a.dtype == torch.long and a.device.type == "cpu"


def test_batch_not_a_multiple_of_three_is_rejected():
    with pytest.raises(ArgumentError, match="different lengths"):
        EmbeddingsAlreadyPackagedAsTriplets()(torch.randn(8, 4), torch.arange(8))


def test_values_are_not_scanned_but_shapes_still_are():
    # The miner never reads the values, so a NaN row passes (the loss checks it); shapes do not.
    emb = torch.randn(6, 4)
    emb[1, 2] = float("nan")
    a, _p, _n = EmbeddingsAlreadyPackagedAsTriplets()(emb, torch.arange(6))
    assert a.tolist() == [0, 3]
    with pytest.raises(ValueError, match="2-D"):
        EmbeddingsAlreadyPackagedAsTriplets()(torch.randn(6), torch.arange(6))
    with pytest.raises(ValueError, match="labels has 5 entries"):
        EmbeddingsAlreadyPackagedAsTriplets()(torch.randn(6, 4), torch.arange(5))
