"""CLIP's symmetric contrastive loss (Radford et al., "Learning Transferable Visual Models From
Natural Language Supervision", ICML 2021, https://arxiv.org/abs/2103.00020). Not in the
reference library."""

import math
import numbers

import torch
import torch.nn.functional as F

from ..ops import gather
from ..ops.dtypes import accumulation_dtype
from ..ops.tiled_logsumexp import tiled_logsumexp
from ..utils.errors import require
from ..utils.module_with_records import ModuleWithRecords
from ..utils.validation import check_embeddings
from ._tiled_pairs import check_tile_size


class CLIPLoss(ModuleWithRecords):
    """Symmetric InfoNCE over a batch of paired embeddings of two modalities.

    ``loss(image_embeddings, text_embeddings)``: row ``i`` of each ``(N, D)`` tensor is a
    matching pair (image and caption, or any two modalities); every other row is a negative.
    With ``u_i``, ``v_j`` the L2-normalised rows and ``t`` the learnable log-scale::

        logits_ij = min(exp(t), max_logit_scale) * u_i . v_j
        loss = ( CE(logits, arange(N)) + CE(logits^T, arange(N)) ) / 2

    (``CE`` = softmax cross-entropy averaged over rows: image-to-text and text-to-image.)
    ``t`` is the parameter ``logit_scale`` (0-dim), initialised to ``log(1 / init_temperature)``
    = log(1/0.07); it is clamped inside the forward, so its gradient is zero while
    ``exp(t) > max_logit_scale`` (the paper clips the scale at 100). With
    ``learn_temperature=False`` it is a buffer instead of a parameter.

    Half-precision inputs are computed in float32 (autocast off) and the loss is returned in
    float32, like ``cross_entropy`` under autocast; other dtypes are kept. A batch of one pair
    gives 0 (no negatives), attached to the graph.

    Under ``torch.distributed`` (initialised, more than one process) and with
    ``gather_distributed=True``, every process gathers the other processes' rows (batches may
    differ in size) and computes the loss of the global ``(M, M)`` logits matrix, its own rows
    placed at their rank's offset (rank order). The gathered copies carry no gradient; the local
    rows keep their graph. Exactly:

    * the returned value, in every process, equals the single-process loss on the concatenated
      batch;
    * the local embeddings receive ``world_size`` times the gradient of that loss (other ranks'
      terms involving local rows are in this process's graph too, so nothing is missing), so
      that ``DistributedDataParallel``'s averaging gives the model exactly the single-process
      gradient;
    * ``logit_scale`` receives the single-process gradient, identical in every process (correct
      whether or not it sits inside a DDP module, since averaging identical values is a no-op).

    With ``gather_distributed=False`` each process only contrasts its own batch.

    With ``local_loss=True`` (and ``gather_with_grad=True``, which it needs) each process
    computes only its own rows of the logits, against the gathered other modality, in both
    directions: memory ``O(local x global)`` per process instead of ``O(global x global)``.
    The gathered rows carry gradients back to the processes that own them (an autograd
    all-gather whose backward pass sums every process's gradient), so no term is lost; with
    ``r`` the local rows, ``M`` the global batch and ``S = scale * U V^T`` the global logits::

        part_r = ( sum_{i in r} (lse_j S_ij - S_ii) + sum_{j in r} (lse_i S_ij - S_jj) ) / (2 M)

    the parts sum to the single-process loss, which every process returns (one scalar
    all-reduce). The gradients are those of the default (gathered) path exactly: the local
    embeddings receive ``world_size`` times the single-process gradient (for DDP's averaging)
    and ``logit_scale`` the single-process gradient itself, the same in every process (its
    gradient is all-reduced in the backward pass). Every process must call ``backward``.
    Without ``torch.distributed`` both switches change nothing. (``gather_with_grad`` has no
    effect without ``local_loss``: every process then holds every term of its rows' gradient.)

    With ``tile_size`` set, the row and column log-sum-exps of the logits are computed
    ``tile_size`` rows at a time and each tile is recomputed in the backward pass, so memory
    grows as ``O(tile_size x M + M x D)`` instead of ``O(M x M)``; values and gradients equal
    the dense path's up to rounding (the same formula, under ``torch.distributed`` too).

    Args:
        init_temperature: initial softmax temperature (``logit_scale = log(1/init_temperature)``).
        learn_temperature: make ``logit_scale`` a trainable parameter.
        max_logit_scale: upper bound of ``exp(logit_scale)``.
        gather_distributed: contrast against the whole global batch under torch.distributed.
        tile_size: None (default) for the dense logits; a positive int for the tiled path.
        local_loss: under torch.distributed, compute only the local rows of the logits.
        gather_with_grad: gather the other processes' rows with their gradient path
            (required by ``local_loss``).
        **kwargs: ``collect_stats``.
    """

    def __init__(
        self,
        init_temperature=0.07,
        learn_temperature=True,
        max_logit_scale=100,
        gather_distributed=True,
        tile_size=None,
        local_loss=False,
        gather_with_grad=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tile_size = check_tile_size(type(self).__name__, tile_size)
        for name, value in (("local_loss", local_loss), ("gather_with_grad", gather_with_grad)):
            require(isinstance(value, bool), f"CLIPLoss needs {name} to be a bool, got {value!r}")
        # Without the gradient path, another process's terms of a local row would be dropped:
        # the gradient would silently differ from the single-process one.
        require(
            not local_loss or gather_with_grad,
            "CLIPLoss(local_loss=True) needs gather_with_grad=True (the other processes' terms "
            "reach a local row's gradient only through the gathered copies), got gather_with_grad=False",
        )
        require(
            not local_loss or gather_distributed,
            "CLIPLoss(local_loss=True) needs gather_distributed=True (it contrasts the local rows "
            "with the gathered batch), got gather_distributed=False",
        )
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        for name, value in (("init_temperature", init_temperature), ("max_logit_scale", max_logit_scale)):
            require(
                isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
                and value > 0,
                f"CLIPLoss needs {name} to be a finite positive number, got {value!r}",
            )
        self.init_temperature = float(init_temperature)
        self.learn_temperature = bool(learn_temperature)
        self.max_logit_scale = float(max_logit_scale)
        self.gather_distributed = bool(gather_distributed)
        logit_scale = torch.tensor(math.log(1 / self.init_temperature))
        if self.learn_temperature:
            self.logit_scale = torch.nn.Parameter(logit_scale)
        else:
            self.register_buffer("logit_scale", logit_scale)
        self.add_to_recordable_attributes(
            list_of_names=["init_temperature", "max_logit_scale"], is_stat=False
        )

    @property
    def temperature(self):
        """The current softmax temperature, ``1 / min(exp(logit_scale), max_logit_scale)``."""
        return 1 / min(math.exp(float(self.logit_scale.detach())), self.max_logit_scale)

    def forward(self, image_embeddings, text_embeddings):
        check_paired_embeddings("CLIPLoss", image_embeddings, text_embeddings)
        self.reset_stats()
        world_size = gather.world_size() if self.gather_distributed else 1
        compute_dtype = accumulation_dtype(image_embeddings.dtype)
        device_type = image_embeddings.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            if world_size > 1 and self.local_loss:
                return self._local_rows_loss(image_embeddings, text_embeddings, compute_dtype, world_size)
            if world_size > 1:
                image_embeddings, text_embeddings = _gather_keeping_local_graph(
                    image_embeddings, text_embeddings
                )
            scale = self._clamped_scale(compute_dtype)
            if world_size > 1:
                # The local rows' gradient is multiplied by world_size below; the shared scale's
                # must not be, so its share of the product is divided here (value unchanged).
                scale = scale.detach() + (scale - scale.detach()) / world_size
            if self.tile_size is None:
                logits = scale * self._cosines(image_embeddings, text_embeddings, compute_dtype)
                loss = _symmetric_cross_entropy(logits)
            else:
                u = F.normalize(image_embeddings.to(compute_dtype), dim=1)
                v = F.normalize(text_embeddings.to(compute_dtype), dim=1)
                loss = _tiled_symmetric_cross_entropy(u, v, scale, self.tile_size)
        if world_size > 1:
            loss = loss.detach() + world_size * (loss - loss.detach())
        return loss

    def _local_rows_loss(self, image_embeddings, text_embeddings, dtype, world_size):
        """``part_r`` of the class docstring, returned as the global loss with the gradient of
        ``world_size * part_r`` (the other parts' gradients arrive through the gathers)."""
        u = F.normalize(image_embeddings.to(dtype), dim=1)
        v = F.normalize(text_embeddings.to(dtype), dim=1)
        gathered = gather.gather_rows_with_grad(torch.cat([u, v], dim=1))  # one collective for both
        all_u, all_v = gathered[:, : u.shape[1]], gathered[:, u.shape[1] :]
        scale = gather.sum_gradient_over_processes(self._clamped_scale(dtype))
        # world_size * part_r is differentiated below; the summed scale gradient must not be.
        scale = scale.detach() + (scale - scale.detach()) / world_size
        if self.tile_size is None:
            row_lse = torch.logsumexp(scale * (u @ all_v.t()), dim=1)
            col_lse = torch.logsumexp(scale * (v @ all_u.t()), dim=1)
        else:
            row_lse = tiled_logsumexp(_scaled_products, u, all_v, params=(scale,), tile_size=self.tile_size)
            col_lse = tiled_logsumexp(_scaled_products, v, all_u, params=(scale,), tile_size=self.tile_size)
        matched = scale * (u * v).sum(dim=1)
        part = ((row_lse - matched).sum() + (col_lse - matched).sum()) / (2 * gathered.shape[0])
        return gather.sum_over_processes(part) + world_size * (part - part.detach())

    def get_logits(self, image_embeddings, text_embeddings):
        """``(N, M)`` scaled cosine similarities of the local rows (no gathering)."""
        check_paired_embeddings("CLIPLoss", image_embeddings, text_embeddings, same_rows=False)
        compute_dtype = accumulation_dtype(image_embeddings.dtype)
        with torch.autocast(device_type=image_embeddings.device.type, enabled=False):
            cosines = self._cosines(image_embeddings, text_embeddings, compute_dtype)
            return self._clamped_scale(compute_dtype) * cosines

    def _clamped_scale(self, dtype):
        logit_scale = self.logit_scale.to(dtype)
        return torch.exp(torch.clamp(logit_scale, max=math.log(self.max_logit_scale)))

    @staticmethod
    def _cosines(image_embeddings, text_embeddings, dtype):
        u = F.normalize(image_embeddings.to(dtype), dim=1)
        v = F.normalize(text_embeddings.to(dtype), dim=1)
        return u @ v.t()


def check_paired_embeddings(owner, image_embeddings, text_embeddings, same_rows=True):
    """Two finite 2-D float tensors of one width and dtype (and, with ``same_rows``, one row of
    each per pair)."""
    check_embeddings(image_embeddings, "image_embeddings")
    check_embeddings(text_embeddings, "text_embeddings")
    if same_rows and image_embeddings.shape != text_embeddings.shape:
        raise ValueError(
            f"{owner} needs one text embedding per image embedding (row i of each is a pair): "
            f"image_embeddings has shape {tuple(image_embeddings.shape)}, text_embeddings "
            f"{tuple(text_embeddings.shape)}"
        )
    if image_embeddings.shape[1] != text_embeddings.shape[1]:
        raise ValueError(
            "image_embeddings and text_embeddings must have the same width, got "
            f"{image_embeddings.shape[1]} and {text_embeddings.shape[1]}"
        )
    if image_embeddings.dtype != text_embeddings.dtype:
        raise TypeError(
            "image_embeddings and text_embeddings must have the same dtype, got "
            f"{image_embeddings.dtype} and {text_embeddings.dtype}"
        )


def _symmetric_cross_entropy(logits):
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def _tiled_symmetric_cross_entropy(u, v, scale, tile_size):
    """``_symmetric_cross_entropy(scale * u @ v.T)`` without the matrix: the targets are the
    diagonal, ``CE = mean_i(lse_i - logits_ii)`` for the rows and likewise for the columns."""

    row_lse = tiled_logsumexp(_scaled_products, u, v, params=(scale,), tile_size=tile_size)
    col_lse = tiled_logsumexp(_scaled_products, v, u, params=(scale,), tile_size=tile_size)
    matched = scale * (u * v).sum(dim=1)
    return ((row_lse - matched).mean() + (col_lse - matched).mean()) / 2


def _scaled_products(query_rows, ref, scale):
    return scale * (query_rows @ ref.t())


def _gather_keeping_local_graph(image_embeddings, text_embeddings):
    """Every process's rows in rank order; only this process's rows carry gradients."""
    local = torch.cat([image_embeddings, text_embeddings], dim=1)  # one collective for both
    gathered = gather.gather_rows_keeping_local_graph(local)
    width = image_embeddings.shape[1]
    return gathered[:, :width], gathered[:, width:]
