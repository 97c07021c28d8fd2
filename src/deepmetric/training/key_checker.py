"""Check that a trainer's dictionaries (models, optimizers, loss functions, ...) have the keys it
needs, warning about missing important keys and rejecting unknown ones."""

import re

from ..utils import common_functions as c_f
from ..utils.errors import ArgumentError


def default_important(checker, children):
    """Every allowed key that is not essential is important (a warning when missing)."""
    essential = checker.get_keys("essential", children)
    return [k for k in checker.get_keys("keys", children) if k not in essential]


class KeyChecker:
    """Allowed, important and essential keys of one dictionary.

    Each of ``keys``, ``important`` and ``essential`` is a list of regex patterns (matched at the
    start of a key) or a callable ``(checker, children_dict) -> list``.
    """

    def __init__(self, keys, warn_empty=True, important=default_important, essential=None):
        self.keys = keys
        self.warn_empty = warn_empty
        self.important = important
        self.essential = [] if essential is None else essential

    def get_keys(self, attr, children):
        value = getattr(self, attr)
        return value(self, children) if callable(value) else value


class KeyCheckerDict:
    """``{attribute_name: KeyChecker}``; ``verify(obj)`` checks ``obj.<attribute_name>`` for each."""

    def __init__(self, children):
        self.children = children

    def __getitem__(self, key):
        return self.children[key]

    def __setitem__(self, key, value):
        self.children[key] = value

    def verify(self, obj):
        for name, checker in self.children.items():
            # Callables are resolved on every call and never stored: the dictionaries they
            # derive keys from may change between two verifications.
            allowed = checker.get_keys("keys", self.children)
            essential = checker.get_keys("essential", self.children)
            important = checker.get_keys("important", self.children)
            value = getattr(obj, name, None)
            if checker.warn_empty and (value is None or value == {}):
                c_f.LOGGER.warning(f"{name} is empty")
            if value is None:
                continue
            for key in value:
                if not any(re.match(pattern, key) for pattern in allowed):
                    raise ArgumentError(
                        f"{name} keys must be one of {allowed}, got unknown key {key!r}"
                    )
            for pattern in important:
                if not any(re.match(pattern, key) for key in value):
                    c_f.LOGGER.warning(f'{name} is missing "{pattern}"')
            for pattern in essential:
                if not any(re.match(pattern, key) for key in value):
                    raise ArgumentError(f'{name} is missing essential key "{pattern}"')
