"""The training loop shared by every trainer: batches, losses, optimizers, schedulers, hooks,
and (our addition) mixed precision, a progress bar and crash-safe checkpoints with exact resume."""

import os

import torch
import tqdm

from ..training import checkpoint as ckpt
from ..training.dataloaders import get_train_dataloader
from ..training.key_checker import KeyChecker, KeyCheckerDict
from ..training.loss_tracker import LossTracker
from ..training.saved_models import regex_replace
from ..training.seeding import seed_everything
from ..utils import common_functions as c_f
from ..utils.errors import ArgumentError
from . import distributed_training as ddp

CHECKPOINT_FORMAT = 1


class BaseTrainer:
    """Runs ``train(start_epoch, num_epochs)``: each iteration takes a batch, computes the losses
    defined by the subclass's ``calculate_loss``, weights and sums them into ``total_loss``,
    back-propagates, clips gradients and steps the optimizers; schedulers and hooks run at
    iteration and epoch ends. The arguments are those of pytorch-metric-learning's trainers.
    A ``sampler`` that is a ``torch.utils.data.BatchSampler`` (``HierarchicalSampler``, say)
    decides whole batches: it becomes the ``DataLoader``'s ``batch_sampler`` and ``batch_size``
    is not used (``get_train_dataloader``).

    Keyword-only additions:

    * ``use_amp``: run the forward pass under ``torch.autocast`` (float16 on CUDA with a
      ``GradScaler``, bfloat16 on CPU, where no scaler is needed).
    * ``progress_bar``: a tqdm bar per epoch showing the running mean of ``total_loss``.
    * ``seed``: when given, a fresh ``train()`` seeds python, numpy and torch with it, and data pass
      ``p`` (1, 2, ...) draws its order from ``seed + p`` (the default shuffling's generator and the
      sampler's ``set_epoch`` when it has one), independent of whatever else used the RNGs.
    * ``checkpoint_folder``: write a checkpoint atomically at the end of every epoch (after the
      end-of-epoch hook) holding everything needed to continue exactly (see ``checkpoint_state``).
    * ``resume``: ``train()`` restores the newest readable checkpoint of ``checkpoint_folder`` and
      continues after its last completed epoch; the final weights equal those of an uninterrupted
      run. Without any checkpoint in the folder training starts from ``start_epoch``.
    * ``checkpoint_keep``: how many checkpoints to keep (older ones are deleted).
    * ``distributed``: train as one process of a ``torch.distributed`` group (default: whenever a
      group of more than one process is initialised, as under torchrun). ``batch_size`` is then
      each process's share of the global batch; see ``trainers/distributed_training.py`` for what
      is wrapped and why the result equals single-process training on the global batch. Without a
      sampler, each process reads a disjoint share of every epoch (``DistributedSampler``).
    """

    def __init__(
        self,
        models,
        optimizers,
        batch_size,
        loss_funcs,
        dataset,
        mining_funcs=None,
        iterations_per_epoch=None,
        data_device=None,
        dtype=None,
        loss_weights=None,
        sampler=None,
        collate_fn=None,
        lr_schedulers=None,
        gradient_clippers=None,
        freeze_these=(),
        freeze_trunk_batchnorm=False,
        label_hierarchy_level=0,
        dataloader_num_workers=2,
        data_and_label_getter=None,
        dataset_labels=None,
        set_min_label_to_zero=False,
        end_of_iteration_hook=None,
        end_of_epoch_hook=None,
        *,
        use_amp=False,
        progress_bar=True,
        seed=None,
        checkpoint_folder=None,
        resume=False,
        checkpoint_keep=2,
        distributed=None,
    ):
        self.models = models
        self.optimizers = optimizers
        self.batch_size = batch_size
        self.loss_funcs = loss_funcs
        self.dataset = dataset
        self.mining_funcs = {} if mining_funcs is None else mining_funcs
        self.iterations_per_epoch = iterations_per_epoch
        self.data_device = data_device
        self.dtype = dtype
        self.sampler = sampler
        self.collate_fn = collate_fn
        self.lr_schedulers = lr_schedulers
        self.gradient_clippers = gradient_clippers
        self.freeze_these = freeze_these
        self.freeze_trunk_batchnorm = freeze_trunk_batchnorm
        self.label_hierarchy_level = label_hierarchy_level
        self.dataloader_num_workers = dataloader_num_workers
        self.loss_weights = loss_weights
        self.data_and_label_getter = data_and_label_getter
        self.dataset_labels = dataset_labels
        self.set_min_label_to_zero = set_min_label_to_zero
        self.end_of_iteration_hook = end_of_iteration_hook
        self.end_of_epoch_hook = end_of_epoch_hook
        self.use_amp = use_amp
        self.progress_bar = progress_bar
        self.seed = seed
        self.checkpoint_folder = checkpoint_folder
        self.resume = resume
        self.checkpoint_keep = checkpoint_keep
        self.distributed = ddp.active() if distributed is None else bool(distributed)
        self._check_extra_arguments()
        self.loss_names = list(self.loss_funcs.keys())
        self.custom_setup()
        self.verify_dict_keys()
        self.initialize_models()
        self.initialize_data_device()
        if self.distributed:
            # Copies, so that the caller's dicts keep their own (unwrapped) objects.
            self.models, self.loss_funcs = dict(self.models), dict(self.loss_funcs)
            self.mining_funcs = dict(self.mining_funcs)
            ddp.wrap_for_distributed(self)
        self.initialize_label_mapper()
        self.initialize_loss_tracker()
        self.initialize_loss_weights()
        self.initialize_data_and_label_getter()
        self.initialize_hooks()
        self.initialize_lr_schedulers()
        self.initialize_amp()
        self.epoch = 0
        self.iteration = 0
        self._has_trained = False
        self.dataloader = None
        self.dataloader_iter = None
        self._data_generator = None
        self._pass_index = 0
        self._batches_in_pass = 0
        self._pass_rng_states = None
        self._pass_sampler_state = None

    def _check_extra_arguments(self):
        if self.distributed and not ddp.active():
            raise ArgumentError(
                "distributed=True needs an initialised torch.distributed process group of more "
                "than one process (for example, launch with torchrun)"
            )
        if self.resume and self.checkpoint_folder is None:
            raise ArgumentError("resume=True needs checkpoint_folder (the folder to resume from)")
        keep = self.checkpoint_keep
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ArgumentError(f"checkpoint_keep must be an int >= 1, got {keep!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ArgumentError(f"seed must be an int or None, got {self.seed!r}")

    # ------------------------------------------------------------------------------------------
    # hooks for subclasses

    def custom_setup(self):
        pass

    def calculate_loss(self, curr_batch):
        raise NotImplementedError

    def update_loss_weights(self):
        pass

    def modify_schema(self):
        pass

    # ------------------------------------------------------------------------------------------
    # the loop

    def train(self, start_epoch=1, num_epochs=1):
        self.initialize_dataloader()
        restored = self._maybe_resume() if self.resume else None
        if restored is not None:
            if restored.get("stopped_early", False):
                c_f.LOGGER.info(
                    f"The checkpointed run stopped early after epoch {restored['epoch']}; "
                    "nothing left to train"
                )
                return
            start_epoch = restored["epoch"] + 1
            c_f.LOGGER.info(f"Resuming after epoch {restored['epoch']}")
        else:
            self._fresh_start()
        for self.epoch in range(start_epoch, num_epochs + 1):
            self.set_to_train()
            c_f.LOGGER.info(f"TRAINING EPOCH {self.epoch}")
            pbar = tqdm.tqdm(
                range(self.iterations_per_epoch),
                disable=not self.progress_bar or not ddp.is_main_process(),
                desc=f"epoch {self.epoch}",
            )
            running = 0.0
            for self.iteration in pbar:
                self.forward_and_backward()
                self.end_of_iteration_hook(self)
                if self.progress_bar:
                    running = running + _detached(self.losses["total_loss"])
                    if self.iteration % 10 == 0 or self.iteration == self.iterations_per_epoch - 1:
                        pbar.set_postfix(loss=f"{float(running) / (self.iteration + 1):.5f}")
                self.step_lr_schedulers(end_of_epoch=False)
            pbar.close()
            self.step_lr_schedulers(end_of_epoch=True)
            self.zero_losses()
            stop = self.end_of_epoch_hook(self) is False
            if self.checkpoint_folder is not None:
                if ddp.is_main_process():
                    self.save_checkpoint(stopped_early=stop)
                ddp.barrier()  # nobody resumes from a checkpoint that is still being written
            if stop:
                break

    def forward_and_backward(self):
        self.zero_losses()
        self.zero_grad()
        self.update_loss_weights()
        with self._autocast():
            self.calculate_loss(self.get_batch())
        self.loss_tracker.update(self.loss_weights)
        self.backward()
        self.clip_gradients()
        self.step_optimizers()
        self.grad_scaler.update()

    def zero_losses(self):
        for k in self.losses:
            self.losses[k] = 0

    def zero_grad(self):
        for v in self.models.values():
            v.zero_grad()
        for v in self.optimizers.values():
            v.zero_grad()

    def get_batch(self):
        data, labels = self.data_and_label_getter(self.next_batch())
        labels = c_f.process_label(labels, self.label_hierarchy_level, self.label_mapper)
        return self.maybe_do_batch_mining(data, labels)

    def compute_embeddings(self, data):
        return self.get_final_embeddings(self.get_trunk_output(data))

    def get_final_embeddings(self, base_output):
        return self.models["embedder"](base_output)

    def get_trunk_output(self, data):
        data = c_f.to_device(data, device=self.data_device, dtype=self.dtype)
        return self.models["trunk"](data)

    def maybe_mine_embeddings(self, embeddings, labels):
        if "tuple_miner" in self.mining_funcs:
            return self.mining_funcs["tuple_miner"](embeddings, labels)
        return None

    def maybe_do_batch_mining(self, data, labels):
        if "subset_batch_miner" in self.mining_funcs:
            with torch.no_grad():
                self.set_to_eval()
                embeddings = self.compute_embeddings(data)
                idx = self.mining_funcs["subset_batch_miner"](embeddings, labels)
                self.set_to_train()
                data, labels = data[idx], labels[idx]
        return data, labels

    def backward(self):
        total = self.losses["total_loss"]
        if not torch.is_tensor(total):
            raise RuntimeError(
                "total_loss is not a tensor, so there is nothing to back-propagate: every loss "
                f"was skipped or had weight 0 (loss_weights={self.loss_weights})"
            )
        self.grad_scaler.scale(total).backward()
        if self.distributed:
            ddp.correct_loss_parameter_grads(self)

    def get_global_iteration(self):
        return self.iteration + self.iterations_per_epoch * (self.epoch - 1)

    def step_lr_schedulers(self, end_of_epoch=False):
        if self.lr_schedulers is None:
            return
        suffix = self.allowed_lr_scheduler_key_suffixes["epoch" if end_of_epoch else "iteration"]
        for k, v in self.lr_schedulers.items():
            if k.endswith(suffix):
                v.step()

    def step_lr_plateau_schedulers(self, validation_info):
        if self.lr_schedulers is None:
            return
        for k, v in self.lr_schedulers.items():
            if k.endswith(self.allowed_lr_scheduler_key_suffixes["plateau"]):
                v.step(validation_info)

    def step_optimizers(self):
        for k, v in self.optimizers.items():
            if regex_replace("_optimizer$", "", k) not in self.freeze_these:
                self.step_optimizer(v)

    def step_optimizer(self, optimizer):
        """``optimizer.step()``, through the grad scaler when mixed precision scales the loss."""
        if not self.grad_scaler.is_enabled():
            optimizer.step()
        elif _has_grads(optimizer):
            # The scaler refuses optimizers whose parameters got no gradient this iteration.
            self.grad_scaler.step(optimizer)

    def clip_gradients(self):
        if self.gradient_clippers is None:
            return
        if self.grad_scaler.is_enabled():
            # Clippers must see true gradient magnitudes, not loss-scaled ones.
            for optimizer in self.optimizers.values():
                if _has_grads(optimizer):
                    self.grad_scaler.unscale_(optimizer)
        for v in self.gradient_clippers.values():
            v()

    def maybe_freeze_trunk_batchnorm(self):
        if self.freeze_trunk_batchnorm:
            self.models["trunk"].apply(c_f.set_layers_to_eval("BatchNorm"))

    def trainable_attributes(self):
        return [self.models, self.loss_funcs]

    def set_to_train(self):
        for T in self.trainable_attributes():
            for k, v in T.items():
                if k in self.freeze_these:
                    c_f.set_requires_grad(v, requires_grad=False)
                    v.eval()
                else:
                    v.train()
        self.maybe_freeze_trunk_batchnorm()

    def set_to_eval(self):
        for T in self.trainable_attributes():
            for v in T.values():
                v.eval()

    # ------------------------------------------------------------------------------------------
    # initialization

    def initialize_dataloader(self):
        c_f.LOGGER.info("Initializing dataloader")
        if self.distributed and self.sampler is None:
            self.sampler = torch.utils.data.DistributedSampler(
                self.dataset, shuffle=True, seed=0 if self.seed is None else self.seed, drop_last=True
            )
        self.dataloader = get_train_dataloader(
            self.dataset, self.batch_size, self.sampler, self.dataloader_num_workers, self.collate_fn
        )
        if self.seed is not None:
            self._data_generator = torch.Generator()
            # The default shuffling and the workers' base seed both draw from this generator.
            self.dataloader.generator = self._data_generator
            if isinstance(self.dataloader.sampler, torch.utils.data.RandomSampler):
                self.dataloader.sampler.generator = self._data_generator
        if not self.iterations_per_epoch:
            self.iterations_per_epoch = len(self.dataloader)
        self.dataloader_iter = None
        self._pass_index = 0
        self._batches_in_pass = 0

    def initialize_data_device(self):
        if self.data_device is None:
            self.data_device = c_f.use_cuda_if_available()

    def initialize_label_mapper(self):
        self.label_mapper = c_f.LabelMapper(self.set_min_label_to_zero, self.dataset_labels).map

    def initialize_loss_tracker(self):
        self.loss_tracker = LossTracker(self.loss_names)
        self.losses = self.loss_tracker.losses

    def initialize_data_and_label_getter(self):
        if self.data_and_label_getter is None:
            self.data_and_label_getter = c_f.return_input

    def initialize_loss_weights(self):
        if self.loss_weights is None:
            self.loss_weights = {k: 1 for k in self.loss_names}

    def initialize_hooks(self):
        if self.end_of_iteration_hook is None:
            self.end_of_iteration_hook = c_f.return_input
        if self.end_of_epoch_hook is None:
            self.end_of_epoch_hook = c_f.return_input

    def initialize_lr_schedulers(self):
        if self.lr_schedulers is None:
            self.lr_schedulers = {}

    def initialize_models(self):
        if "embedder" not in self.models:
            self.models["embedder"] = torch.nn.Identity()

    def initialize_amp(self):
        device_type = torch.device(self.data_device).type
        self._amp_device_type = device_type
        # float16 needs loss scaling to keep small gradients from flushing to zero; bfloat16 has
        # float32's exponent range and does not.
        self._amp_dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
        enabled = bool(self.use_amp) and device_type == "cuda"
        if hasattr(torch.amp, "GradScaler"):
            self.grad_scaler = torch.amp.GradScaler(device_type, enabled=enabled)
        else:  # torch < 2.3
            self.grad_scaler = torch.cuda.amp.GradScaler(enabled=enabled)

    def _autocast(self):
        return torch.autocast(self._amp_device_type, dtype=self._amp_dtype, enabled=bool(self.use_amp))

    # ------------------------------------------------------------------------------------------
    # key checking

    def verify_dict_keys(self):
        self.allowed_lr_scheduler_key_suffixes = {
            "iteration": "_scheduler_by_iteration",
            "epoch": "_scheduler_by_epoch",
            "plateau": "_scheduler_by_plateau",
        }
        self.set_schema()
        self.schema.verify(self)
        self.verify_freeze_these_keys()

    def set_schema(self):
        suffixes = self.allowed_lr_scheduler_key_suffixes
        self.schema = KeyCheckerDict(
            {
                "models": KeyChecker(["trunk", "embedder"], essential=["trunk"]),
                "loss_funcs": KeyChecker(["metric_loss"]),
                "mining_funcs": KeyChecker(
                    ["subset_batch_miner", "tuple_miner"], warn_empty=False, important=[]
                ),
                "loss_weights": KeyChecker(self.loss_names, warn_empty=False, essential=self.loss_names),
                "optimizers": KeyChecker(
                    lambda s, d: c_f.append_map(d["models"].keys + d["loss_funcs"].keys, "_optimizer"),
                    important=c_f.append_map(self.models.keys(), "_optimizer"),
                ),
                "lr_schedulers": KeyChecker(
                    lambda s, d: [
                        x + y for y in suffixes.values() for x in d["models"].keys + d["loss_funcs"].keys
                    ],
                    warn_empty=False,
                    important=[],
                ),
                "gradient_clippers": KeyChecker(
                    lambda s, d: c_f.append_map(d["models"].keys + d["loss_funcs"].keys, "_grad_clipper"),
                    warn_empty=False,
                    important=[],
                ),
            }
        )
        self.modify_schema()

    def verify_freeze_these_keys(self):
        allowed_keys = self.schema["models"].keys + self.schema["loss_funcs"].keys
        for k in self.freeze_these:
            if k not in allowed_keys:
                raise ArgumentError(
                    f"freeze_these keys must be one of {', '.join(allowed_keys)}, got {k!r}"
                )
            if k + "_optimizer" in self.optimizers:
                c_f.LOGGER.warning(
                    f"You have passed in an optimizer for {k}, but are freezing its parameters."
                )

    # ------------------------------------------------------------------------------------------
    # data passes: every pass over the data is reproducible, so a resumed run sees the same batches

    def next_batch(self):
        """The next collated batch; starts a new pass over the data when the current one ends."""
        if self.dataloader_iter is None:
            self._start_pass()
        try:
            batch = next(self.dataloader_iter)
        except StopIteration:
            self._start_pass()
            batch = next(self.dataloader_iter)
        self._batches_in_pass += 1
        return batch

    def _start_pass(self):
        self._pass_index += 1
        self._batches_in_pass = 0
        if self.checkpoint_folder is not None:
            # The order of a pass may come from the global RNGs (sampler, default shuffling) and
            # from a sampler's own state (MPerClassSampler's class order): keep both as they are
            # at the pass start so a resume can rebuild a pass that was in progress.
            self._pass_rng_states = ckpt.get_rng_states()
            self._pass_sampler_state = _sampler_state(self.sampler)
        self._seed_pass()
        self.dataloader_iter = iter(self.dataloader)

    def _seed_pass(self):
        if self.seed is None:
            return
        self._data_generator.manual_seed(self.seed + self._pass_index)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self._pass_index)

    def _fresh_start(self):
        # Only the first train() of a trainer starts a run; a later call continues the same run
        # (same checkpoints, RNGs left as they are).
        first_call = not self._has_trained
        self._has_trained = True
        if first_call and self.seed is not None:
            seed_everything(self.seed)
        if first_call and self.checkpoint_folder is not None and ddp.is_main_process():
            stale = ckpt.list_checkpoints(self.checkpoint_folder)
            if stale:
                c_f.LOGGER.warning(
                    f"Not resuming: deleting {len(stale)} old checkpoint(s) in {self.checkpoint_folder}"
                )
                for _, path in stale:
                    _remove(path)
        ddp.barrier()
        self._start_pass()

    # ------------------------------------------------------------------------------------------
    # checkpoints

    def checkpoint_state(self, stopped_early=False):
        """Everything a resumed run needs, as plain containers of tensors and numbers."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "iteration": self.iteration,
            "iterations_per_epoch": self.iterations_per_epoch,
            "global_iteration": self.get_global_iteration(),
            "stopped_early": stopped_early,
            "models": {k: _unwrap(v).state_dict() for k, v in self.models.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "lr_schedulers": {k: v.state_dict() for k, v in self.lr_schedulers.items()},
            "loss_funcs": _state_dicts(self.loss_funcs),
            "mining_funcs": _state_dicts(self.mining_funcs),
            "loss_weights": dict(self.loss_weights),
            "grad_scaler": self.grad_scaler.state_dict(),
            "data": {
                "pass_index": self._pass_index,
                "batches_in_pass": self._batches_in_pass,
                "pass_rng_states": self._pass_rng_states,
                "pass_sampler_state": self._pass_sampler_state,
            },
            "rng": ckpt.get_rng_states(),
        }
        sampler_state = _sampler_state(self.sampler)
        if sampler_state is not None:
            state["sampler"] = sampler_state
        return state

    def save_checkpoint(self, stopped_early=False):
        return ckpt.save_checkpoint(
            self.checkpoint_folder,
            self.checkpoint_state(stopped_early),
            self.epoch,
            keep=self.checkpoint_keep,
        )

    def load_checkpoint_state(self, state):
        """Restore models, optimizers, schedulers, losses, miners, sampler, scaler and counters."""
        for k, v in self.models.items():
            _load_into(_unwrap(v), state["models"], k, "models")
        for k, v in self.optimizers.items():
            _load_into(v, state["optimizers"], k, "optimizers")
        for k, v in self.lr_schedulers.items():
            _load_into(v, state["lr_schedulers"], k, "lr_schedulers")
        for k, v in self.loss_funcs.items():
            if hasattr(v, "load_state_dict"):
                _load_into(v, state["loss_funcs"], k, "loss_funcs")
        for k, v in self.mining_funcs.items():
            if hasattr(_unwrap(v), "load_state_dict"):
                _load_into(_unwrap(v), state["mining_funcs"], k, "mining_funcs")
        if "sampler" in state and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(state["sampler"])
        self.loss_weights.update(state.get("loss_weights", {}))
        if state.get("grad_scaler") and self.grad_scaler.is_enabled():
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        saved_ipe = state.get("iterations_per_epoch")
        if saved_ipe is not None and saved_ipe != self.iterations_per_epoch:
            c_f.LOGGER.warning(
                f"The checkpoint was written with iterations_per_epoch={saved_ipe}, this run uses "
                f"{self.iterations_per_epoch}; the resumed run will differ from an uninterrupted one"
            )
        self.epoch = state["epoch"]
        self.iteration = state["iteration"]

    def _maybe_resume(self):
        if not ckpt.list_checkpoints(self.checkpoint_folder):
            c_f.LOGGER.info(f"resume=True but {self.checkpoint_folder} holds no checkpoint: starting afresh")
            return None
        state, path = ckpt.load_checkpoint(self.checkpoint_folder, map_location="cpu")
        c_f.LOGGER.info(f"Loading checkpoint {path}")
        self.load_checkpoint_state(state)
        self._restore_pass(state["data"])
        ckpt.set_rng_states(state["rng"])
        return state

    def _restore_pass(self, data_state):
        """Rebuild the data pass that was in progress when the checkpoint was written."""
        consumed = data_state["batches_in_pass"]
        self._pass_index = data_state["pass_index"] - 1
        if consumed == 0 or data_state["pass_rng_states"] is None or self._pass_finished(consumed):
            self._pass_index += 1
            self._batches_in_pass = consumed
            self.dataloader_iter = iter(())  # the next batch starts a new pass
            return
        ckpt.set_rng_states(data_state["pass_rng_states"])
        if data_state.get("pass_sampler_state") is not None and hasattr(self.sampler, "load_state_dict"):
            self.sampler.load_state_dict(data_state["pass_sampler_state"])
        self._start_pass()
        for _ in range(consumed):
            next(self.dataloader_iter)
        self._batches_in_pass = consumed

    def _pass_finished(self, consumed):
        try:
            return consumed >= len(self.dataloader)
        except TypeError:  # a sampler without len(): only replaying the pass can tell
            return False


def _sampler_state(sampler):
    """The sampler's own state (``state_dict()``), or None for a sampler without one."""
    return sampler.state_dict() if hasattr(sampler, "state_dict") else None


def _detached(x):
    return x.detach() if torch.is_tensor(x) else x


def _has_grads(optimizer):
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


_unwrap = ddp.unwrap


def _state_dicts(objects):
    return {k: _unwrap(v).state_dict() for k, v in objects.items() if hasattr(_unwrap(v), "state_dict")}


def _load_into(obj, saved, key, group):
    if key not in saved:
        c_f.LOGGER.warning(f"The checkpoint has no {group}[{key!r}]; it keeps its current state")
        return
    obj.load_state_dict(saved[key])


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
