import torch
import tqdm

from ..training.dataloaders import get_eval_dataloader
from ..utils import common_functions as c_f
from ..utils.errors import ArgumentError
from .global_embedding_space import GlobalEmbeddingSpaceTester


class GlobalTwoStreamEmbeddingSpaceTester(GlobalEmbeddingSpaceTester):
    """Evaluation for two-stream data (items ``(anchor, posneg, label)``): anchors are the queries,
    the posneg stream is the reference, both with the anchors' labels. Each split is evaluated
    against itself only."""

    def compute_all_embeddings(self, dataloader, trunk_model, embedder_model):
        total = len(dataloader.dataset)
        start = 0
        labels = all_anchors = all_posnegs = None
        with torch.no_grad():
            for batch in tqdm.tqdm(dataloader, disable=not self.progress_bar):
                anchors, posnegs, label = self.data_and_label_getter(batch)
                label = c_f.process_label(label, self.label_hierarchy_level, self.label_mapper)
                a = self.get_embeddings_for_eval(trunk_model, embedder_model, anchors)
                pns = self.get_embeddings_for_eval(trunk_model, embedder_model, posnegs)
                if label.dim() == 1:
                    label = label.unsqueeze(1)
                if labels is None:
                    labels = torch.zeros(total, label.size(1))
                    all_anchors = torch.zeros(total, pns.size(1))
                    all_posnegs = torch.zeros(total, pns.size(1))
                end = start + pns.size(0)
                all_anchors[start:end] = a
                all_posnegs[start:end] = pns
                labels[start:end] = label
                start = end
        if labels is None:
            raise ArgumentError("cannot compute embeddings of an empty dataset")
        return all_anchors, all_posnegs, labels

    def get_all_embeddings(self, dataset, trunk_model, embedder_model, collate_fn):
        dataloader = get_eval_dataloader(
            dataset, self.batch_size, self.dataloader_num_workers, collate_fn
        )
        anchors, posnegs, labels = self.compute_all_embeddings(dataloader, trunk_model, embedder_model)
        anchors, posnegs = self.maybe_normalize(anchors), self.maybe_normalize(posnegs)
        return torch.cat([anchors, posnegs], dim=0), torch.cat([labels, labels], dim=0)

    def set_reference_and_query(self, embeddings_and_labels, query_split_name, reference_split_names):
        if len(reference_split_names) != 1 or reference_split_names[0] != query_split_name:
            raise ArgumentError(
                f"{self.__class__.__name__} does not support different reference and query splits "
                f"(got query {query_split_name!r}, references {reference_split_names})"
            )
        embeddings, labels = embeddings_and_labels[query_split_name]
        half = embeddings.shape[0] // 2
        query_labels = labels[:half]
        return embeddings[:half], query_labels, embeddings[half:], query_labels

    def ref_includes_query(self, query_split_name, reference_split_names):
        return False
