"""Embed whole datasets and measure retrieval on them: the shared machinery of every tester."""

from collections import defaultdict

import torch
import tqdm

from ..training.dataloaders import get_eval_dataloader
from ..utils import common_functions as c_f
from ..utils.errors import ArgumentError, UnknownNameError


class BaseTester:
    """Computes embeddings for each split of a dataset dictionary and hands query/reference pairs
    of them to an AccuracyCalculator (subclasses decide how, in ``do_knn_and_accuracies``).

    ``test(dataset_dict, epoch, trunk, embedder)`` returns
    ``all_accuracies[split][f"{metric}_level{L}"]`` plus ``all_accuracies[split]["epoch"]``.
    The arguments are those of pytorch-metric-learning's testers; ``progress_bar`` (keyword-only,
    our addition) turns the per-split tqdm bar off.
    """

    def __init__(
        self,
        normalize_embeddings=True,
        use_trunk_output=False,
        batch_size=32,
        dataloader_num_workers=2,
        pca=None,
        data_device=None,
        dtype=None,
        data_and_label_getter=None,
        label_hierarchy_level=0,
        end_of_testing_hook=None,
        dataset_labels=None,
        set_min_label_to_zero=False,
        accuracy_calculator=None,
        visualizer=None,
        visualizer_hook=None,
        *,
        progress_bar=True,
    ):
        self.normalize_embeddings = normalize_embeddings
        self.pca = int(pca) if pca else None
        self.use_trunk_output = use_trunk_output
        self.batch_size = int(batch_size)
        self.data_device = c_f.use_cuda_if_available() if data_device is None else data_device
        self.dtype = dtype
        self.dataloader_num_workers = dataloader_num_workers
        if data_and_label_getter is None:
            data_and_label_getter = c_f.return_input
        self.data_and_label_getter = data_and_label_getter
        self.label_hierarchy_level = label_hierarchy_level
        self.end_of_testing_hook = end_of_testing_hook
        self.dataset_labels = dataset_labels
        self.set_min_label_to_zero = set_min_label_to_zero
        self.accuracy_calculator = accuracy_calculator
        self.visualizer = visualizer
        self.original_visualizer_hook = visualizer_hook
        self.progress_bar = progress_bar
        self.initialize_label_mapper()
        self.initialize_accuracy_calculator()
        self.reference_split_names = {}

    def initialize_label_mapper(self):
        self.label_mapper = c_f.LabelMapper(self.set_min_label_to_zero, self.dataset_labels).map

    def initialize_accuracy_calculator(self):
        if self.accuracy_calculator is None:
            # imported here so that testers load even while the calculator's optional parts are absent
            from ..evaluation.accuracy_calculator import AccuracyCalculator

            self.accuracy_calculator = AccuracyCalculator()

    def visualizer_hook(self, *args, **kwargs):
        if self.original_visualizer_hook is not None:
            self.original_visualizer_hook(*args, **kwargs)

    # ------------------------------------------------------------------------------------------
    # embeddings

    def maybe_normalize(self, embeddings):
        if self.pca:
            from ..evaluation.inference import run_pca

            embeddings = run_pca(c_f.torch_standard_scaler(embeddings), self.pca)
        if self.normalize_embeddings:
            embeddings = torch.nn.functional.normalize(embeddings)
        return embeddings

    def compute_all_embeddings(self, dataloader, trunk_model, embedder_model):
        total = len(dataloader.dataset)
        start = 0
        all_q = labels = None
        with torch.no_grad():
            for batch in tqdm.tqdm(dataloader, disable=not self.progress_bar):
                data, label = self.data_and_label_getter(batch)
                label = c_f.process_label(label, "all", self.label_mapper)
                q = self.get_embeddings_for_eval(trunk_model, embedder_model, data)
                if label.dim() == 1:
                    label = label.unsqueeze(1)
                if all_q is None:
                    # filled in place: concatenating a list of batches would double peak memory
                    labels = torch.zeros(total, label.size(1), device=self.data_device, dtype=label.dtype)
                    all_q = torch.zeros(total, q.size(1), device=self.data_device, dtype=q.dtype)
                end = start + q.size(0)
                all_q[start:end] = q
                labels[start:end] = label
                start = end
        if all_q is None:
            raise ArgumentError("cannot compute embeddings of an empty dataset")
        return all_q, labels

    def get_all_embeddings(
        self, dataset, trunk_model, embedder_model=None, collate_fn=None, eval=True, return_as_numpy=False
    ):
        if embedder_model is None:
            embedder_model = torch.nn.Identity()
        if eval:
            trunk_model.eval()
            embedder_model.eval()
        dataloader = get_eval_dataloader(
            dataset, self.batch_size, self.dataloader_num_workers, collate_fn
        )
        embeddings, labels = self.compute_all_embeddings(dataloader, trunk_model, embedder_model)
        embeddings = self.maybe_normalize(embeddings)
        if return_as_numpy:
            return embeddings.cpu().numpy(), labels.cpu().numpy()
        return embeddings, labels

    def get_embeddings_for_eval(self, trunk_model, embedder_model, input_imgs):
        input_imgs = c_f.to_device(input_imgs, device=self.data_device, dtype=self.dtype)
        trunk_output = trunk_model(input_imgs)
        if self.use_trunk_output:
            return trunk_output
        return embedder_model(trunk_output)

    def maybe_visualize(self, embeddings_and_labels, epoch):
        if not self.visualizer:
            return
        name = self.visualizer.__class__.__name__
        for split_name, (embeddings, labels) in embeddings_and_labels.items():
            c_f.LOGGER.info(f"Running {name} on the {split_name} set")
            dim_reduced = self.visualizer.fit_transform(embeddings.cpu().numpy())
            c_f.LOGGER.info(f"Finished {name}")
            for level in self.label_levels_to_evaluate(labels):
                label_scheme = labels[:, level].cpu().numpy()
                keyname = self.accuracies_keyname(name, label_hierarchy_level=level)
                self.visualizer_hook(self.visualizer, dim_reduced, label_scheme, split_name, keyname, epoch)

    # ------------------------------------------------------------------------------------------
    # names and label levels

    def description_suffixes(self, base_name):
        if self.pca:
            base_name += f"_pca{self.pca}"
        if self.normalize_embeddings:
            base_name += "_normalized"
        if self.use_trunk_output:
            base_name += "_trunk"
        base_name += "_" + self.__class__.__name__
        base_name += "_level_" + self.label_hierarchy_level_to_str(self.label_hierarchy_level)
        descriptor = self.accuracy_calculator.description()
        if descriptor != "":
            base_name += "_" + descriptor
        return base_name

    def label_hierarchy_level_to_str(self, label_hierarchy_level):
        if c_f.is_list_or_tuple(label_hierarchy_level):
            return "_".join(str(x) for x in label_hierarchy_level)
        return str(label_hierarchy_level)

    def accuracies_keyname(self, metric, label_hierarchy_level=0, average=False):
        if average:
            return f"AVERAGE_{metric}"
        several = label_hierarchy_level == "all" or c_f.is_list_or_tuple(label_hierarchy_level)
        if several and len(self.label_levels) == 1:
            label_hierarchy_level = self.label_levels[0]
        return f"{metric}_level{self.label_hierarchy_level_to_str(label_hierarchy_level)}"

    def label_levels_to_evaluate(self, query_labels):
        available = query_labels.shape[1]
        level = self.label_hierarchy_level
        if level == "all":
            return range(available)
        if isinstance(level, int):
            if level >= available:
                raise ArgumentError(
                    f"label_hierarchy_level={level} but the labels have only {available} column(s)"
                )
            return [level]
        if c_f.is_list_or_tuple(level):
            if max(level) >= available:
                raise ArgumentError(
                    f"label_hierarchy_level={level} but the labels have only {available} column(s)"
                )
            return level
        raise ArgumentError(f"label_hierarchy_level must be an int, a list of ints or 'all', got {level!r}")

    def calculate_average_accuracies(self, accuracies, metrics, label_levels):
        for m in metrics:
            total = sum(accuracies[self.accuracies_keyname(m, label_hierarchy_level=L)] for L in label_levels)
            accuracies[self.accuracies_keyname(m, average=True)] = total / len(label_levels)

    # ------------------------------------------------------------------------------------------
    # splits

    def maybe_combine_splits(self, embeddings_and_labels, splits):
        embeddings = torch.cat([embeddings_and_labels[s][0] for s in splits], dim=0)
        labels = torch.cat([embeddings_and_labels[s][1] for s in splits], dim=0)
        return embeddings, labels

    def set_reference_and_query(self, embeddings_and_labels, query_split_name, reference_split_names):
        query_embeddings, query_labels = embeddings_and_labels[query_split_name]
        reference_embeddings, reference_labels = self.maybe_combine_splits(
            embeddings_and_labels, reference_split_names
        )
        return query_embeddings, query_labels, reference_embeddings, reference_labels

    def get_splits_to_compute_embeddings(self, dataset_dict, splits_to_eval):
        if splits_to_eval is None:
            splits_to_eval = [(k, [k]) for k in dataset_dict]
        query_splits = [t[0] for t in splits_to_eval]
        if len(query_splits) != len(set(query_splits)):
            raise ArgumentError(
                f"Unsupported: Evaluating a query split more than once (splits_to_eval={splits_to_eval})"
            )
        needed = []
        for i, (query_split, reference_splits) in enumerate(splits_to_eval):
            for name in [*reference_splits, query_split]:
                if name not in dataset_dict:
                    raise UnknownNameError(
                        f"splits_to_eval names split {name!r}, which is not in dataset_dict "
                        f"(splits: {list(dataset_dict)})"
                    )
                if name not in needed:
                    needed.append(name)
            if query_split in reference_splits:
                # the calculator drops self-matches by position: the query must come first
                reference_splits.remove(query_split)
                splits_to_eval[i] = (query_split, [query_split] + reference_splits)
        return splits_to_eval, needed

    def get_all_embeddings_for_all_splits(
        self, dataset_dict, trunk_model, embedder_model, splits_to_compute_embeddings, collate_fn
    ):
        embeddings_and_labels = {}
        for split_name in splits_to_compute_embeddings:
            c_f.LOGGER.info(f"Getting embeddings for the {split_name} split")
            embeddings_and_labels[split_name] = self.get_all_embeddings(
                dataset_dict[split_name], trunk_model, embedder_model, collate_fn
            )
        return embeddings_and_labels

    def do_knn_and_accuracies(
        self, accuracies, embeddings_and_labels, query_split_name, reference_split_names
    ):
        raise NotImplementedError

    def ref_includes_query(self, query_split_name, reference_split_names):
        return query_split_name in reference_split_names

    def test(
        self, dataset_dict, epoch, trunk_model, embedder_model=None, splits_to_eval=None, collate_fn=None
    ):
        c_f.LOGGER.info(f"Evaluating epoch {epoch}")
        if embedder_model is None:
            embedder_model = torch.nn.Identity()
        trunk_model.eval()
        embedder_model.eval()
        splits_to_eval, to_compute = self.get_splits_to_compute_embeddings(dataset_dict, splits_to_eval)
        self.embeddings_and_labels = self.get_all_embeddings_for_all_splits(
            dataset_dict, trunk_model, embedder_model, to_compute, collate_fn
        )
        self.maybe_visualize(self.embeddings_and_labels, epoch)
        self.all_accuracies = defaultdict(dict)
        for query_split_name, reference_split_names in splits_to_eval:
            c_f.LOGGER.info(
                f"Computing accuracy for the {query_split_name} split w.r.t {reference_split_names}"
            )
            self.all_accuracies[query_split_name]["epoch"] = epoch
            self.reference_split_names[query_split_name] = reference_split_names
            self.do_knn_and_accuracies(
                self.all_accuracies[query_split_name],
                self.embeddings_and_labels,
                query_split_name,
                reference_split_names,
            )
        if self.end_of_testing_hook:
            self.end_of_testing_hook(self)
        else:
            c_f.LOGGER.info(self.all_accuracies)
        del self.embeddings_and_labels
        return self.all_accuracies
