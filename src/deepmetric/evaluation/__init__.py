"""Measuring an embedding space: the accuracy calculator, exact kNN search, k-means, inference.

Modules (import them directly; this package imports nothing on its own):

* :mod:`.accuracy_calculator`: ``AccuracyCalculator`` (retrieval and clustering metrics);
  :mod:`.relevance` (label matches and counts) and :mod:`.retrieval_metrics` (the per-query
  formulas) are its parts.
* :mod:`.knn`: ``ExactKNN``, exact neighbours in blocks; :mod:`.positive_ranks`, the ranks of
  each query's positives without sorting rows.
* :mod:`.kmeans`: ``TorchKMeans``, faiss' k-means in torch.
* :mod:`.inference`: ``InferenceModel``, ``MatchFinder``, ``FaissKNN``, ``FaissKMeans``,
  ``CustomKNN``.
* :mod:`.verification` (with :mod:`.pair_counts`): ROC/AUC, EER, TAR@FAR, FNMR@FMR and best F1
  over every pair; :mod:`.calibration`: ``calibrate``, the match threshold for a target.
* :mod:`.reid`: CMC, mAP and mINP with per-query gallery exclusion; :mod:`.rerank`:
  k-reciprocal re-ranking, query expansion, database-side augmentation.
* :mod:`.sharded_knn`, :mod:`.sharded_evaluation`: the same search and metrics when every
  process of ``torch.distributed`` holds a shard of the data.

pytorch-metric-learning's paths ``deepmetric.utils.accuracy_calculator`` and
``deepmetric.utils.inference`` re-export these classes.
"""
