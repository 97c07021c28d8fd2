from .base_tester import BaseTester


class GlobalEmbeddingSpaceTester(BaseTester):
    """k-NN retrieval of every query against the whole reference set, per label level; with
    several levels also ``AVERAGE_<metric>`` over them."""

    def do_knn_and_accuracies(
        self, accuracies, embeddings_and_labels, query_split_name, reference_split_names
    ):
        query_emb, query_labels, ref_emb, ref_labels = self.set_reference_and_query(
            embeddings_and_labels, query_split_name, reference_split_names
        )
        self.label_levels = self.label_levels_to_evaluate(query_labels)
        includes_query = self.ref_includes_query(query_split_name, reference_split_names)
        for level in self.label_levels:
            result = self.accuracy_calculator.get_accuracy(
                query_emb, query_labels[:, level], ref_emb, ref_labels[:, level], includes_query
            )
            for metric, v in result.items():
                accuracies[self.accuracies_keyname(metric, label_hierarchy_level=level)] = v
        if len(self.label_levels) > 1:
            self.calculate_average_accuracies(
                accuracies, self.accuracy_calculator.get_curr_metrics(), self.label_levels
            )
