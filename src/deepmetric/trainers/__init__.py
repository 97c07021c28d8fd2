"""Training loops (``trainer.train(num_epochs=...)``) with hooks, schedulers and checkpoints."""

from .base_trainer import BaseTrainer
from .cascaded_embeddings import CascadedEmbeddings
from .deep_adversarial_metric_learning import DeepAdversarialMetricLearning
from .metric_loss_only import MetricLossOnly
from .train_with_cached_batches import TrainWithCachedBatches
from .train_with_classifier import TrainWithClassifier
from .twostream_metric_loss import TwoStreamMetricLoss

__all__ = [
    "BaseTrainer",
    "CascadedEmbeddings",
    "DeepAdversarialMetricLearning",
    "MetricLossOnly",
    "TrainWithCachedBatches",
    "TrainWithClassifier",
    "TwoStreamMetricLoss",
]
