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
