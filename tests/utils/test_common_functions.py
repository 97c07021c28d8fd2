"""Tests of deepmetric.utils.common_functions (c_f): module globals and every public helper."""

import logging
import os
import sqlite3

import numpy as np
import pytest
import torch

from deepmetric.distances import CosineSimilarity, DotProductSimilarity, LpDistance
from deepmetric.utils import common_functions as c_f
from deepmetric.utils.errors import ArgumentError, require

SPEC_NAMES = [
    "LOGGER_NAME", "LOGGER", "NUMPY_RANDOM", "COLLECT_STATS", "set_logger_name", "pos_inf",
    "neg_inf", "small_val", "is_list_or_tuple", "try_next_on_generator", "numpy_to_torch",
    "to_numpy", "get_hierarchy_label", "map_labels", "process_label", "set_requires_grad",
    "shift_indices_tuple", "safe_random_choice", "unslice_by_n", "set_layers_to_eval",
    "get_train_dataloader", "get_eval_dataloader", "get_labels_to_indices",
    "make_label_to_rank_dict", "get_label_map", "LabelMapper", "add_to_recordable_attributes",
    "reset_stats", "list_of_recordable_attributes_list_names", "modelpath_creator", "save_model",
    "load_model", "operate_on_dict_of_models", "save_dict_of_models", "load_dict_of_models",
    "delete_dict_of_models", "regex_wrapper", "regex_replace", "latest_version", "return_input",
    "check_shapes", "assert_distance_type", "torch_arange_from_size", "TorchInitWrapper",
    "EmbeddingDataset", "sqlite_obj_to_dict", "torch_all_from_dim_to_end",
    "torch_standard_scaler", "to_dtype", "to_device", "set_ref_emb", "labels_not_supported",
    "ref_not_supported", "indices_tuple_not_supported", "labels_required",
    "labels_or_indices_tuple_required", "concatenate_indices_tuples", "exclude", "append_map",
    "use_cuda_if_available",
]


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_every_spec_name_exists(name):
    assert hasattr(c_f, name)


# ---------------------------------------------------------------------------------------------
# module globals


def test_global_defaults():
    assert c_f.LOGGER_NAME == "PML"
    assert c_f.LOGGER is logging.getLogger("PML")
    assert c_f.COLLECT_STATS is False


def test_numpy_random_is_read_at_call_time(monkeypatch):
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(0))
    first = c_f.safe_random_choice(np.arange(100), 10)
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(0))
    second = c_f.safe_random_choice(np.arange(100), 10)
    np.testing.assert_array_equal(first, second)
    expected = np.random.RandomState(0).choice(np.arange(100), size=10, replace=False)
    np.testing.assert_array_equal(first, expected)


def test_safe_random_choice_without_replacement_when_possible(monkeypatch):
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(1))
    out = c_f.safe_random_choice(np.arange(5), 5)
    assert sorted(out.tolist()) == [0, 1, 2, 3, 4]
    out = c_f.safe_random_choice(np.arange(3), 7)  # more than available: with replacement
    assert len(out) == 7 and set(out.tolist()) <= {0, 1, 2}


def test_set_logger_name_changes_logger(monkeypatch, caplog):
    monkeypatch.setattr(c_f, "LOGGER_NAME", c_f.LOGGER_NAME)
    monkeypatch.setattr(c_f, "LOGGER", c_f.LOGGER)
    c_f.set_logger_name("deepmetric_test_logger")
    assert c_f.LOGGER_NAME == "deepmetric_test_logger"
    assert c_f.LOGGER is logging.getLogger("deepmetric_test_logger")
    # Library code logs through the module attribute, so it follows the rename.
    with caplog.at_level(logging.WARNING, logger="deepmetric_test_logger"):
        c_f.operate_on_dict_of_models({"m": 0}, None, "/nonexistent", _raise_ioerror, "SAVE")
    assert [r.name for r in caplog.records] == ["deepmetric_test_logger"]


def _raise_ioerror(obj, path):
    raise OSError("disk full")


# ---------------------------------------------------------------------------------------------
# small helpers


@pytest.mark.parametrize("dt", [torch.float16, torch.float32, torch.float64])
def test_sentinels_are_finite_extremes(dt):
    assert c_f.pos_inf(dt) == torch.finfo(dt).max
    assert c_f.neg_inf(dt) == torch.finfo(dt).min
    assert c_f.small_val(dt) == torch.finfo(dt).tiny
    assert np.isfinite(c_f.pos_inf(dt)) and np.isfinite(c_f.neg_inf(dt))


def test_is_list_or_tuple():
    assert c_f.is_list_or_tuple([1]) and c_f.is_list_or_tuple((1,))
    assert not c_f.is_list_or_tuple(torch.tensor([1])) and not c_f.is_list_or_tuple("ab")


def test_try_next_on_generator_restarts():
    data = [1, 2]
    gen = iter(data)
    gen, x1 = c_f.try_next_on_generator(gen, data)
    gen, x2 = c_f.try_next_on_generator(gen, data)
    gen, x3 = c_f.try_next_on_generator(gen, data)
    assert (x1, x2, x3) == (1, 2, 1)


def test_numpy_torch_conversions():
    t = c_f.numpy_to_torch(np.array([1, 2]))
    assert torch.is_tensor(t) and t.tolist() == [1, 2]
    assert c_f.numpy_to_torch([1, 2]) == [1, 2]  # not an array: unchanged
    assert isinstance(c_f.to_numpy(torch.tensor([1.0])), np.ndarray)
    assert c_f.to_numpy([3]) == [3]


def test_return_input_and_exclude_and_append_map():
    obj = object()
    assert c_f.return_input(obj) is obj
    assert c_f.exclude(["a", "b", "c"], ["b"]) == ["a", "c"]
    assert c_f.append_map(["a", "b"], "_x") == ["a_x", "b_x"]


def test_torch_helpers():
    x = torch.zeros(3, 2)
    assert c_f.torch_arange_from_size(x).tolist() == [0, 1, 2]
    assert c_f.torch_arange_from_size(x, 1).tolist() == [0, 1]
    b = torch.tensor([[[True, True], [True, True]], [[True, False], [True, True]]])
    assert c_f.torch_all_from_dim_to_end(b, 1).tolist() == [True, False]
    d = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    # mean (2, 20); unbiased std: sqrt(2) and sqrt(200)
    expected = torch.tensor([[-1 / 2**0.5, -10 / 200**0.5], [1 / 2**0.5, 10 / 200**0.5]])
    torch.testing.assert_close(c_f.torch_standard_scaler(d), expected)
    assert c_f.use_cuda_if_available().type in ("cuda", "cpu")


def test_to_dtype_and_to_device(dtype):
    x = torch.ones(2, dtype=torch.float16)
    assert c_f.to_dtype(x, dtype=dtype).dtype == dtype
    assert c_f.to_dtype(x, tensor=torch.zeros(1, dtype=dtype)).dtype == dtype
    same = torch.ones(2, dtype=dtype)
    assert c_f.to_dtype(same, dtype=dtype) is same
    assert c_f.to_device(same, tensor=torch.zeros(1)) is same
    assert c_f.to_device(x, device=torch.device("cpu"), dtype=dtype).dtype == dtype


def test_to_dtype_is_noop_under_autocast(monkeypatch):
    # The spec's condition is torch.is_autocast_enabled() (the CUDA autocast flag, as in the
    # reference); simulate it so the test runs without a GPU.
    x = torch.ones(2, dtype=torch.float32)
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *args: True)
    assert c_f.to_dtype(x, dtype=torch.float64) is x
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *args: False)
    assert c_f.to_dtype(x, dtype=torch.float64).dtype == torch.float64


def test_concatenate_indices_tuples():
    it1 = (torch.tensor([0]), torch.tensor([1]))
    it2 = (torch.tensor([2, 3]), torch.tensor([4, 5]))
    out = c_f.concatenate_indices_tuples(it1, it2)
    assert [x.tolist() for x in out] == [[0, 2, 3], [1, 4, 5]]


# ---------------------------------------------------------------------------------------------
# labels


def test_get_hierarchy_label():
    labels = np.array([[1, 10], [2, 20], [3, 30]])
    assert c_f.get_hierarchy_label(labels, "all") is labels
    assert c_f.get_hierarchy_label(labels, 1).tolist() == [10, 20, 30]
    assert c_f.get_hierarchy_label(labels, 0).tolist() == [1, 2, 3]
    assert c_f.get_hierarchy_label(labels, [1, 0]).tolist() == [[10, 1], [20, 2], [30, 3]]
    flat = np.array([4, 5])
    assert c_f.get_hierarchy_label(flat, 0) is flat
    with pytest.raises(AssertionError):
        c_f.get_hierarchy_label(flat, 1)  # level 1 needs 2-D labels
    with pytest.raises(ValueError, match="hierarchy_level"):
        c_f.get_hierarchy_label(labels, 2)  # only 2 columns


def test_map_labels_and_process_label():
    def plus_level(x, h):
        return x + 100 * h

    assert c_f.map_labels(plus_level, torch.tensor([1, 2])).tolist() == [1, 2]
    two_d = c_f.map_labels(plus_level, [np.array([1, 2]), np.array([3, 4])])  # columns
    assert two_d.tolist() == [[1, 103], [2, 104]]
    assert two_d.dtype.kind == "i"
    out = c_f.process_label(torch.tensor([[1, 3], [2, 4]]), 1, plus_level)
    assert torch.is_tensor(out) and out.tolist() == [103, 104] and out.device.type == "cpu"


def test_get_labels_to_indices():
    d = c_f.get_labels_to_indices(torch.tensor([5, 3, 5, 7]))
    assert d[5].tolist() == [0, 2] and d[3].tolist() == [1] and d[7].tolist() == [3]
    assert isinstance(d[5], np.ndarray)


def test_get_labels_to_indices_keeps_the_order_of_first_appearance():
    d = c_f.get_labels_to_indices(["b", "a", "b", "c", "a"])
    assert list(d) == ["b", "a", "c"] and d["a"].tolist() == [1, 4]


@pytest.mark.parametrize("seed", range(3))
def test_safe_random_choice_and_labels_to_indices_equal_the_reference(seed_both, seed):
    from pytorch_metric_learning.utils import common_functions as ref

    seed_both(seed)
    for data, size in ((np.arange(10), 4), ([3, 1, 2], 7), (torch.arange(6), 6), (np.array([5]), 2)):
        ours = c_f.safe_random_choice(data, size)
        assert np.array_equal(ours, ref.safe_random_choice(data, size)) and len(ours) == size
    labels = np.random.RandomState(seed).randint(-3, 9, size=40)
    for given in (labels, labels.tolist(), torch.from_numpy(labels), labels.astype(str)):
        ours, theirs = c_f.get_labels_to_indices(given), ref.get_labels_to_indices(given)
        assert list(ours) == list(theirs)
        assert all(np.array_equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype for k in ours)


def test_make_label_to_rank_dict():
    assert c_f.make_label_to_rank_dict([13, 5, 12, 10]) == {5: 0, 10: 1, 12: 2, 13: 3}
    assert c_f.make_label_to_rank_dict(["dog", "cat", "monkey"]) == {"cat": 0, "dog": 1, "monkey": 2}
    with pytest.raises(ValueError):
        c_f.make_label_to_rank_dict([1, 2, 2])


def test_get_label_map_two_columns():
    m = c_f.get_label_map(np.array([[5, 1], [10, 1], [5, 0]]))
    assert m == {0: {5: 0, 10: 1}, 1: {0: 0, 1: 1}}


def test_label_mapper_spec_examples():
    mapper = c_f.LabelMapper(set_min_label_to_zero=True, dataset_labels=[5, 10, 12, 13, 5])
    assert mapper.map(np.array([13, 5, 10, 12]), 0).tolist() == [3, 0, 1, 2]
    strings = c_f.LabelMapper(True, np.array(["dog", "cat", "monkey"]))
    assert strings.map(["cat", "dog", "monkey"], 0).tolist() == [0, 1, 2]
    identity = c_f.LabelMapper(set_min_label_to_zero=False)
    labels = np.array([7, 9])
    assert identity.map(labels, 0) is labels
    with pytest.raises(AttributeError):
        c_f.LabelMapper(set_min_label_to_zero=True).map(labels, 0)


# ---------------------------------------------------------------------------------------------
# indices


def test_shift_indices_tuple():
    t3 = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    assert [x.tolist() for x in c_f.shift_indices_tuple(t3, 10)] == [[0], [11], [12]]
    t4 = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]), torch.tensor([3]))
    assert [x.tolist() for x in c_f.shift_indices_tuple(t4, 10)] == [[0], [11], [2], [13]]
    empty = (torch.tensor([0]), torch.tensor([], dtype=torch.long), torch.tensor([2]))
    assert [x.tolist() for x in c_f.shift_indices_tuple(empty, 5)] == [[0], [], [7]]
    t2 = (torch.tensor([0]), torch.tensor([1]))
    assert c_f.shift_indices_tuple(t2, 5) is t2


def test_unslice_by_n():
    a = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    b = torch.tensor([[10.0, 10.0], [20.0, 20.0]])
    c = torch.tensor([[100.0, 100.0], [200.0, 200.0]])
    out = c_f.unslice_by_n([a, b, c])
    assert out[:, 0].tolist() == [1, 10, 100, 2, 20, 200]  # row i*n + j = tensors[j][i]
    assert out.dtype == torch.float32


def test_set_requires_grad_and_set_layers_to_eval():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    c_f.set_requires_grad(model, False)
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    model.apply(c_f.set_layers_to_eval("BatchNorm"))
    assert model[0].training and not model[1].training


def test_dataloaders():
    ds = c_f.EmbeddingDataset(torch.arange(10.0).unsqueeze(1), torch.arange(10))
    assert len(ds) == 10
    emb, label = ds[3]
    assert emb.tolist() == [3.0] and int(label) == 3
    train = c_f.get_train_dataloader(ds, 4, None, 0, None)
    assert train.drop_last and len(train) == 2
    batch_sampler = torch.utils.data.BatchSampler(range(10), 3, drop_last=False)
    train_bs = c_f.get_train_dataloader(ds, 4, batch_sampler, 0, None)
    assert train_bs.batch_sampler is batch_sampler and len(train_bs) == 4
    ev = c_f.get_eval_dataloader(ds, 4.0, 0, None)
    batches = [b[1].tolist() for b in ev]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # ordered, last batch kept


# ---------------------------------------------------------------------------------------------
# recordable attributes


def test_add_to_recordable_attributes_and_reset_stats():
    class Obj:
        pass

    obj = Obj()
    obj.margin = 0.5
    c_f.add_to_recordable_attributes(obj, name="margin")
    assert obj._record_these == ["margin"] and obj.margin == 0.5  # existing value kept
    c_f.add_to_recordable_attributes(obj, name="margin")
    assert obj._record_these == ["margin"]  # not duplicated
    c_f.add_to_recordable_attributes(obj, list_of_names=["n_pos", "n_neg"], is_stat=True)
    assert obj._record_these_stats == ["n_pos", "n_neg"] and obj.n_pos == 0
    obj.n_pos, obj.n_neg = 4, 5
    c_f.reset_stats(obj)
    assert (obj.n_pos, obj.n_neg, obj.margin) == (0, 0, 0.5)
    assert c_f.list_of_recordable_attributes_list_names() == ["_record_these", "_record_these_stats"]


# ---------------------------------------------------------------------------------------------
# saving and loading


def test_modelpath_creator():
    assert c_f.modelpath_creator("f", "trunk", None) == os.path.join("f", "trunk.pth")
    assert c_f.modelpath_creator("f", "trunk", 3) == os.path.join("f", "trunk_3.pth")
    assert c_f.modelpath_creator("f", "trunk", "best2", ".pt") == os.path.join("f", "trunk_best2.pt")


def test_latest_version(tmp_path):
    assert c_f.latest_version(str(tmp_path)) == (0, None)
    for name in ["trunk_1.pth", "trunk_12.pth", "trunk_best7.pth", "trunk_x.pth", "embedder_50.pth"]:
        (tmp_path / name).write_bytes(b"")
    assert c_f.latest_version(str(tmp_path)) == (12, 12)
    assert c_f.latest_version(str(tmp_path), best=True) == (7, "best7")
    assert c_f.latest_version(str(tmp_path), "embedder_*.pth") == (50, 50)
    (tmp_path / "trunk_best30.pth").write_bytes(b"")
    assert c_f.latest_version(str(tmp_path)) == (30, 30)  # non-best mode also sees best files


def test_save_and_load_dict_of_models_round_trip(tmp_path):
    torch.manual_seed(0)
    src = {"trunk": torch.nn.Linear(3, 2), "embedder": torch.nn.Linear(2, 2)}
    c_f.save_dict_of_models(src, 5, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["embedder_5.pth", "trunk_5.pth"]
    dst = {"trunk": torch.nn.Linear(3, 2), "embedder": torch.nn.Linear(2, 2)}
    c_f.load_dict_of_models(dst, 5, str(tmp_path), "cpu")
    for k, model in src.items():
        for p, q in zip(model.parameters(), dst[k].parameters()):
            torch.testing.assert_close(p, q)
    c_f.delete_dict_of_models(src, 5, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_save_model_unwraps_data_parallel(tmp_path):
    model = torch.nn.Linear(2, 1)
    c_f.save_model(torch.nn.DataParallel(model), str(tmp_path / "a.pth"))
    assert set(torch.load(str(tmp_path / "a.pth"))) == {"weight", "bias"}


def test_load_strips_module_prefix(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    # A file written from a DataParallel wrapper's own state_dict has "module." keys.
    torch.save(torch.nn.DataParallel(model).state_dict(), str(tmp_path / "trunk_3.pth"))
    fresh = {"trunk": torch.nn.Linear(2, 1)}
    c_f.load_dict_of_models(fresh, 3, str(tmp_path), "cpu")
    torch.testing.assert_close(fresh["trunk"].weight, model.weight)
    torch.testing.assert_close(fresh["trunk"].bias, model.bias)


def test_load_strips_prefix_on_key_error(tmp_path):
    model = torch.nn.Linear(2, 1)
    torch.save(torch.nn.DataParallel(model).state_dict(), str(tmp_path / "b.pth"))
    fresh = torch.nn.Linear(2, 1)

    class IndexesKeys:
        # an object whose load_state_dict indexes the keys it needs (KeyError when absent)
        def load_state_dict(self, state):
            fresh.load_state_dict({"weight": state["weight"], "bias": state["bias"]})

    c_f.load_model(IndexesKeys(), str(tmp_path / "b.pth"), "cpu")
    torch.testing.assert_close(fresh.weight, model.weight)


def test_load_reraises_unrelated_mismatch(tmp_path):
    torch.save(torch.nn.Linear(2, 1).state_dict(), str(tmp_path / "c.pth"))
    with pytest.raises(RuntimeError):
        c_f.load_model(torch.nn.Linear(3, 1), str(tmp_path / "c.pth"), "cpu")


def test_operate_on_dict_of_models_io_errors(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=c_f.LOGGER_NAME):
        c_f.operate_on_dict_of_models({"m": 0}, 1, str(tmp_path), _raise_ioerror, "LOAD")
    assert "Could not LOAD" in caplog.text and "m_1.pth" in caplog.text
    with pytest.raises(IOError):
        c_f.operate_on_dict_of_models(
            {"m": 0}, 1, str(tmp_path), _raise_ioerror, "LOAD", assert_success=True
        )
    with caplog.at_level(logging.INFO, logger=c_f.LOGGER_NAME):
        c_f.operate_on_dict_of_models(
            {"m": 0}, None, str(tmp_path), lambda v, p: None, "SAVE", log_if_successful=True
        )
    assert "SAVE" in caplog.text and "m.pth" in caplog.text


def test_regex_helpers():
    assert c_f.regex_wrapper("ab").match("abc")
    assert [r.pattern for r in c_f.regex_wrapper(["a", "b"])] == ["a", "b"]
    assert c_f.regex_replace("_[0-9]+", "", "trunk_12") == "trunk"


# ---------------------------------------------------------------------------------------------
# argument checks


def test_check_shapes():
    c_f.check_shapes(torch.zeros(3, 2), None)
    c_f.check_shapes(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="Number of embeddings"):
        c_f.check_shapes(torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="1D"):
        c_f.check_shapes(torch.zeros(3, 2), torch.zeros(3, 1))


class _HasDistance:
    def __init__(self, distance):
        self.distance = distance


def test_assert_distance_type():
    obj = _HasDistance(LpDistance(p=2, power=1))
    c_f.assert_distance_type(obj, LpDistance, p=2, power=1)
    c_f.assert_distance_type(obj, [CosineSimilarity, LpDistance])
    c_f.assert_distance_type(obj)  # nothing required
    for exc in (AssertionError, ValueError):
        with pytest.raises(exc, match="_HasDistance requires the distance metric to be CosineSimilarity"):
            c_f.assert_distance_type(obj, CosineSimilarity)
        with pytest.raises(exc, match="one of CosineSimilarity, DotProductSimilarity"):
            c_f.assert_distance_type(obj, (CosineSimilarity, DotProductSimilarity))
        with pytest.raises(exc, match="requires distance.power to be 2"):
            c_f.assert_distance_type(obj, LpDistance, power=2)


def test_set_ref_emb_identity_semantics():
    emb, labels = torch.zeros(3, 2), torch.tensor([0, 1, 0])
    ref_emb, ref_labels = c_f.set_ref_emb(emb, labels, None, None)
    assert ref_emb is emb and ref_labels is labels
    other_emb, other_labels = torch.zeros(4, 2), torch.tensor([1, 1, 0, 0])
    ref_emb, ref_labels = c_f.set_ref_emb(emb, labels, other_emb, other_labels)
    assert ref_emb is other_emb and torch.equal(ref_labels, other_labels)
    with pytest.raises(ValueError):
        c_f.set_ref_emb(emb, labels, other_emb, torch.tensor([1, 1]))


def test_argument_guards():
    emb, labels = torch.zeros(2, 2), torch.tensor([0, 1])
    c_f.labels_not_supported(None, None)
    with pytest.raises(ValueError, match="labels"):
        c_f.labels_not_supported(labels, None)
    with pytest.raises(ValueError, match="labels"):
        c_f.labels_not_supported(None, labels)
    c_f.ref_not_supported(emb, labels, emb, labels)
    with pytest.raises(ValueError, match="ref_emb"):
        c_f.ref_not_supported(emb, labels, emb.clone(), labels)  # equal values, other object
    c_f.indices_tuple_not_supported(None)
    with pytest.raises(ValueError, match="indices_tuple"):
        c_f.indices_tuple_not_supported((labels, labels, labels))
    c_f.labels_required(labels)
    with pytest.raises(ValueError, match="labels"):
        c_f.labels_required(None)
    c_f.labels_or_indices_tuple_required(None, (labels,))
    c_f.labels_or_indices_tuple_required(labels, None)
    with pytest.raises(ValueError, match="labels or indices_tuple"):
        c_f.labels_or_indices_tuple_required(None, None)


def test_argument_error_is_value_and_assertion_error():
    assert issubclass(ArgumentError, ValueError) and issubclass(ArgumentError, AssertionError)
    require(True, "unused")
    with pytest.raises(ArgumentError, match="bad margin"):
        require(False, "bad margin")


# ---------------------------------------------------------------------------------------------
# misc classes


def test_torch_init_wrapper():
    wrapper = c_f.TorchInitWrapper(torch.nn.init.constant_, val=0.25)
    t = torch.zeros(2, 3)
    wrapper(t)
    assert torch.all(t == 0.25)


def test_sqlite_obj_to_dict():
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    conn.execute("CREATE TABLE t (epoch INTEGER, acc REAL)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, 0.5), (2, 0.75)])
    rows = conn.execute("SELECT * FROM t ORDER BY epoch").fetchall()
    assert c_f.sqlite_obj_to_dict(rows) == {"epoch": [1, 2], "acc": [0.5, 0.75]}
    conn.close()


def test_urlretrieve_never_downloads():
    with pytest.raises(RuntimeError):
        c_f._urlretrieve("http://example.com/x", "x")
