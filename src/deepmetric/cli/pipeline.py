"""Train, evaluate and search: what the ``deepmetric`` subcommands do.

A run trains with the library's ``MetricLossOnly`` trainer. After every epoch a hook measures
retrieval on the validation items (set aside from the training classes) and writes a row of
``history.csv``; the weights with the best validation score so far are kept in ``model.pt``, and
training stops early after ``evaluation.patience`` epochs without a better score. Then the trainer
writes a checkpoint atomically, so an interrupted run resumes from its last complete epoch: the
trainer seeds each epoch's data order and the checkpoint holds every random-number state, so a
resumed run ends with the same weights as an uninterrupted one.

At the end the selected weights are evaluated on each section (``zero_shot``: unseen classes;
``held_out``: unseen items of the training classes), next to a baseline that searches the raw
inputs. Nothing is written before the whole run has been built, so a config error leaves no
folder behind.
"""

import functools
import os
import shutil
import time

import numpy as np
import torch

from ..training.seeding import seed_everything
from ..utils import common_functions as c_f
from . import components, report, verification
from .config import ConfigError, component, dump_config, load_config, one_line
from .data import build_data, first_class, read_queries, shares_a_label
from .distributed import (
    GlobalBatches,
    is_main_process,
    join_process_group,
    per_process_batch_size,
    world_and_rank,
)

SECTIONS = ("zero_shot", "held_out")
# What `train --overwrite` deletes: the files a run writes, never anything else in the folder.
RUN_FILES = (
    "config.yaml",
    "checkpoints",
    "history.csv",
    "model.pt",
    "metrics.json",
    "evaluation.json",
    "report.md",
    "threshold.json",
    "tensorboard",
    "zero_shot",
    "held_out",
)


def embed(model, dataset, batch_size=512, device="cpu"):
    """Embeddings of every item of ``dataset`` (model in eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    chunks = []
    with torch.no_grad():
        for x, _ in loader:
            chunks.append(model(x.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(chunks)


def retrieval_metrics(embeddings, labels, config):
    """The configured metrics, each query searched against the rest of its own set."""
    from ..evaluation.accuracy_calculator import AccuracyCalculator

    evaluation = config["evaluation"]
    postprocess = components.build_rerank(config)
    labels = torch.as_tensor(np.asarray(labels))
    # multi-hot labels: a neighbour is relevant when it shares a class with the query
    relation = {"label_comparison_fn": shares_a_label} if labels.dim() == 2 else {}
    try:
        calculator = AccuracyCalculator(
            include=tuple(evaluation["metrics"]), k=evaluation["k"], postprocess=postprocess, **relation
        )
    except (ValueError, AssertionError) as err:
        raise ConfigError("evaluation.metrics", one_line(err)) from None
    result = calculator.get_accuracy(embeddings, labels, embeddings, labels, ref_includes_query=True)
    ordered = [m for m in evaluation["metrics"] if m in result] + [
        m for m in result if m not in evaluation["metrics"]
    ]
    return {name: float(result[name]) for name in ordered}  # in the config's order


def _keeps_callers_library_generator(command):
    """A run seeds a private numpy generator for the samplers (``c_f.NUMPY_RANDOM``); a caller
    that runs a command in-process gets its own generator back afterwards."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        saved = c_f.NUMPY_RANDOM
        try:
            return command(*args, **kwargs)
        finally:
            c_f.NUMPY_RANDOM = saved

    return run


class Run:
    """Everything a config describes, built and checked before any file is written."""

    def __init__(self, config, device, for_training=True):
        self.config = config
        self.device = device
        self.data = build_data(config)
        seed_everything(config["seed"], library_generator=True)
        self.model = components.build_model(config, self.data.input_shape, load_weights=for_training)
        self.model = self.model.to(device)
        self.embedding_size = components.embedding_size(self.model, self.data.train[0][0], device)
        if not for_training:
            return
        self.loss = components.build_loss(
            config, self.data.num_classes, self.embedding_size, multi_label=self.data.multi_label
        ).to(device)
        self.miner = components.build_miner(config)
        params = list(self.model.parameters()) + list(self.loss.parameters())
        self.optimizer = components.build_optimizer(config, params)
        self.scheduler = components.build_scheduler(config, self.optimizer)
        self.global_batch_size = config["batch_size"]
        self.batch_size = per_process_batch_size(self.global_batch_size)
        if len(self.data.train) < self.global_batch_size:
            raise ConfigError(
                "batch_size",
                f"is {self.global_batch_size}, more than the {len(self.data.train)} items left for training",
            )
        world, rank = world_and_rank()
        built = components.build_sampler(
            config, self.data.train_labels, self.data.train_super_labels, self.global_batch_size
        )
        self.sampler = None
        if built is not None:
            self.sampler = GlobalBatches(built, self.global_batch_size, config["seed"], world, rank)
            if len(self.sampler) == 0:
                raise ConfigError("sampler", "draws no complete batch of batch_size items per epoch")

    def trainer(self, folder, resume, end_of_epoch_hook, end_of_iteration_hook, progress):
        """A MetricLossOnly trainer that checkpoints every epoch and can resume."""
        schedulers = {}
        if self.scheduler is not None:
            schedulers["trunk_scheduler_by_epoch"] = self.scheduler
        mining = {"tuple_miner": self.miner} if self.miner is not None else {}
        return _trainer_class()(
            models={"trunk": self.model},
            optimizers={"trunk_optimizer": self.optimizer},
            batch_size=self.batch_size,
            loss_funcs={"metric_loss": self.loss},
            dataset=self.data.train,
            mining_funcs=mining,
            sampler=self.sampler,
            lr_schedulers=schedulers,
            data_device=self.device,
            dataloader_num_workers=self.config["num_workers"],
            end_of_epoch_hook=end_of_epoch_hook,
            end_of_iteration_hook=end_of_iteration_hook,
            progress_bar=progress,
            seed=self.config["seed"],
            checkpoint_folder=os.path.join(folder, "checkpoints"),
            resume=resume,
        )

    def load_selected_model(self, folder):
        path = os.path.join(folder, "model.pt")
        if not os.path.isfile(path):
            raise ConfigError(
                None,
                f"{folder!r} holds no trained model yet (no epoch finished); continue the run with "
                f"'deepmetric train --output {folder} --resume'",
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state)
        except Exception as err:  # a truncated file, or a model.pt of another config
            raise ConfigError(
                None, f"{path!r} cannot be loaded into the run's model: {one_line(err)}"
            ) from None

    def embeddings(self, items):
        return embed(self.model, items, device=self.device)


def _trainer_class():
    from ..trainers import MetricLossOnly
    from ..training.key_checker import KeyChecker

    class CommandTrainer(MetricLossOnly):
        """MetricLossOnly for a model that outputs the embeddings itself: no embedder expected
        (the trainer would warn on every run that it is missing)."""

        def modify_schema(self):
            self.schema.children["models"] = KeyChecker(
                ["trunk", "embedder"], essential=["trunk"], important=[]
            )

    return CommandTrainer


# ----------------------------------------------------------------------------------------------
# train


def folder_state(output):
    """``"empty"`` (absent or empty), ``"run"`` (holds a config.yaml) or ``"other"``."""
    if not os.path.isdir(output):
        if os.path.exists(output):
            raise ConfigError(None, f"--output {output!r} is a file, not a folder")
        return "empty"
    if os.path.isfile(os.path.join(output, "config.yaml")):
        return "run"
    return "other" if os.listdir(output) else "empty"


@_keeps_callers_library_generator
def train_command(
    config_path,
    output,
    resume=False,
    seed=None,
    epochs=None,
    overwrite=False,
    quiet=False,
    progress=False,
    log=print,
):
    """``deepmetric train``: returns the dict written to metrics.json."""
    overrides = {k: v for k, v in (("seed", seed), ("epochs", epochs)) if v is not None}
    resolved_path = os.path.join(output, "config.yaml")
    state = folder_state(output)
    if resume:
        if config_path is not None:
            raise ConfigError(
                None, "--resume continues a run with its own config.yaml; drop the config argument"
            )
        if state != "run":
            raise ConfigError(None, f"--resume: {resolved_path!r} does not exist; nothing to resume")
        config = load_config(resolved_path, overrides)
    else:
        if state == "run" and not overwrite:
            raise ConfigError(
                None,
                f"--output {output!r} already holds a run ({_run_status(output)}); pass "
                "--resume to continue it or --overwrite to replace it",
            )
        if state == "other":
            raise ConfigError(
                None, f"--output {output!r} is a folder with other files in it; choose a new or empty folder"
            )
        config = load_config(config_path, overrides)
    device = join_process_group(components.check_device(config))
    run = Run(config, device)
    main = is_main_process()
    _barrier()  # every process has looked at the folder before rank 0 changes it
    if main:
        if overwrite and not resume:
            _remove_run_files(output)
        os.makedirs(output, exist_ok=True)
        dump_config(config, resolved_path)
        world, _ = world_and_rank()
        if world > 1:
            log(
                f"batch_size {run.global_batch_size} is the global batch: {world} processes x "
                f"{run.batch_size} items each"
            )
    _barrier()
    started = time.time()
    selection = _train(run, output, resume, quiet, progress, log if not quiet else _silent)
    results = _evaluate_sections(run, output, selection, write=main)
    results["seconds"] = round(time.time() - started, 1)
    if main:
        report.write_json(os.path.join(output, "metrics.json"), results)
        _write_report(output, config, run, results)
        log(summary(results, config))
        log(f"report: {os.path.join(output, 'report.md')}")
    return results


def _silent(*args, **kwargs):
    pass


def _barrier():
    from ..trainers.distributed_training import barrier

    barrier()


def _run_status(output):
    if os.path.isfile(os.path.join(output, "metrics.json")):
        return "finished"
    epochs = report.history_epochs(os.path.join(output, "history.csv"))
    return f"interrupted after epoch {epochs}" if epochs else "interrupted before its first epoch ended"


def _remove_run_files(output):
    for name in RUN_FILES:
        path = os.path.join(output, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def _resume_point(folder, epochs, log):
    """The epoch a resumed run continues after (0: none), said out loud."""
    from ..training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint

    checkpoints = os.path.join(folder, "checkpoints")
    if not list_checkpoints(checkpoints):
        log(f"resuming {folder}: no checkpoint yet, starting from epoch 1")
        return 0
    try:
        state, path = load_checkpoint(checkpoints, map_location="cpu")
    except CheckpointError as err:
        raise ConfigError(None, f"--resume: {one_line(err)}") from None
    done = int(state["epoch"])
    if state.get("stopped_early") or done >= epochs:
        why = "stopped early" if state.get("stopped_early") else "finished"
        log(f"resuming {folder}: training {why} after epoch {done} ({path}); evaluating the selected model")
    else:
        log(f"resuming {folder} after epoch {done} of {epochs} from {path}")
    return done


def _train(run, folder, resume, quiet, progress, log):
    """Train with validation-based model selection; returns the selection record."""
    config = run.config
    main = is_main_process()
    evaluation = config["evaluation"]
    select = evaluation["select"]
    history = os.path.join(folder, "history.csv")
    done = _resume_point(folder, config["epochs"], log if main else _silent) if resume else 0
    previous = [r for r in report.read_history(history) if int(r["epoch"]) <= done]
    column = f"validation_{select}"
    best = {"epoch": 0, "value": None}
    for row in previous:
        if row.get(column) not in (None, "") and (
            best["value"] is None or float(row[column]) > best["value"]
        ):
            best = {"epoch": int(row["epoch"]), "value": float(row[column])}
    if previous and run.data.validation is None:
        best = {"epoch": int(previous[-1]["epoch"]), "value": None}
    if main and not resume and os.path.exists(history):
        os.remove(history)
    epoch_losses, epoch_lrs = [], []
    board = {}
    last = {"epoch": done}
    projector_items = run.data.sections.get("held_out") or run.data.validation

    def tensorboard(trainer):
        if "log" not in board:
            purge = done * trainer.iterations_per_epoch + 1 if resume else None
            board["log"] = report.TensorBoardLog(folder if main else None, purge_step=purge)
        return board["log"]

    def end_of_iteration(trainer):
        loss = float(torch.as_tensor(trainer.losses["total_loss"]).detach())
        lr = float(run.optimizer.param_groups[0]["lr"])
        epoch_losses.append(loss)
        epoch_lrs.append(lr)
        tensorboard(trainer).write(
            trainer.get_global_iteration() + 1, {"loss": loss, "lr": lr}, group="train"
        )

    def end_of_epoch(trainer):
        loss = sum(epoch_losses) / max(len(epoch_losses), 1)
        lr = epoch_lrs[0] if epoch_lrs else float(run.optimizer.param_groups[0]["lr"])
        epoch_losses.clear()
        epoch_lrs.clear()
        row = {"epoch": trainer.epoch, "loss": loss, "lr": lr}
        last["epoch"] = trainer.epoch
        improved = True
        if run.data.validation is not None:
            validation = retrieval_metrics(
                run.embeddings(run.data.validation), run.data.validation.labels, config
            )
            row.update({f"validation_{k}": v for k, v in validation.items()})
            improved = best["value"] is None or validation[select] > best["value"]
            if improved:
                best["value"] = validation[select]
        if improved:
            best["epoch"] = trainer.epoch
            if main:
                _save_model(run.model, os.path.join(folder, "model.pt"))
        row["selected_epoch"] = best["epoch"]
        patience = evaluation["patience"]
        stop = patience is not None and trainer.epoch - best["epoch"] >= patience
        board_log = tensorboard(trainer)
        if main:
            report.write_history_row(history, row)
            step = trainer.epoch * trainer.iterations_per_epoch
            board_log.write(
                step, {k: v for k, v in row.items() if k.startswith("validation_")}, group="epoch"
            )
            if board_log.writer is not None and projector_items is not None:
                names = [run.data.class_name(x) for x in projector_items.labels]
                board_log.embeddings("held_out", run.embeddings(projector_items), names, trainer.epoch)
            board_log.flush()
            log(_epoch_line(trainer.epoch, config["epochs"], row, select, improved and run.data.validation))
            if stop:
                log(
                    f"early stop: no better validation {select} for {patience} epochs; "
                    f"keeping epoch {best['epoch']}"
                )
        return not stop

    trainer = run.trainer(folder, resume and done > 0, end_of_epoch, end_of_iteration, progress and main)
    try:
        trainer.train(start_epoch=1, num_epochs=config["epochs"])
    finally:
        if "log" in board:
            board["log"].close()
    return {
        "epoch": best["epoch"],
        "epochs_trained": last["epoch"],
        "metric": f"validation {select}" if run.data.validation is not None else None,
        "value": best["value"],
        "validation_items": len(run.data.validation) if run.data.validation is not None else 0,
    }


def _epoch_line(epoch, epochs, row, select, best):
    parts = [f"epoch {epoch}/{epochs}", f"loss {row['loss']:.4f}", f"lr {row['lr']:.3g}"]
    shown = [f"{k[len('validation_') :]} {v:.3f}" for k, v in row.items() if k.startswith("validation_")]
    if shown:
        parts.append("validation " + ", ".join(shown) + ("  (best so far)" if best else ""))
    return "  ".join(parts)


def _save_model(model, path):
    tmp = f"{path}.tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def _evaluate_sections(run, folder, selection, write):
    run.load_selected_model(folder)  # every process: rank 0 wrote it before the last epoch's barrier
    validation = run.data.validation
    relation = shares_a_label if run.data.multi_label else None  # multi-hot: positive when a class is shared
    threshold, why_not = verification.calibrated_threshold(
        run.embeddings(validation) if validation is not None else None,
        validation.labels if validation is not None else None,
        run.config,
        relation,
    )
    results = {}
    for name, items in run.data.sections.items():
        embeddings = run.embeddings(items)
        labels = items.labels
        raw = run.data.raw_inputs(name)
        trained_figures, trained_roc = verification.section_figures(embeddings, labels, threshold, relation)
        raw_figures, raw_roc = verification.section_figures(raw, labels, None, relation)
        results[name] = {
            "trained": retrieval_metrics(embeddings, labels, run.config),
            "baseline_raw_inputs": retrieval_metrics(raw, labels, run.config),
            "items": len(items),
            "classes": len(np.unique(first_class(labels))) if not run.data.multi_label
            else int(np.asarray(labels).any(axis=0).sum()),
            "verification": {"trained": trained_figures, "baseline_raw_inputs": raw_figures},
        }
        if write:
            section_folder = os.path.join(folder, name)
            os.makedirs(section_folder, exist_ok=True)
            torch.save(
                {"embeddings": embeddings, "labels": torch.as_tensor(np.asarray(labels))},
                os.path.join(section_folder, "embeddings.pt"),
            )
            _pictures(run, name, embeddings, section_folder)
            if trained_roc is not None:
                curves = {"trained model": trained_roc}
                if raw_roc is not None:
                    curves["raw inputs (baseline)"] = raw_roc
                report.plot_verification(
                    curves,
                    verification.score_histograms(embeddings, labels, relation=relation),
                    None if threshold is None else threshold.value,
                    os.path.join(section_folder, "verification.png"),
                    _SECTION_TITLES[name],
                )
    results["threshold"] = threshold.to_dict() if threshold is not None else {"not_calibrated": why_not}
    if write and threshold is not None:
        threshold.save(os.path.join(folder, "threshold.json"))
    results["selection"] = selection
    return results


_SECTION_TITLES = {"zero_shot": "unseen classes", "held_out": "held-out items of the training classes"}


def _pictures(run, section, embeddings, folder):
    labels = np.asarray(run.data.sections[section].labels)
    seed = run.config["seed"]
    title = _SECTION_TITLES[section]
    report.plot_embeddings(
        embeddings.numpy(),
        first_class(labels),  # a multi-label item is coloured by its first class
        os.path.join(folder, "embeddings.png"),
        title,
        seed=seed,
        name_of=run.data.class_name,
    )
    normalised = torch.nn.functional.normalize(embeddings, dim=1)
    sims = normalised @ normalised.t()
    sims.fill_diagonal_(-2.0)
    neighbours = sims.topk(min(5, len(labels) - 1), dim=1).indices.numpy()
    queries = np.random.RandomState(seed).choice(len(labels), size=min(8, len(labels)), replace=False)
    report.plot_retrieval(
        queries,
        neighbours[queries],
        labels,
        lambda i: run.data.image(section, i),
        os.path.join(folder, "retrieval.png"),
        f"nearest neighbours ({title})",
        name_of=run.data.class_name,
        related=(lambda a, b: bool(shares_a_label(torch.as_tensor(a), torch.as_tensor(b))))
        if run.data.multi_label else None,
    )


def summary(results, config):
    """The figures of every section next to their baselines, as console lines."""
    metrics = config["evaluation"]["metrics"]
    width = max(len(m) for m in metrics) + 2
    lines = []
    selection = results.get("selection", {})
    for name in SECTIONS:
        if name not in results:
            continue
        section = results[name]
        what = "unseen classes" if name == "zero_shot" else "training classes (items never trained on)"
        lines.append(f"{name}: {section['items']} items of {section['classes']} {what}")
        lines.append(" " * 24 + "".join(m.rjust(width) for m in metrics))
        epoch = selection.get("epoch")
        trained = f"trained (epoch {epoch})" if epoch else "trained"
        for label, values in (
            (trained, section["trained"]),
            ("raw inputs (baseline)", section["baseline_raw_inputs"]),
        ):
            lines.append(f"  {label:<22}" + "".join(f"{values[m]:.4f}".rjust(width) for m in metrics))
        lines += _verification_lines(section.get("verification", {}))
    threshold = results.get("threshold")
    if threshold and "value" in threshold:
        lines.append(
            f"match threshold: cosine similarity >= {threshold['value']:.4f} (calibrated for "
            f"{_target_text(threshold)} on the validation items; threshold.json)"
        )
    return "\n".join(lines)


def _verification_lines(figures):
    trained, raw = figures.get("trained"), figures.get("baseline_raw_inputs")
    if trained is None:
        return []
    line = f"  every pair: ROC AUC {trained['roc_auc']:.4f}, EER {trained['eer']:.4f}"
    if raw is not None:
        line += f" (raw inputs {raw['roc_auc']:.4f}, {raw['eer']:.4f})"
    at = trained.get("at_threshold")
    if at is not None:
        line += f"; at the threshold FMR {at['fmr']:.4g}, FNMR {at['fnmr']:.4g}"
    return [line]


def _target_text(threshold):
    if threshold["target"] == "best_f1":
        return "best_f1"
    return f"{threshold['target']} {threshold['target_value']:g}"


def _name(config, key):
    return component(config, key)[0]


def _notes(name, section):
    """A sentence when training lost to the raw inputs on some metric, explained for the section."""
    worse = [k for k, v in section["trained"].items() if v < section["baseline_raw_inputs"].get(k, v)]
    if not worse:
        return []
    if name == "zero_shot":
        text = (
            f"On these unseen classes the trained model retrieves worse than the raw inputs on "
            f"{', '.join(worse)}: the features it learned to separate its training classes do not "
            "transfer to these ones. This happens when the raw inputs are already a strong embedding "
            "(as 8x8 digits are) or when training overfits its classes."
        )
    else:
        text = (
            f"On classes it was trained on, the model retrieves worse than the raw inputs on "
            f"{', '.join(worse)}: it has not learned its training classes well. Train for more epochs, "
            "adjust the learning rate, or try another loss."
        )
    return [text, ""]


def _selection_text(selection, config):
    if selection.get("metric") is None:
        return (
            "No validation items (evaluation.validation_fraction is 0, or the classes have too few "
            f"items): the weights of the last epoch ({selection['epoch']}) are used."
        )
    stopped = selection["epochs_trained"] < config["epochs"]
    return (
        f"Model selection: the weights of epoch {selection['epoch']} of {selection['epochs_trained']}"
        f"{' (stopped early)' if stopped else ''}, the best {selection['metric']} "
        f"({selection['value']:.4f}) on {selection['validation_items']} items set aside from the "
        "training classes; no test class is ever used to choose. Every epoch is in `history.csv`."
    )


def _write_report(output, config, run, results):
    epochs = f"{config['epochs']} epoch{'s' if config['epochs'] != 1 else ''}"
    lines = [
        "# deepmetric run report",
        "",
        f"Dataset `{_name(config, 'dataset')}`, model `{_name(config, 'model')}` ({run.embedding_size}-d "
        f"embeddings), loss `{_name(config, 'loss')}`, {epochs}, seed {config['seed']}; "
        f"{results['seconds']} s in all. The resolved configuration is in `config.yaml`; the selected "
        "weights are in `model.pt`.",
        "",
        _selection_text(results["selection"], config),
        "",
    ]
    titles = {
        "zero_shot": "Zero-shot: classes the model never saw",
        "held_out": "Held-out items of the training classes",
    }
    for name in SECTIONS:
        if name not in results:
            continue
        section = results[name]
        lines += [
            f"## {titles[name]}",
            "",
            f"{section['items']} items of {section['classes']} classes. Each item is a query against the "
            "other items of this section. The baseline embeds the raw inputs (no training), so the "
            "difference is what training bought.",
            "",
            report.metrics_table(
                {"raw inputs (baseline)": section["baseline_raw_inputs"], "trained model": section["trained"]}
            ),
            "",
            *_notes(name, section),
            f"![embeddings]({name}/embeddings.png)",
            "",
            f"![retrieval]({name}/retrieval.png)",
            "",
            "In the gallery each row is a query followed by its five nearest neighbours; wrong "
            "matches are framed in red.",
            "",
            *_verification_text(name, section, results["threshold"]),
        ]
    with open(os.path.join(output, "report.md"), "w") as f:
        f.write("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# evaluate and search


def _verification_text(name, section, threshold):
    """The report's verification paragraph of a section: figures over every pair of its items, the
    calibrated threshold's results there, and the ROC / score-histogram picture."""
    figures = section["verification"]
    trained, raw = figures["trained"], figures["baseline_raw_inputs"]
    if trained is None:
        return ["This section has no same-class or no different-class pair: no verification figures.", ""]
    rows = {"trained model": {k: v for k, v in trained.items() if k != "at_threshold"}}
    if raw is not None:
        rows = {"raw inputs (baseline)": raw, **rows}
    lines = [
        "### Same or not: verification over every pair",
        "",
        "Every pair of distinct items, scored by cosine similarity: the area under the ROC curve, "
        "the equal error rate, the true match rate at a false match rate of 1e-3 and the false "
        "non-match rate there.",
        "",
        report.metrics_table(rows),
        "",
    ]
    if "at_threshold" in trained:
        at = trained["at_threshold"]
        target = _target_text(threshold)
        lines += [
            f"The match threshold, calibrated on the validation items for {target} (training classes "
            "only; saved in `threshold.json` for `MatchFinder`), is a cosine similarity of "
            f"{threshold['value']:.4f}. "
            f"On this section it gives FMR {at['fmr']:.4g}, FNMR {at['fnmr']:.4g}, precision "
            f"{at['precision']:.4f}, recall {at['tpr']:.4f}, F1 {at['f1']:.4f}.",
            "",
        ]
    else:
        lines += [f"No match threshold was calibrated: {threshold.get('not_calibrated')}.", ""]
    lines += [f"![verification]({name}/verification.png)", ""]
    return lines


def _restored_run(output):
    state = folder_state(output)
    if state != "run":
        raise ConfigError(
            None, f"{os.path.join(output, 'config.yaml')!r} does not exist: train a run into {output!r} first"
        )
    config = load_config(os.path.join(output, "config.yaml"))
    run = Run(config, components.check_device(config), for_training=False)
    run.load_selected_model(output)
    return run


def _section(run, section):
    available = list(run.data.sections)
    if section is None:
        return "held_out" if "held_out" in available else available[0]
    if section not in available:
        raise ConfigError(
            None, f"--section {section}: this run has no {section} section (it has: {', '.join(available)})"
        )
    return section


@_keeps_callers_library_generator
def evaluate_command(output, section=None, log=print):
    """``deepmetric evaluate``: re-embed the sections with the selected model and recompute their
    metrics; writes and returns ``{section: metrics}``."""
    run = _restored_run(output)
    names = [_section(run, section)] if section else list(run.data.sections)
    results = {}
    for name in names:
        items = run.data.sections[name]
        results[name] = retrieval_metrics(run.embeddings(items), items.labels, run.config)
        log(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[name].items()))
    report.write_json(os.path.join(output, "evaluation.json"), results)
    return results


@_keeps_callers_library_generator
def search_command(output, queries, k=5, section=None, log=print):
    """``deepmetric search``: nearest items of a section for each query (an item number or a file)."""
    run = _restored_run(output)
    section = _section(run, section)
    items = run.data.sections[section]
    reference = run.embeddings(items)
    named = []
    for q in queries:
        if str(q).isdigit():
            index = int(q)
            if index >= len(items):
                raise ConfigError(
                    None, f"query item {index} is out of range ({section} has {len(items)} items)"
                )
            named.append(
                (f"item {index} (class {run.data.class_name(items.labels[index])})", items[index][0], index)
            )
        else:
            named.extend((name, x, None) for name, x in read_queries(run.data, q))
    inputs = torch.stack([x for _, x, _ in named])
    expected = tuple(items[0][0].shape)
    if tuple(inputs.shape[1:]) != expected:
        raise ConfigError(None, f"queries must be items of shape {expected}, got {tuple(inputs.shape[1:])}")
    query_emb = embed(
        run.model, torch.utils.data.TensorDataset(inputs, torch.zeros(len(inputs))), device=run.device
    )
    sims = (
        torch.nn.functional.normalize(query_emb, dim=1) @ torch.nn.functional.normalize(reference, dim=1).t()
    )
    for (name, _, index), row in zip(named, sims):
        if index is not None:
            row[index] = -2.0  # an item is not its own neighbour
        top = row.topk(min(k, len(row) - (index is not None)))
        log(f"query {name}:")
        for rank, (score, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
            log(f"  {rank}. item {idx}  class {run.data.class_name(items.labels[idx])}  cosine {score:.4f}")
    return sims
