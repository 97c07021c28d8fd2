"""Train, evaluate and search: what the ``deepmetric`` subcommands do.

A run trains with the library's ``MetricLossOnly`` trainer. After every epoch a hook evaluates
retrieval on the held-out split and writes a row of ``history.csv``, then the trainer writes a
checkpoint atomically, so an interrupted run resumes from its last complete epoch. The trainer
seeds each epoch's data order and the checkpoint holds every random-number state, so a resumed
run ends with the same weights as an uninterrupted one.
"""

import os
import random
import time

import numpy as np
import torch

from ..utils import common_functions as c_f
from . import components, report
from .config import ConfigError, component, dump_config, load_config
from .data import build_data
from .distributed import is_main_process, join_process_group, per_process_batch_size


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    c_f.NUMPY_RANDOM = np.random.RandomState(seed % 2**32)


def embed(model, dataset, batch_size=512, device="cpu"):
    """Embeddings of every item of ``dataset`` (model in eval mode, no gradients)."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    chunks = []
    with torch.no_grad():
        for x, _ in loader:
            chunks.append(model(x.to(device)).float().cpu())
    return torch.cat(chunks)


def retrieval_metrics(embeddings, labels, config):
    """The configured metrics, each query searched against the rest of the held-out set."""
    from ..utils.accuracy_calculator import AccuracyCalculator

    evaluation = config["evaluation"]
    try:
        calculator = AccuracyCalculator(include=tuple(evaluation["metrics"]), k=evaluation["k"])
    except (ValueError, AssertionError) as err:
        raise ConfigError("evaluation.metrics", " ".join(str(err).split())) from None
    labels = torch.as_tensor(labels)
    result = calculator.get_accuracy(embeddings, labels, embeddings, labels, ref_includes_query=True)
    return {name: float(value) for name, value in result.items()}


class Run:
    """One training run (the main one, or the zero-shot one) inside an output folder."""

    def __init__(self, config, folder, zero_shot=False):
        self.config = config
        self.folder = folder
        self.device = join_process_group(config)
        self.data = build_data(config, zero_shot=zero_shot)
        seed_everything(config["seed"])
        self.model = components.build_model(config, self.data.input_shape).to(self.device)
        embedding_size = self._embedding_size()
        self.loss = components.build_loss(config, self.data.num_classes, embedding_size).to(self.device)
        self.miner = components.build_miner(config)
        params = list(self.model.parameters()) + list(self.loss.parameters())
        self.optimizer = components.build_optimizer(config, params)
        self.scheduler = components.build_scheduler(config, self.optimizer)
        self.batch_size = per_process_batch_size(config)
        self.sampler = components.build_sampler(config, self.data.train_labels, self.batch_size)
        self.checkpoint_folder = os.path.join(folder, "checkpoints")

    def _embedding_size(self):
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            x = self.data.train[0][0].unsqueeze(0).to(self.device)
            size = self.model(x).shape[1]
        self.model.train(was_training)
        return size

    def trainer(self, resume, end_of_epoch_hook, end_of_iteration_hook):
        """A MetricLossOnly trainer that checkpoints every epoch and can resume."""
        from ..trainers import MetricLossOnly

        schedulers = {}
        if self.scheduler is not None:
            schedulers["trunk_scheduler_by_epoch"] = self.scheduler
        mining = {"tuple_miner": self.miner} if self.miner is not None else {}
        return MetricLossOnly(
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
            progress_bar=False,
            seed=self.config["seed"],
            checkpoint_folder=self.checkpoint_folder,
            resume=resume,
        )

    def restore_model(self):
        """Load the trained model from the newest readable checkpoint."""
        from ..utils.checkpoint import CheckpointError, load_checkpoint

        try:
            state, _ = load_checkpoint(self.checkpoint_folder, map_location="cpu")
        except CheckpointError as err:
            raise ConfigError(None, " ".join(str(err).split())) from None
        self.model.load_state_dict(state["models"]["trunk"])
        return state["epoch"]

    def held_out_embeddings(self):
        return embed(self.model, self.data.test, device=self.device)


def train_command(config_path, output, resume=False, seed=None, epochs=None, log=print):
    """``deepmetric train``: returns the metrics dict that was written to metrics.json."""
    overrides = {}
    if seed is not None:
        overrides["seed"] = seed
    if epochs is not None:
        overrides["epochs"] = epochs
    resolved_path = os.path.join(output, "config.yaml")
    if resume:
        if not os.path.isfile(resolved_path):
            raise ConfigError(None, f"--resume: {resolved_path!r} does not exist; nothing to resume")
        config = load_config(resolved_path, overrides)
    else:
        config = load_config(config_path, overrides)
    join_process_group(config)  # under torchrun: before anything decides who writes
    main = is_main_process()
    if main:
        os.makedirs(output, exist_ok=True)
        dump_config(config, resolved_path)
    started = time.time()
    sections = [("held_out", output, False)]
    if config["evaluation"]["zero_shot"] and _name(config, "dataset") == "Digits":
        sections.append(("zero_shot", os.path.join(output, "zero_shot"), True))
    results = {}
    for name, folder, zero_shot in sections:
        results[name] = _train_section(config, folder, zero_shot, resume, log, label=name)
    results["seconds"] = round(time.time() - started, 1)
    if main:
        report.write_json(os.path.join(output, "metrics.json"), results)
        _write_report(output, config, results)
        log(f"report: {os.path.join(output, 'report.md')}")
    return results


def _train_section(config, folder, zero_shot, resume, log, label):
    main = is_main_process()  # under torchrun every process trains and evaluates; rank 0 writes
    if main:
        os.makedirs(folder, exist_ok=True)
    run = Run(config, folder, zero_shot=zero_shot)
    baseline = retrieval_metrics(run.data.raw_test_inputs(), run.data.test_labels, config)
    history = os.path.join(folder, "history.csv")
    epoch_losses = []

    def end_of_iteration(trainer):
        epoch_losses.append(float(torch.as_tensor(trainer.losses["total_loss"]).detach()))

    if main and not resume and os.path.exists(history):
        os.remove(history)
    first_epoch = report.history_epochs(history) + 1 if resume else 1
    scalars = report.TensorBoardLog(folder if main else None, first_epoch=first_epoch)

    def end_of_epoch(trainer):
        loss = sum(epoch_losses) / max(len(epoch_losses), 1)
        epoch_losses.clear()
        metrics = retrieval_metrics(run.held_out_embeddings(), run.data.test_labels, config)
        if not main:
            return True
        report.write_history_row(history, {"epoch": trainer.epoch, "loss": loss, **metrics})
        scalars.write(trainer.epoch, {"loss": loss, **metrics}, group=label)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        log(f"[{label}] epoch {trainer.epoch}/{config['epochs']}  loss {loss:.4f}  {shown}")
        return True

    trainer = run.trainer(resume, end_of_epoch, end_of_iteration)
    try:
        trainer.train(start_epoch=1, num_epochs=config["epochs"])
    finally:
        scalars.close()
    embeddings = run.held_out_embeddings()
    trained = retrieval_metrics(embeddings, run.data.test_labels, config)
    result = {"baseline_raw_inputs": baseline, "trained": trained, "epochs": config["epochs"]}
    if not main:
        return result
    torch.save({"embeddings": embeddings, "labels": torch.as_tensor(run.data.test_labels)},
               os.path.join(folder, "embeddings.pt"))
    _pictures(run, embeddings, folder, label)
    return result


def _pictures(run, embeddings, folder, label):
    labels = run.data.test_labels
    report.plot_embeddings(embeddings.numpy(), labels, os.path.join(folder, "embeddings.png"),
                           f"held-out embeddings ({label})", seed=run.config["seed"])
    sims = torch.nn.functional.normalize(embeddings, dim=1) @ torch.nn.functional.normalize(
        embeddings, dim=1).t()
    sims.fill_diagonal_(-2.0)
    neighbours = sims.topk(5, dim=1).indices.numpy()
    rng = np.random.RandomState(run.config["seed"])
    queries = rng.choice(len(labels), size=min(8, len(labels)), replace=False)
    report.plot_retrieval(queries, neighbours[queries], labels, run.data.test_image,
                          os.path.join(folder, "retrieval.png"), f"nearest neighbours ({label})")


def _worse_than_baseline_note(section):
    """A sentence when training lost to the raw inputs on some metric (it can, on unseen classes)."""
    worse = [k for k, v in section["trained"].items() if v < section["baseline_raw_inputs"].get(k, v)]
    if not worse:
        return []
    return [
        f"Training did worse than the raw inputs on {', '.join(worse)}: the model learned features "
        "that separate its training classes and do not transfer to these ones.",
        "",
    ]


def _name(config, key):
    return component(config, key)[0]


def _write_report(output, config, results):
    lines = [
        "# deepmetric run report",
        "",
        f"Dataset `{_name(config, 'dataset')}`, model `{_name(config, 'model')}`, loss "
        f"`{_name(config, 'loss')}`, {config['epochs']} epochs, seed {config['seed']}; "
        f"{results['seconds']} s in all. The resolved configuration is in `config.yaml`.",
        "",
    ]
    titles = {
        "held_out": "Held-out images of every class",
        "zero_shot": "Zero-shot: train on digits 0-4, retrieve unseen digits 5-9",
    }
    for name in ("held_out", "zero_shot"):
        if name not in results:
            continue
        section = results[name]
        prefix = "" if name == "held_out" else "zero_shot/"
        lines += [
            f"## {titles[name]}",
            "",
            "Each held-out item is a query against the other held-out items. The baseline embeds the "
            "raw inputs (no training), so the difference is what training bought.",
            "",
            report.metrics_table({"raw inputs (baseline)": section["baseline_raw_inputs"],
                                  "trained model": section["trained"]}),
            "",
            *_worse_than_baseline_note(section),
            f"Per-epoch loss and metrics: `{prefix}history.csv`.",
            "",
            f"![embeddings]({prefix}embeddings.png)",
            "",
            f"![retrieval]({prefix}retrieval.png)",
            "",
            "In the gallery each row is a query followed by its five nearest neighbours; wrong "
            "matches are framed in red.",
            "",
        ]
    with open(os.path.join(output, "report.md"), "w") as f:
        f.write("\n".join(lines))


def evaluate_command(output, log=print):
    """``deepmetric evaluate``: re-embed the held-out split with the saved model, recompute."""
    config = _saved_config(output)
    run = Run(config, output)
    run.restore_model()
    metrics = retrieval_metrics(run.held_out_embeddings(), run.data.test_labels, config)
    report.write_json(os.path.join(output, "evaluation.json"), metrics)
    for k, v in metrics.items():
        log(f"{k}: {v:.4f}")
    return metrics


def search_command(output, queries, k=5, log=print):
    """``deepmetric search``: nearest held-out items for each query (an index or a file)."""
    config = _saved_config(output)
    run = Run(config, output)
    run.restore_model()
    reference = run.held_out_embeddings()
    inputs = torch.stack([_query_input(run, q) for q in queries])
    run.model.eval()
    with torch.no_grad():
        query_emb = run.model(inputs.to(run.device)).float().cpu()
    sims = torch.nn.functional.normalize(query_emb, dim=1) @ torch.nn.functional.normalize(
        reference, dim=1).t()
    for q, raw in zip(queries, sims):
        if str(q).isdigit():
            raw[int(q)] = -2.0  # a held-out item is not its own neighbour
        top = raw.topk(min(k, len(raw)))
        log(f"query {q}:")
        for rank, (score, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
            log(f"  {rank}. item {idx}  label {run.data.test_labels[idx]}  cosine {score:.4f}")
    return sims


def _query_input(run, query):
    if str(query).isdigit():
        index = int(query)
        if index >= len(run.data.test):
            size = len(run.data.test)
            raise ConfigError(None, f"query index {index} is out of range (held-out size {size})")
        return run.data.test[index][0]
    if not os.path.isfile(query):
        raise ConfigError(None, f"query {query!r} is neither a held-out index nor an existing file")
    if run.data.name == "Digits":
        values = np.loadtxt(query, dtype=np.float32).reshape(-1)
        if values.size != 64:
            raise ConfigError(None, f"query file {query!r} must hold 64 pixel values, got {values.size}")
        return torch.from_numpy(values)
    from PIL import Image

    from .data import ImageToTensor

    return ImageToTensor(config_image_size(run.config))(Image.open(query))


def config_image_size(config):
    args = config["dataset"].get("args") or {}
    return args.get("image_size", 64)


def _saved_config(output):
    path = os.path.join(output, "config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(None, f"{path!r} does not exist: train a run into {output!r} first")
    return load_config(path)
