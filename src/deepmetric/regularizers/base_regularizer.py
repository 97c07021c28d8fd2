"""The regularizer interface: a 2-D tensor (one vector per row) -> a scalar penalty."""

from ..reducers.module_with_records_and_reducer import ModuleWithRecordsReducerAndDistance
from ..utils import common_functions as c_f


class BaseRegularizer(ModuleWithRecordsReducerAndDistance):
    """Applied to embeddings (``embedding_regularizer=``) or to a loss's class-weight rows
    (``weight_regularizer=``). Subclasses implement ``compute_loss(x)`` -> loss dict; the
    row indices of ``x`` act as labels for the reducer.
    """

    def forward(self, x):
        self.reset_stats()
        loss_dict = self.compute_loss(x)
        return self.reducer(loss_dict, x, c_f.torch_arange_from_size(x))

    def compute_loss(self, x):
        raise NotImplementedError
