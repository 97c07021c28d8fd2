from collections import defaultdict

import numpy as np
import torch

from ..utils import common_functions as c_f
from ..utils.errors import ArgumentError
from .base_tester import BaseTester


class WithSameParentLabelTester(BaseTester):
    """Fine-grained retrieval inside each parent category: label column ``L + 1`` is the parent of
    column ``L``. For each evaluated level and each parent value among the queries, queries and
    references are restricted to that parent; the reported value of a metric is the unweighted
    mean over parents."""

    def do_knn_and_accuracies(
        self, accuracies, embeddings_and_labels, query_split_name, reference_split_names, tag_suffix=""
    ):
        query_emb, query_labels, ref_emb, ref_labels = self.set_reference_and_query(
            embeddings_and_labels, query_split_name, reference_split_names
        )
        self.label_levels = [
            L for L in self.label_levels_to_evaluate(query_labels) if L < query_labels.shape[1] - 1
        ]
        if len(self.label_levels) == 0:
            raise ArgumentError(
                "There are no valid label levels to evaluate: WithSameParentLabelTester needs a parent "
                f"column L+1 for each evaluated level L; the labels have {query_labels.shape[1]} column(s) "
                f"and label_hierarchy_level={self.label_hierarchy_level!r}"
            )
        includes_query = self.ref_includes_query(query_split_name, reference_split_names)
        for level in self.label_levels:
            query_parents = query_labels[:, level + 1]
            ref_parents = ref_labels[:, level + 1]
            per_parent = defaultdict(list)
            for parent in torch.unique(query_parents):
                c_f.LOGGER.info(f"Label level {level} and parent label {parent}")
                q_mask = query_parents == parent
                r_mask = ref_parents == parent
                result = self.accuracy_calculator.get_accuracy(
                    query_emb[q_mask],
                    query_labels[:, level][q_mask],
                    ref_emb[r_mask],
                    ref_labels[:, level][r_mask],
                    includes_query,
                )
                for metric, v in result.items():
                    per_parent[metric].append(v)
            for metric, values in per_parent.items():
                accuracies[self.accuracies_keyname(metric, label_hierarchy_level=level)] = np.mean(values)
        if len(self.label_levels) > 1:
            self.calculate_average_accuracies(
                accuracies, self.accuracy_calculator.get_curr_metrics(), self.label_levels
            )
