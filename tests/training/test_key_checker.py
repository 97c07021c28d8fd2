"""Tests of deepmetric.utils.key_checker: allowed, important and essential dictionary keys."""

import logging
from types import SimpleNamespace

import pytest

from deepmetric.utils import common_functions as c_f
from deepmetric.utils.key_checker import KeyChecker, KeyCheckerDict, default_important


def make_checker():
    return KeyCheckerDict(
        {
            "models": KeyChecker(["trunk", "embedder"], essential=["trunk"]),
            "loss_funcs": KeyChecker(["metric_loss"]),
        }
    )


def test_valid_dicts_pass_silently(caplog):
    obj = SimpleNamespace(models={"trunk": 1, "embedder": 2}, loss_funcs={"metric_loss": 3})
    with caplog.at_level(logging.WARNING, logger="PML"):
        make_checker().verify(obj)
    assert caplog.records == []


def test_unknown_key_is_rejected():
    obj = SimpleNamespace(models={"trunk": 1, "classifier": 2}, loss_funcs={"metric_loss": 3})
    for exc in (AssertionError, ValueError):
        with pytest.raises(exc, match="models keys must be one of"):
            make_checker().verify(obj)


def test_pattern_is_anchored_at_start_only():
    obj = SimpleNamespace(models={"trunk": 1, "trunk2": 2, "embedder": 3}, loss_funcs={"metric_loss": 4})
    make_checker().verify(obj)  # "trunk2" matches pattern "trunk"
    obj.models["my_trunk"] = 5  # does not start with an allowed pattern
    with pytest.raises(AssertionError, match="my_trunk"):
        make_checker().verify(obj)


def test_missing_important_key_warns_on_pml_logger(caplog):
    obj = SimpleNamespace(models={"trunk": 1}, loss_funcs={"metric_loss": 3})
    with caplog.at_level(logging.WARNING, logger="PML"):
        make_checker().verify(obj)
    assert [r.name for r in caplog.records] == ["PML"]
    assert caplog.records[0].getMessage() == 'models is missing "embedder"'


def test_missing_essential_key_is_an_error():
    obj = SimpleNamespace(models={"embedder": 1}, loss_funcs={"metric_loss": 3})
    with pytest.raises(AssertionError, match="trunk"):
        make_checker().verify(obj)


def test_empty_or_absent_dict_warns(caplog):
    obj = SimpleNamespace(models={"trunk": 1, "embedder": 2}, loss_funcs={})
    with caplog.at_level(logging.WARNING, logger="PML"):
        make_checker().verify(obj)
    messages = [r.getMessage() for r in caplog.records]
    assert "loss_funcs is empty" in messages
    caplog.clear()
    obj = SimpleNamespace(models={"trunk": 1, "embedder": 2})  # no loss_funcs attribute at all
    with caplog.at_level(logging.WARNING, logger="PML"):
        make_checker().verify(obj)
    assert [r.getMessage() for r in caplog.records] == ["loss_funcs is empty"]


def test_warn_empty_false_is_silent(caplog):
    checker = KeyCheckerDict({"optimizers": KeyChecker(["trunk_optimizer"], warn_empty=False, important=[])})
    with caplog.at_level(logging.WARNING, logger="PML"):
        checker.verify(SimpleNamespace(optimizers=None))
        checker.verify(SimpleNamespace(optimizers={}))
    assert caplog.records == []


def test_callables_see_the_other_checkers():
    def optimizer_keys(checker, children):
        return [k + "_optimizer" for k in children["models"].keys]

    checker = KeyCheckerDict(
        {
            "models": KeyChecker(["trunk", "embedder"]),
            "optimizers": KeyChecker(optimizer_keys, important=[], essential=lambda s, d: ["trunk_"]),
        }
    )
    checker.verify(SimpleNamespace(models={"trunk": 1, "embedder": 2}, optimizers={"trunk_optimizer": 3}))
    with pytest.raises(AssertionError, match="optimizers keys must be one of"):
        checker.verify(SimpleNamespace(models={"trunk": 1, "embedder": 2}, optimizers={"classifier_optimizer": 3}))
    with pytest.raises(AssertionError, match="trunk_"):
        checker.verify(SimpleNamespace(models={"trunk": 1, "embedder": 2}, optimizers={"embedder_optimizer": 3}))


def test_callables_are_reevaluated_on_every_verify():
    # A trainer may add a model after the first check; allowed keys derived from the models
    # checker must follow.
    checker = KeyCheckerDict(
        {
            "models": KeyChecker(["trunk"]),
            "optimizers": KeyChecker(
                lambda s, d: [k + "_optimizer" for k in d["models"].keys], important=[]
            ),
        }
    )
    checker.verify(SimpleNamespace(models={"trunk": 1}, optimizers={"trunk_optimizer": 2}))
    assert callable(checker["optimizers"].keys)
    checker["models"] = KeyChecker(["trunk", "classifier"])
    checker.verify(
        SimpleNamespace(models={"trunk": 1, "classifier": 2}, optimizers={"classifier_optimizer": 3})
    )


def test_default_important_and_getitem_setitem():
    kc = KeyChecker(["a", "b", "c"], essential=["b"])
    assert default_important(kc, {}) == ["a", "c"]
    assert KeyChecker(["a"]).essential == []
    d = KeyCheckerDict({})
    d["x"] = kc
    assert d["x"] is kc


def test_warnings_follow_set_logger_name(monkeypatch, caplog):
    monkeypatch.setattr(c_f, "LOGGER_NAME", c_f.LOGGER_NAME)
    monkeypatch.setattr(c_f, "LOGGER", c_f.LOGGER)
    c_f.set_logger_name("key_checker_test")
    with caplog.at_level(logging.WARNING, logger="key_checker_test"):
        make_checker().verify(SimpleNamespace(models={"trunk": 1}, loss_funcs=None))
    assert {r.name for r in caplog.records} == {"key_checker_test"}


def test_default_important_resolves_callables(caplog):
    kc = KeyChecker(lambda s, d: ["a", "b"], essential=lambda s, d: ["a"])
    assert default_important(kc, {}) == ["b"]
    checker = KeyCheckerDict({"models": kc})
    with caplog.at_level(logging.WARNING, logger="PML"):
        checker.verify(SimpleNamespace(models={"a": 1}))
    assert [r.getMessage() for r in caplog.records] == ['models is missing "b"']
