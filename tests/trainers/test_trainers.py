import logging

import numpy as np
import pytest
import torch

from conftest import requires_reference
from deepmetric import losses, miners, trainers
from deepmetric.utils import common_functions as c_f

DIM, EMB, CLASSES, PER_CLASS = 8, 4, 4, 8


def clustered_dataset(seed=0, n_per_class=PER_CLASS, labels_offset=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, DIM, generator=g) * 3
    labels = torch.arange(CLASSES).repeat_interleave(n_per_class)
    x = centers[labels] + torch.randn(len(labels), DIM, generator=g)
    return torch.utils.data.TensorDataset(x, labels + labels_offset)


def make_models(seed=0, out=EMB):
    torch.manual_seed(seed)
    return {"trunk": torch.nn.Linear(DIM, 6), "embedder": torch.nn.Linear(6, out)}


def sgd(models, lr=0.05):
    return {f"{k}_optimizer": torch.optim.SGD(m.parameters(), lr=lr) for k, m in models.items()}


def metric_trainer(cls=trainers.MetricLossOnly, models=None, dataset=None, **kwargs):
    models = make_models() if models is None else models
    args = dict(
        models=models,
        optimizers=sgd(models),
        batch_size=8,
        loss_funcs={"metric_loss": losses.TripletMarginLoss(margin=0.5)},
        dataset=clustered_dataset() if dataset is None else dataset,
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        progress_bar=False,
    )
    args.update(kwargs)
    return cls(**args)


def mean_triplet_loss(models, dataset):
    x, y = dataset.tensors
    with torch.no_grad():
        emb = models["embedder"](models["trunk"](x))
    return float(losses.TripletMarginLoss(margin=0.5)(emb, y))


# ------------------------------------------------------------------------------------------------
# the loop


def test_metric_loss_only_reduces_the_loss():
    models = make_models()
    dataset = clustered_dataset()
    before = mean_triplet_loss(models, dataset)
    t = metric_trainer(models=models, dataset=dataset)
    t.train(num_epochs=8)
    assert mean_triplet_loss(models, dataset) < 0.5 * before


def test_hooks_fire_in_order_with_epoch_and_iteration_counters():
    events = []
    t = metric_trainer(
        end_of_iteration_hook=lambda tr: events.append(("it", tr.epoch, tr.iteration, tr.get_global_iteration())),
        end_of_epoch_hook=lambda tr: events.append(("epoch", tr.epoch)),
    )
    t.train(start_epoch=2, num_epochs=3)
    ipe = len(clustered_dataset()) // 8
    assert t.iterations_per_epoch == ipe
    expected = []
    for e in (2, 3):
        expected += [("it", e, i, i + ipe * (e - 1)) for i in range(ipe)]
        expected.append(("epoch", e))
    assert events == expected


def test_losses_are_zeroed_before_the_epoch_hook_and_hold_values_in_the_iteration_hook():
    seen = {}

    def it_hook(tr):
        seen["it"] = float(tr.losses["total_loss"].detach())

    def ep_hook(tr):
        seen["epoch"] = tr.losses["total_loss"]

    t = metric_trainer(end_of_iteration_hook=it_hook, end_of_epoch_hook=ep_hook)
    t.train(num_epochs=1)
    assert seen["it"] > 0
    assert seen["epoch"] == 0


def test_iterations_per_epoch_restarts_the_data_iterator():
    count = []
    t = metric_trainer(iterations_per_epoch=7, end_of_iteration_hook=lambda tr: count.append(1))
    t.train(num_epochs=2)
    assert len(count) == 14


@pytest.mark.parametrize("stop_value, expected_epochs", [(False, 2), (None, 4), (0, 4), (True, 4)])
def test_only_a_false_epoch_hook_result_stops_training(stop_value, expected_epochs):
    epochs = []

    def hook(tr):
        epochs.append(tr.epoch)
        return stop_value if tr.epoch == 2 else True

    metric_trainer(end_of_epoch_hook=hook).train(num_epochs=4)
    assert epochs[-1] == expected_epochs


def test_iteration_scheduler_steps_after_the_iteration_hook_and_epoch_scheduler_before_the_epoch_hook():
    models = make_models()
    opt = sgd(models)
    lrs_it, lrs_epoch = [], []
    schedulers = {
        "trunk_scheduler_by_iteration": torch.optim.lr_scheduler.StepLR(opt["trunk_optimizer"], 1, gamma=0.5),
        "embedder_scheduler_by_epoch": torch.optim.lr_scheduler.StepLR(opt["embedder_optimizer"], 1, gamma=0.1),
    }
    t = metric_trainer(
        models=models,
        optimizers=opt,
        lr_schedulers=schedulers,
        end_of_iteration_hook=lambda tr: lrs_it.append(opt["trunk_optimizer"].param_groups[0]["lr"]),
        end_of_epoch_hook=lambda tr: lrs_epoch.append(opt["embedder_optimizer"].param_groups[0]["lr"]),
    )
    t.train(num_epochs=2)
    ipe = t.iterations_per_epoch
    assert lrs_it == pytest.approx([0.05 * 0.5**i for i in range(2 * ipe)])
    assert lrs_epoch == pytest.approx([0.005, 0.0005])


def test_plateau_schedulers_step_only_through_step_lr_plateau_schedulers():
    models = make_models()
    opt = sgd(models)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt["trunk_optimizer"], mode="max", patience=0, factor=0.5)
    t = metric_trainer(models=models, optimizers=opt, lr_schedulers={"trunk_scheduler_by_plateau": plateau})
    t.train(num_epochs=2)
    assert opt["trunk_optimizer"].param_groups[0]["lr"] == 0.05
    t.step_lr_plateau_schedulers(1.0)
    t.step_lr_plateau_schedulers(0.5)
    assert opt["trunk_optimizer"].param_groups[0]["lr"] == 0.025


def test_gradient_clippers_run_after_backward_and_before_the_step():
    models = make_models()
    calls = []

    def clipper():
        calls.append(models["trunk"].weight.grad is not None)
        torch.nn.utils.clip_grad_norm_(models["trunk"].parameters(), 1e-8)

    before = models["trunk"].weight.detach().clone()
    t = metric_trainer(models=models, gradient_clippers={"trunk_grad_clipper": clipper})
    t.train(num_epochs=1)
    assert calls and all(calls)
    # gradients clipped to ~0 norm: the trunk barely moves
    assert torch.allclose(models["trunk"].weight, before, atol=1e-6)


def test_freeze_these_keeps_weights_and_skips_the_optimizer(caplog):
    models = make_models()
    before = models["trunk"].weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="PML"):
        t = metric_trainer(models=models, freeze_these=("trunk",))
    assert "freezing its parameters" in caplog.text
    t.train(num_epochs=1)
    assert torch.equal(models["trunk"].weight, before)
    assert not models["trunk"].training
    assert models["embedder"].training


def test_freeze_these_rejects_unknown_names():
    with pytest.raises(AssertionError, match="freeze_these"):
        metric_trainer(freeze_these=("nonexistent",))


def test_freeze_trunk_batchnorm_keeps_running_stats():
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(DIM, 6), torch.nn.BatchNorm1d(6))
    models = {"trunk": trunk, "embedder": torch.nn.Linear(6, EMB)}
    stats = trunk[1].running_mean.clone()
    t = metric_trainer(models=models, freeze_trunk_batchnorm=True)
    t.train(num_epochs=1)
    assert torch.equal(trunk[1].running_mean, stats)
    assert not trunk[1].training and trunk.training
    assert trunk[1].weight.requires_grad


def test_missing_trunk_and_unknown_keys_are_rejected():
    models = make_models()
    with pytest.raises(AssertionError, match="trunk"):
        metric_trainer(models={"embedder": models["embedder"]}, optimizers={})
    with pytest.raises(AssertionError, match="unknown key"):
        metric_trainer(lr_schedulers={"bogus_scheduler_by_epoch": None})


def test_embedder_defaults_to_identity():
    torch.manual_seed(0)
    models = {"trunk": torch.nn.Linear(DIM, EMB)}
    t = metric_trainer(models=models, optimizers={"trunk_optimizer": torch.optim.SGD(models["trunk"].parameters(), 0.1)})
    assert isinstance(t.models["embedder"], torch.nn.Identity)
    t.train(num_epochs=1)


def test_loss_weights_must_name_every_loss_and_scale_the_total():
    with pytest.raises(AssertionError, match="metric_loss"):
        metric_trainer(loss_weights={"other": 1})
    raw, weighted = [], []

    class Loss(torch.nn.Module):
        def forward(self, embeddings, labels, indices_tuple=None):
            value = losses.TripletMarginLoss(margin=0.5)(embeddings, labels, indices_tuple)
            raw.append(float(value.detach()))
            return value

    t = metric_trainer(
        loss_funcs={"metric_loss": Loss()},
        loss_weights={"metric_loss": 3.0},
        end_of_iteration_hook=lambda tr: weighted.append(float(tr.losses["total_loss"].detach())),
    )
    t.train(num_epochs=1)
    assert weighted == pytest.approx([3 * r for r in raw])
    assert min(raw) > 0


def test_zero_metric_weight_skips_the_loss_and_reports_that_nothing_can_be_trained():
    class Exploding(torch.nn.Module):
        def forward(self, *args):
            raise AssertionError("must not be called")

    t = metric_trainer(loss_funcs={"metric_loss": Exploding()}, loss_weights={"metric_loss": 0})
    with pytest.raises(RuntimeError, match="weight 0"):
        t.train(num_epochs=1)


class RecordingLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = losses.TripletMarginLoss()
        self.seen_labels = []
        self.seen_sizes = []

    def forward(self, embeddings, labels, indices_tuple=None):
        self.seen_labels.append(labels.clone())
        self.seen_sizes.append(len(embeddings))
        return self.inner(embeddings, labels, indices_tuple)


def test_set_min_label_to_zero_maps_labels_to_their_rank():
    dataset = clustered_dataset(labels_offset=0)
    x, y = dataset.tensors
    raw = torch.tensor([5, 10, 12, 13])[y]
    loss = RecordingLoss()
    t = metric_trainer(
        dataset=torch.utils.data.TensorDataset(x, raw),
        loss_funcs={"metric_loss": loss},
        dataset_labels=raw.numpy(),
        set_min_label_to_zero=True,
    )
    t.train(num_epochs=1)
    seen = torch.cat(loss.seen_labels)
    assert set(seen.tolist()) <= {0, 1, 2, 3}
    assert len(set(seen.tolist())) > 1


def test_label_hierarchy_level_selects_a_column_of_2d_labels():
    x, y = clustered_dataset().tensors
    labels_2d = torch.stack([y, y // 2], dim=1)
    loss = RecordingLoss()
    t = metric_trainer(
        dataset=torch.utils.data.TensorDataset(x, labels_2d), loss_funcs={"metric_loss": loss}, label_hierarchy_level=1
    )
    t.train(num_epochs=1)
    assert set(torch.cat(loss.seen_labels).tolist()) <= {0, 1}
    assert all(lbl.ndim == 1 for lbl in loss.seen_labels)


def test_data_and_label_getter_unpacks_dict_batches():
    x, y = clustered_dataset().tensors

    class DictDataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return {"data": x[i], "label": y[i]}

    t = metric_trainer(dataset=DictDataset(), data_and_label_getter=lambda b: (b["data"], b["label"]))
    t.train(num_epochs=1)


def test_subset_batch_miner_trains_on_the_selected_items_only():
    loss = RecordingLoss()
    calls = []

    def first_six(embeddings, labels):
        calls.append(torch.is_grad_enabled())
        return torch.arange(6)

    t = metric_trainer(loss_funcs={"metric_loss": loss}, mining_funcs={"subset_batch_miner": first_six})
    t.train(num_epochs=1)
    assert set(loss.seen_sizes) == {6}
    assert calls and not any(calls)


def test_tuple_miner_output_reaches_the_loss():
    seen = []

    class Loss(torch.nn.Module):
        def forward(self, embeddings, labels, indices_tuple=None):
            seen.append(indices_tuple)
            return losses.TripletMarginLoss()(embeddings, labels, indices_tuple)

    t = metric_trainer(loss_funcs={"metric_loss": Loss()}, mining_funcs={"tuple_miner": miners.TripletMarginMiner(0.5)})
    t.train(num_epochs=1)
    assert all(isinstance(it, tuple) and len(it) == 3 for it in seen)


def test_batch_sampler_is_used_as_batch_sampler():
    from deepmetric.samplers import MPerClassSampler

    ds = clustered_dataset()
    sampler = MPerClassSampler(ds.tensors[1], m=2, batch_size=8, length_before_new_iter=32)
    loss = RecordingLoss()
    metric_trainer(dataset=ds, sampler=sampler, loss_funcs={"metric_loss": loss}).train(num_epochs=1)
    for labels in loss.seen_labels:
        assert torch.bincount(labels).max() == 2


def test_progress_bar_shows_the_running_loss(capsys):
    metric_trainer(progress_bar=True).train(num_epochs=1)
    err = capsys.readouterr().err
    assert "epoch 1" in err and "loss=" in err


def test_progress_bar_off_prints_nothing(capsys):
    metric_trainer(progress_bar=False).train(num_epochs=1)
    assert capsys.readouterr().err == ""


def test_use_amp_on_cpu_trains_under_bfloat16_autocast():
    dtypes = []

    class Loss(torch.nn.Module):
        def forward(self, embeddings, labels, indices_tuple=None):
            dtypes.append(embeddings.dtype)
            return losses.TripletMarginLoss(margin=0.5)(embeddings.float(), labels, indices_tuple)

    models = make_models()
    dataset = clustered_dataset()
    before = mean_triplet_loss(models, dataset)
    t = metric_trainer(models=models, dataset=dataset, use_amp=True, loss_funcs={"metric_loss": Loss()})
    assert not t.grad_scaler.is_enabled()
    t.train(num_epochs=8)
    assert set(dtypes) == {torch.bfloat16}
    assert mean_triplet_loss(models, dataset) < before


def test_dtype_casts_each_batch():
    torch.manual_seed(0)
    models = {"trunk": torch.nn.Linear(DIM, EMB).double()}
    t = metric_trainer(
        models=models,
        optimizers={"trunk_optimizer": torch.optim.SGD(models["trunk"].parameters(), 0.1)},
        dtype=torch.float64,
    )
    t.train(num_epochs=1)


def test_seed_makes_two_runs_identical():
    results = []
    for _ in range(2):
        models = make_models(seed=1)
        torch.manual_seed(123)  # the seed argument must override whatever state the RNG is in
        np.random.seed(7)
        metric_trainer(models=models, seed=5, mining_funcs={"tuple_miner": miners.TripletMarginMiner(0.5)}).train(
            num_epochs=2
        )
        results.append(models["trunk"].weight.detach().clone())
        torch.manual_seed(999)
    assert torch.equal(results[0], results[1])


def test_bad_extra_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_folder"):
        metric_trainer(resume=True)
    with pytest.raises(ValueError, match="checkpoint_keep"):
        metric_trainer(checkpoint_folder=str(tmp_path), checkpoint_keep=0)
    with pytest.raises(ValueError, match="seed"):
        metric_trainer(seed="1")


def test_the_extra_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        trainers.MetricLossOnly(*([None] * 23), True)


# ------------------------------------------------------------------------------------------------
def hierarchical_dataset():
    """6 classes of 6 items in 3 super classes; items are (x, (class, super class), index)."""
    g = torch.Generator().manual_seed(5)
    classes = torch.arange(6).repeat_interleave(6)
    x = torch.randn(6, DIM, generator=g)[classes] * 3 + torch.randn(len(classes), DIM, generator=g)
    labels = torch.stack([classes, classes // 2], dim=1)
    return torch.utils.data.TensorDataset(x, labels, torch.arange(len(classes)))


@pytest.mark.parametrize("iterations_per_epoch", [None, 2])
@pytest.mark.parametrize("cls", [trainers.MetricLossOnly, trainers.TrainWithClassifier])
def test_hierarchical_sampler_feeds_its_batches_to_the_trainer(monkeypatch, cls, iterations_per_epoch):
    from deepmetric.samplers import HierarchicalSampler

    dataset = hierarchical_dataset()
    labels = dataset.tensors[1]

    def sampler():
        return HierarchicalSampler(labels, batch_size=8, samples_per_class=2, batches_per_super_tuple=2)

    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(0))
    used = sampler()
    seen_indices = []

    def getter(batch):
        seen_indices.append(batch[2].tolist())
        return batch[0], batch[1]

    loss = RecordingLoss()
    models = make_models()
    loss_funcs = {"metric_loss": loss}
    if cls is trainers.TrainWithClassifier:
        models["classifier"] = torch.nn.Linear(EMB, 6)
        loss_funcs["classifier_loss"] = torch.nn.CrossEntropyLoss()
    before = models["trunk"].weight.detach().clone()
    t = metric_trainer(
        cls=cls,
        models=models,
        dataset=dataset,
        sampler=used,
        batch_size=5,  # a batch sampler decides the batches; batch_size is not used
        data_and_label_getter=getter,
        loss_funcs=loss_funcs,
        iterations_per_epoch=iterations_per_epoch,
    )
    t.train(num_epochs=1)
    # One epoch is one pass over the sampler's 3 super-class pairs x 2 batches by default.
    assert len(used) == 6 and t.iterations_per_epoch == (iterations_per_epoch or 6)
    assert t.dataloader.batch_sampler is used
    # The trainer saw the sampler's batches of this pass, in order, labelled by their class.
    assert seen_indices == used.batches[: t.iterations_per_epoch]
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(0))
    twin = sampler()
    assert seen_indices == list(twin)[: t.iterations_per_epoch]
    for batch, seen in zip(seen_indices, loss.seen_labels):
        assert seen.tolist() == labels[batch, 0].tolist() and len(batch) == 8
    assert not torch.equal(models["trunk"].weight, before)  # it trained


def test_a_plain_sampler_still_gets_batch_size_and_drop_last():
    ds = clustered_dataset()
    sampler = torch.utils.data.SequentialSampler(range(30))  # 30 items: the last 6 are dropped
    loss = RecordingLoss()
    t = metric_trainer(dataset=ds, sampler=sampler, loss_funcs={"metric_loss": loss})
    t.train(num_epochs=1)
    assert t.dataloader.sampler is sampler and t.iterations_per_epoch == 3
    assert loss.seen_sizes == [8, 8, 8]


# subclasses


def test_train_with_classifier_trains_the_classifier_with_its_loss():
    models = make_models()
    models["classifier"] = torch.nn.Linear(EMB, CLASSES)
    before = models["classifier"].weight.detach().clone()
    seen = []
    t = metric_trainer(
        cls=trainers.TrainWithClassifier,
        models=models,
        loss_funcs={"metric_loss": losses.TripletMarginLoss(), "classifier_loss": torch.nn.CrossEntropyLoss()},
        end_of_iteration_hook=lambda tr: seen.append(float(tr.losses["classifier_loss"])),
    )
    t.train(num_epochs=3)
    assert not torch.equal(models["classifier"].weight, before)
    assert all(v > 0 for v in seen) and seen[-1] < seen[0]


def test_train_with_classifier_skips_logits_when_the_classifier_weight_is_zero():
    models = make_models()
    models["classifier"] = torch.nn.Linear(EMB, CLASSES)
    seen = []
    t = metric_trainer(
        cls=trainers.TrainWithClassifier,
        models=models,
        loss_funcs={"metric_loss": losses.TripletMarginLoss(), "classifier_loss": torch.nn.CrossEntropyLoss()},
        loss_weights={"metric_loss": 1, "classifier_loss": 0},
        end_of_iteration_hook=lambda tr: seen.append(tr.losses["classifier_loss"]),
    )
    t.train(num_epochs=1)
    assert seen and all(v == 0 for v in seen)


def test_cascaded_embeddings_gives_each_stage_its_loss_and_chains_hdc_miners():
    models = make_models(out=6)
    models["classifier_1"] = torch.nn.Linear(4, CLASSES)
    hdc = miners.HDCMiner(filter_percentage=0.5)
    calls = []
    original = hdc.set_idx_externally

    def spy(prev, labels):
        calls.append(prev)
        return original(prev, labels)

    hdc.set_idx_externally = spy
    seen = []
    t = metric_trainer(
        cls=trainers.CascadedEmbeddings,
        embedding_sizes=[2, 4],
        models=models,
        loss_funcs={
            "metric_loss_0": losses.ContrastiveLoss(),
            "metric_loss_1": losses.ContrastiveLoss(),
            "classifier_loss_1": torch.nn.CrossEntropyLoss(),
        },
        mining_funcs={"tuple_miner_0": miners.PairMarginMiner(), "tuple_miner_1": hdc},
        end_of_iteration_hook=lambda tr: seen.append({k: float(v) for k, v in tr.losses.items()}),
    )
    t.train(num_epochs=1)
    assert calls and all(isinstance(c, tuple) and len(c) == 4 for c in calls)
    assert any(s["metric_loss_0"] > 0 for s in seen) and any(s["classifier_loss_1"] > 0 for s in seen)
    total = seen[0]["metric_loss_0"] + seen[0]["metric_loss_1"] + seen[0]["classifier_loss_1"]
    assert seen[0]["total_loss"] == pytest.approx(total)


def test_cascaded_embeddings_rejects_subset_batch_miner():
    with pytest.raises(AssertionError, match="mining_funcs"):
        metric_trainer(
            cls=trainers.CascadedEmbeddings,
            embedding_sizes=[4],
            loss_funcs={"metric_loss_0": losses.ContrastiveLoss()},
            mining_funcs={"subset_batch_miner": lambda e, lbl: torch.arange(len(e))},
        )


def daml_trainer(metric_alone_epochs, g_alone_epochs, **kwargs):
    torch.manual_seed(0)
    models = {
        "trunk": torch.nn.Linear(DIM, 6),
        "embedder": torch.nn.Linear(6, EMB),
        "generator": torch.nn.Linear(18, 6),
    }
    return trainers.DeepAdversarialMetricLearning(
        metric_alone_epochs=metric_alone_epochs,
        g_alone_epochs=g_alone_epochs,
        g_triplets_per_anchor=2,
        models=models,
        optimizers=sgd(models),
        batch_size=8,
        loss_funcs={
            "metric_loss": losses.TripletMarginLoss(),
            "synth_loss": losses.TripletMarginLoss(),
            "g_adv_loss": losses.TripletMarginLoss(margin=0.3),
        },
        dataset=clustered_dataset(),
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        progress_bar=False,
        **kwargs,
    )


def test_daml_phases_train_only_the_networks_of_the_phase():
    t = daml_trainer(metric_alone_epochs=1, g_alone_epochs=1)
    snapshots = {}

    def hook(tr):
        snapshots[tr.epoch] = {k: m.weight.detach().clone() for k, m in tr.models.items()}

    t.end_of_epoch_hook = hook
    start = {k: m.weight.detach().clone() for k, m in t.models.items()}
    t.train(num_epochs=3)
    # epoch 1: metric alone, generator untouched
    assert torch.equal(snapshots[1]["generator"], start["generator"])
    assert not torch.equal(snapshots[1]["trunk"], start["trunk"])
    # epoch 2: generator alone
    assert torch.equal(snapshots[2]["trunk"], snapshots[1]["trunk"])
    assert torch.equal(snapshots[2]["embedder"], snapshots[1]["embedder"])
    assert not torch.equal(snapshots[2]["generator"], snapshots[1]["generator"])
    # epoch 3: both
    assert not torch.equal(snapshots[3]["trunk"], snapshots[2]["trunk"])
    assert not torch.equal(snapshots[3]["generator"], snapshots[2]["generator"])


def test_daml_turns_the_adversarial_triplet_loss_around_and_records_every_loss():
    seen = []
    t = daml_trainer(0, 0, end_of_iteration_hook=lambda tr: seen.append(dict(tr.loss_weights)))
    adv = t.loss_funcs["g_adv_loss"]
    assert adv.margin == pytest.approx(-0.3)
    assert type(adv.distance).__name__ == "NegativeLpDistance"
    assert set(t.loss_names) == {"metric_loss", "synth_loss", "g_adv_loss", "g_hard_loss", "g_reg_loss", "total_loss"}
    t.train(num_epochs=1)
    assert all(w["synth_loss"] == 1 and w["g_hard_loss"] == 1 for w in seen)


def test_daml_requires_a_triplet_margin_adversarial_loss():
    torch.manual_seed(0)
    models = {"trunk": torch.nn.Linear(DIM, 6), "generator": torch.nn.Linear(18, 6)}
    with pytest.raises(AssertionError, match="TripletMarginLoss"):
        trainers.DeepAdversarialMetricLearning(
            models=models,
            optimizers=sgd(models),
            batch_size=8,
            loss_funcs={
                "metric_loss": losses.TripletMarginLoss(),
                "synth_loss": losses.TripletMarginLoss(),
                "g_adv_loss": losses.ContrastiveLoss(),
            },
            dataset=clustered_dataset(),
            data_device=torch.device("cpu"),
        )


def test_daml_loss_weights_must_include_the_generator_losses():
    with pytest.raises(AssertionError, match="g_hard_loss"):
        daml_trainer(0, 0, loss_weights={"metric_loss": 1, "synth_loss": 1, "g_adv_loss": 1, "g_reg_loss": 1})


class TwoStreamDataset(torch.utils.data.Dataset):
    def __init__(self):
        self.x, self.y = clustered_dataset().tensors
        self.other = self.x + 0.1 * torch.randn(self.x.shape, generator=torch.Generator().manual_seed(3))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.other[i], self.y[i]


def test_two_stream_metric_loss_uses_anchors_against_the_other_stream():
    seen = []

    class Loss(torch.nn.Module):
        def forward(self, embeddings, labels, indices_tuple=None):
            seen.append((len(embeddings), indices_tuple))
            return losses.TripletMarginLoss()(embeddings, labels, indices_tuple)

    t = metric_trainer(cls=trainers.TwoStreamMetricLoss, dataset=TwoStreamDataset(), loss_funcs={"metric_loss": Loss()})
    t.train(num_epochs=1)
    for n, (a, p, neg) in seen:
        assert n == 16
        assert (a < 8).all() and (p >= 8).all() and (neg >= 8).all()
        # each anchor's own posneg (index a + 8) is a valid positive
        assert ((p - 8) == a).any()


def test_two_stream_metric_loss_with_a_miner_and_only_tuple_miners_allowed():
    t = metric_trainer(
        cls=trainers.TwoStreamMetricLoss,
        dataset=TwoStreamDataset(),
        mining_funcs={"tuple_miner": miners.TripletMarginMiner(margin=1.0)},
    )
    t.train(num_epochs=1)
    with pytest.raises(AssertionError, match="mining_funcs"):
        metric_trainer(
            cls=trainers.TwoStreamMetricLoss,
            dataset=TwoStreamDataset(),
            mining_funcs={"subset_batch_miner": lambda e, lbl: torch.arange(4)},
        )


# ------------------------------------------------------------------------------------------------
# the reference library as oracle: same data order, same init -> same weights


@requires_reference
@pytest.mark.parametrize("name", ["MetricLossOnly", "TrainWithClassifier"])
def test_same_weights_as_the_reference_trainer(name):
    import pytorch_metric_learning.losses as pml_losses
    import pytorch_metric_learning.trainers as pml_trainers

    def run(trainer_module, loss):
        models = make_models(seed=3)
        models["classifier"] = torch.nn.Linear(EMB, CLASSES)
        opt = sgd(models)
        sched = {"trunk_scheduler_by_epoch": torch.optim.lr_scheduler.StepLR(opt["trunk_optimizer"], 1, 0.5)}
        torch.manual_seed(11)
        kwargs = dict(
            models=models,
            optimizers=opt,
            batch_size=8,
            loss_funcs={"metric_loss": loss, "classifier_loss": torch.nn.CrossEntropyLoss()},
            dataset=clustered_dataset(),
            dataloader_num_workers=0,
            data_device=torch.device("cpu"),
            lr_schedulers=sched,
        )
        if name == "MetricLossOnly":
            del kwargs["loss_funcs"]["classifier_loss"]
            del models["classifier"]
            del opt["classifier_optimizer"]
        if trainer_module is trainers:
            kwargs["progress_bar"] = False
        getattr(trainer_module, name)(**kwargs).train(num_epochs=3)
        return {k: m.weight.detach() for k, m in models.items()}

    ours = run(trainers, losses.TripletMarginLoss(margin=0.5))
    theirs = run(pml_trainers, pml_losses.TripletMarginLoss(margin=0.5))
    assert not torch.allclose(ours["trunk"], make_models(seed=3)["trunk"].weight)  # it did train
    for k in ours:
        assert torch.allclose(ours[k], theirs[k], atol=1e-6), k


@requires_reference
def test_same_weights_as_the_reference_trainer_with_m_per_class_sampler(seed_both):
    import pytorch_metric_learning.losses as pml_losses
    import pytorch_metric_learning.samplers as pml_samplers
    import pytorch_metric_learning.trainers as pml_trainers

    from deepmetric.samplers import MPerClassSampler

    def run(trainer_module, sampler_cls, loss):
        models = make_models(seed=4)
        dataset = clustered_dataset(seed=2)
        sampler = sampler_cls(dataset.tensors[1], m=2, batch_size=8, length_before_new_iter=24)
        torch.manual_seed(11)
        kwargs = dict(
            models=models,
            optimizers=sgd(models),
            batch_size=8,
            loss_funcs={"metric_loss": loss},
            dataset=dataset,
            sampler=sampler,
            dataloader_num_workers=0,
            data_device=torch.device("cpu"),
        )
        if trainer_module is trainers:
            kwargs["progress_bar"] = False
        trainer_module.MetricLossOnly(**kwargs).train(num_epochs=3)  # the class order carries over
        return {k: m.weight.detach() for k, m in models.items()}

    seed_both(7)  # one RandomState(7) for each library's sampler
    ours = run(trainers, MPerClassSampler, losses.TripletMarginLoss(margin=0.5))
    theirs = run(pml_trainers, pml_samplers.MPerClassSampler, pml_losses.TripletMarginLoss(margin=0.5))
    assert not torch.allclose(ours["trunk"], make_models(seed=4)["trunk"].weight)
    for k in ours:
        assert torch.allclose(ours[k], theirs[k], atol=1e-6), k


def test_library_numpy_random_is_untouched_by_default():
    # Trainers never replace c_f.NUMPY_RANDOM; samplers keep reading it at call time.
    before = c_f.NUMPY_RANDOM
    metric_trainer(seed=1).train(num_epochs=1)
    assert c_f.NUMPY_RANDOM is before


def test_grad_scaler_path_unscales_before_clipping_and_skips_optimizers_without_grads():
    # A CPU GradScaler exercises the scaling code path that CUDA float16 training uses.
    norms = {}
    for scaled in (False, True):
        models = make_models(seed=2)
        models["classifier"] = torch.nn.Linear(EMB, 2)  # no classifier_loss: never gets a gradient
        seen = []
        t = metric_trainer(
            cls=trainers.TrainWithClassifier,
            models=models,
            gradient_clippers={"trunk_grad_clipper": lambda m=models, s=seen: s.append(float(m["trunk"].weight.grad.norm()))},
        )
        if scaled:
            t.grad_scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        t.train(num_epochs=1)
        norms[scaled] = seen
        assert models["classifier"].weight.grad is None
    assert norms[True] == pytest.approx(norms[False], rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_use_amp_on_cuda_uses_float16_and_a_grad_scaler(tmp_path):
    dtypes = []

    class Loss(torch.nn.Module):
        def forward(self, embeddings, labels, indices_tuple=None):
            dtypes.append(embeddings.dtype)
            return losses.TripletMarginLoss(margin=0.5)(embeddings, labels, indices_tuple)

    models = {k: m.cuda() for k, m in make_models().items()}
    t = metric_trainer(
        models=models,
        use_amp=True,
        data_device=torch.device("cuda"),
        loss_funcs={"metric_loss": Loss()},
        checkpoint_folder=str(tmp_path),
        seed=0,
    )
    assert t.grad_scaler.is_enabled()
    t.train(num_epochs=2)
    assert set(dtypes) == {torch.float16}
    assert all(torch.isfinite(p).all() for m in models.values() for p in m.parameters())
    from deepmetric.training.checkpoint import load_checkpoint

    state, _ = load_checkpoint(str(tmp_path))
    assert state["grad_scaler"]["scale"] > 0 and "cuda" in state["rng"]


@requires_reference
@pytest.mark.parametrize("name", ["TwoStreamMetricLoss", "CascadedEmbeddings"])
def test_same_weights_as_the_reference_for_two_stream_and_cascaded(name):
    import pytorch_metric_learning.losses as pml_losses
    import pytorch_metric_learning.miners as pml_miners
    import pytorch_metric_learning.trainers as pml_trainers

    def run(trainer_module, loss_module, miner_module):
        models = make_models(seed=4, out=6)
        torch.manual_seed(5)
        kwargs = dict(
            models=models,
            optimizers=sgd(models),
            batch_size=8,
            dataloader_num_workers=0,
            data_device=torch.device("cpu"),
        )
        if name == "TwoStreamMetricLoss":
            kwargs.update(
                dataset=TwoStreamDataset(),
                loss_funcs={"metric_loss": loss_module.TripletMarginLoss(margin=0.5)},
                mining_funcs={"tuple_miner": miner_module.TripletMarginMiner(margin=1.0)},
            )
        else:
            kwargs.update(
                embedding_sizes=[2, 4],
                dataset=clustered_dataset(),
                loss_funcs={"metric_loss_0": loss_module.ContrastiveLoss(), "metric_loss_1": loss_module.ContrastiveLoss()},
                mining_funcs={
                    "tuple_miner_0": miner_module.PairMarginMiner(),
                    "tuple_miner_1": miner_module.HDCMiner(filter_percentage=0.5),
                },
            )
        if trainer_module is trainers:
            kwargs["progress_bar"] = False
        getattr(trainer_module, name)(**kwargs).train(num_epochs=2)
        return {k: m.weight.detach() for k, m in models.items()}

    ours = run(trainers, losses, miners)
    theirs = run(pml_trainers, pml_losses, pml_miners)
    assert not torch.allclose(ours["trunk"], make_models(seed=4, out=6)["trunk"].weight)  # it did train
    for k in ours:
        assert torch.allclose(ours[k], theirs[k], atol=1e-6), k
