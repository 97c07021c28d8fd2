import copy

import torch

from ..distances import LpDistance
from ..losses import TripletMarginLoss
from ..miners import EmbeddingsAlreadyPackagedAsTriplets
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.errors import ArgumentError
from .train_with_classifier import TrainWithClassifier


class NegativeLpDistance(LpDistance):
    """``-LpDistance``: a triplet loss on it with a negated margin rewards a *small* gap between
    the anchor-negative and anchor-positive distances, i.e. hard synthetic negatives."""

    def compute_mat(self, query_emb, ref_emb):
        return -super().compute_mat(query_emb, ref_emb)

    def pairwise_distance(self, query_emb, ref_emb):
        return -super().pairwise_distance(query_emb, ref_emb)


class DeepAdversarialMetricLearning(TrainWithClassifier):
    """Deep adversarial metric learning (Duan et al., "Deep Adversarial Metric Learning", CVPR 2018).

    A ``generator`` maps the trunk outputs of a triplet ``(a, p, n)`` to a synthetic negative
    ``s``; the metric model then also learns from ``(a, p, s)``. Generator objective:
    ``g_hard_loss = mse(norm(s), norm(a))`` (close to the anchor), ``g_reg_loss = mse(norm(s), norm(n))``
    (still like the real negative) and ``g_adv_loss`` (a TripletMarginLoss turned adversarial: margin
    negated, distance negated). Epochs ``1..metric_alone_epochs`` train only the metric model, the
    next ``g_alone_epochs`` only the generator, then both (adding ``synth_loss`` on ``(a, p, s)``).
    """

    def __init__(self, metric_alone_epochs=0, g_alone_epochs=0, g_triplets_per_anchor=100, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.original_loss_weights = copy.deepcopy(self.loss_weights)
        self.metric_alone_epochs = metric_alone_epochs
        self.g_alone_epochs = g_alone_epochs
        adv = self.loss_funcs["g_adv_loss"]
        if not isinstance(adv, TripletMarginLoss):
            raise ArgumentError(
                f"loss_funcs['g_adv_loss'] must be a TripletMarginLoss, got {type(adv).__name__}"
            )
        adv.margin *= -1
        adv.distance = NegativeLpDistance()
        self.g_triplets_per_anchor = g_triplets_per_anchor

    def custom_setup(self):
        self.mining_funcs["synth_packaged_as_triplets"] = EmbeddingsAlreadyPackagedAsTriplets()
        self.loss_names += ["g_hard_loss", "g_reg_loss"]

    def calculate_loss(self, curr_batch):
        data, labels = curr_batch
        penultimate_embeddings = self.get_trunk_output(data)
        if self.do_metric:
            embeddings = self.get_final_embeddings(penultimate_embeddings)
            indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
            self.losses["metric_loss"] = self.loss_funcs["metric_loss"](embeddings, labels, indices_tuple)
            logits = self.maybe_get_logits(embeddings)
            self.losses["classifier_loss"] = self.maybe_get_classifier_loss(logits, labels)
        if self.do_adv:
            self.calculate_synth_loss(penultimate_embeddings, labels)

    def update_loss_weights(self):
        self.do_metric_alone = self.epoch <= self.metric_alone_epochs
        last_adv_alone = self.metric_alone_epochs + self.g_alone_epochs
        self.do_adv_alone = self.metric_alone_epochs < self.epoch <= last_adv_alone
        self.do_both = not self.do_adv_alone and not self.do_metric_alone
        self.do_adv = self.do_adv_alone or self.do_both
        self.do_metric = self.do_metric_alone or self.do_both
        enabled = []
        if self.do_adv:
            enabled += ["g_hard_loss", "g_reg_loss", "g_adv_loss"]
        if self.do_metric:
            enabled += ["metric_loss", "classifier_loss"]
        if self.do_both:
            enabled += ["synth_loss"]
        for k in self.loss_weights:
            self.loss_weights[k] = self.original_loss_weights[k] if k in enabled else 0
        self.maybe_exclude_networks_from_gradient()

    def maybe_exclude_networks_from_gradient(self):
        self.set_to_train()
        if self.do_adv_alone:
            no_grad = ["trunk", "classifier"]
        elif self.do_metric_alone:
            no_grad = ["generator"]
        else:
            no_grad = []
        for k, model in self.models.items():
            if k in no_grad:
                c_f.set_requires_grad(model, requires_grad=False)
                model.eval()
            else:
                c_f.set_requires_grad(model, requires_grad=True)

    def step_optimizers(self):
        to_step = []
        if self.do_metric:
            to_step += ["trunk_optimizer", "embedder_optimizer", "classifier_optimizer"]
        if self.do_adv:
            to_step += ["generator_optimizer"]
        for k, optimizer in self.optimizers.items():
            if k in to_step:
                self.step_optimizer(optimizer)

    def calculate_synth_loss(self, penultimate_embeddings, labels):
        a, p, n = lmu.convert_to_triplets(None, labels, t_per_anchor=self.g_triplets_per_anchor)
        real_anchors = penultimate_embeddings[a]
        real_positives = penultimate_embeddings[p]
        real_negatives = penultimate_embeddings[n]
        generator_input = torch.cat([real_anchors, real_positives, real_negatives], dim=1)
        generator_input = c_f.to_device(generator_input, device=self.data_device)
        synthetic_negatives = self.models["generator"](generator_input)
        # rows a0, p0, s0, a1, p1, s1, ...: consecutive triplets, as the packaged-triplet miner expects
        interleaved = c_f.unslice_by_n([real_anchors, real_positives, synthetic_negatives])
        final_embeddings = self.get_final_embeddings(interleaved)
        labels = torch.stack([labels[a], labels[p], labels[n]], dim=1).reshape(-1).cpu()
        indices_tuple = self.mining_funcs["synth_packaged_as_triplets"](final_embeddings, labels)
        if self.do_both:
            self.losses["synth_loss"] = self.loss_funcs["synth_loss"](final_embeddings, labels, indices_tuple)
        self.losses["g_adv_loss"] = self.loss_funcs["g_adv_loss"](final_embeddings, labels, indices_tuple)
        normalized_synth = torch.nn.functional.normalize(synthetic_negatives, p=2, dim=1)
        self.losses["g_hard_loss"] = torch.nn.functional.mse_loss(
            normalized_synth, torch.nn.functional.normalize(real_anchors, p=2, dim=1)
        )
        self.losses["g_reg_loss"] = torch.nn.functional.mse_loss(
            normalized_synth, torch.nn.functional.normalize(real_negatives, p=2, dim=1)
        )

    def modify_schema(self):
        super().modify_schema()
        self.schema["models"].keys += ["generator"]
        self.schema["models"].essential += ["generator"]
        self.schema["loss_funcs"].keys += ["synth_loss", "g_adv_loss"]
        self.schema["loss_funcs"].essential += ["synth_loss", "g_adv_loss"]
        self.schema["mining_funcs"].keys += ["synth_packaged_as_triplets"]
