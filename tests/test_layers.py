"""The package's floors: every module imports only from its own floor or below (the faces at the
reference's module paths excepted), no module imports another module's private names, the kernel
layer imports only torch, numpy and the standard library, and the base helpers never load a
higher floor."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "deepmetric"

# Lowest first. A module may import from its own floor or any floor below it.
FLOORS = {
    "ops": 0,
    "utils": 1,
    "datasets": 1.5,  # only needs utils (and ops); used by the cli
    "distances": 2,
    "reducers": 3,
    "regularizers": 3,
    "losses": 4,
    "miners": 4,
    "samplers": 4,
    "distributed": 5,
    "evaluation": 6,
    "training": 7,
    "trainers": 8,
    "testers": 8,
    "cli": 9,
    "__main__": 10,
    "__init__": 0,  # the package's own __init__ defines the version only
}

# Thin faces at pytorch-metric-learning's module paths (and at deepmetric's earlier ones): they
# re-export from a higher floor so that code ported by renaming the import keeps working. They are
# the only modules allowed to import upwards, and no module of the package imports them.
FACES = {
    "deepmetric.utils.accuracy_calculator",
    "deepmetric.utils.inference",
    "deepmetric.utils.logging_presets",
    "deepmetric.utils.distributed",
    "deepmetric.utils.loss_tracker",
    "deepmetric.utils.key_checker",
    "deepmetric.utils.module_with_records_and_reducer",
    "deepmetric.utils.knn",
    "deepmetric.utils.kmeans",
    "deepmetric.utils.checkpoint",
    "deepmetric.utils.record_keeper",
    "deepmetric.utils.sharded_knn",
    "deepmetric.utils.sharded_evaluation",
    "deepmetric.utils.positive_ranks",
}

STDLIB = set(sys.stdlib_module_names)


def module_name(path):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = modules()


def is_package(name):
    return MODULES[name].name == "__init__.py"


def floor_of(name):
    """Floor of a module of the package: its top-level package (or module) below deepmetric."""
    parts = name.split(".")
    if len(parts) == 1:
        return FLOORS["__init__"]
    return FLOORS[parts[1]]


def resolve(importer, node):
    """``[(module, imported_name_or_None), ...]`` that ``node`` imports, absolute names."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    if node.level:
        base = importer.split(".")
        if not is_package(importer):
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module
    out = []
    for alias in node.names:
        # ``from pkg import sub`` imports the module pkg.sub when it is one.
        candidate = f"{module}.{alias.name}"
        if candidate in MODULES:
            out.append((candidate, None))
        else:
            out.append((module, alias.name))
    return out


def imports_of(name):
    """``[(line, module, imported_name_or_None), ...]`` of every import statement of ``name``,
    at module level or inside a function (lazy imports count too)."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for module, imported in resolve(name, node):
                found.append((node.lineno, module, imported))
    return found


def report(lines):
    return "\n".join(sorted(set(lines)))


def internal(module):
    return module == "deepmetric" or module.startswith("deepmetric.")


def test_the_floors_cover_every_module():
    unknown = sorted({n.split(".")[1] for n in MODULES if "." in n} - set(FLOORS))
    assert not unknown, f"give these packages a floor in FLOORS: {unknown}"
    assert not [f for f in FACES if f not in MODULES], "a face listed here does not exist"


def test_no_module_imports_from_a_higher_floor():
    wrong = []
    for name in MODULES:
        if name in FACES:
            continue
        for line, module, _ in imports_of(name):
            if internal(module) and floor_of(module) > floor_of(name):
                wrong.append(f"{name}:{line} imports {module}")
    assert not wrong, "imports that run back up a floor:\n" + report(wrong)


def test_no_module_of_the_package_imports_a_face():
    wrong = [
        f"{name}:{line} imports {module}"
        for name in MODULES
        for line, module, _ in imports_of(name)
        if module in FACES and name not in FACES
    ]
    assert not wrong, "internal code must import from the new homes:\n" + report(wrong)


def test_faces_only_hand_names_on():
    # A face imports and re-exports; it defines nothing of its own (beyond its docstring,
    # __all__, and common_functions' lazy __getattr__, which is no face).
    for name in FACES:
        tree = ast.parse(MODULES[name].read_text())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # docstring
            if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__all__"]:
                continue
            pytest.fail(f"{name} defines something at line {node.lineno}: a face only re-exports")


def test_no_module_imports_another_modules_private_names():
    wrong = []
    for name in MODULES:
        for line, module, imported in imports_of(name):
            if not internal(module) or imported is None:
                continue
            if imported.startswith("_") and not imported.startswith("__"):
                wrong.append(f"{name}:{line} imports {module}.{imported}")
    assert not wrong, "private names imported from another module:\n" + report(wrong)


def test_no_module_reads_another_objects_private_attributes():
    # ``ac._per_query(...)`` or ``calculator._to_tensor(...)``: a name's private attribute read
    # from outside its own class (``self._x`` and ``cls._x`` are the class's own business).
    wrong = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id not in {"self", "cls"}
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                wrong.append(f"{name}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert not wrong, report(wrong)


def test_kernels_import_only_torch_numpy_and_the_standard_library():
    wrong = []
    for name in MODULES:
        if floor_of(name) != FLOORS["ops"] or name == "deepmetric":
            continue
        for line, module, _ in imports_of(name):
            top = module.split(".")[0]
            if internal(module):
                if not module.startswith("deepmetric.ops"):
                    wrong.append(f"{name}:{line} imports {module}")
            elif top not in {"torch", "numpy"} | STDLIB:
                wrong.append(f"{name}:{line} imports {module}")
    assert not wrong, report(wrong)


def test_the_layer_check_catches_an_upward_import():
    # The checks above read real import statements: a relative import from a low floor to a high
    # one resolves to the high floor's module.
    node = ast.parse("from ..evaluation.knn import ExactKNN").body[0]
    [(module, imported)] = resolve("deepmetric.utils.common_functions", node)
    assert (module, imported) == ("deepmetric.evaluation.knn", "ExactKNN")
    assert floor_of(module) > floor_of("deepmetric.utils.common_functions")
    node = ast.parse("from . import common_functions as c_f").body[0]
    assert resolve("deepmetric.training.checkpoint", node) == [("deepmetric.training", "common_functions")]
    node = ast.parse("from ..utils import common_functions as c_f").body[0]
    assert resolve("deepmetric.training.checkpoint", node) == [("deepmetric.utils.common_functions", None)]


def test_importing_the_base_helpers_loads_no_higher_floor():
    code = (
        "import sys\n"
        "import deepmetric.utils.common_functions as c_f\n"
        "import deepmetric.utils.loss_and_miner_utils\n"
        "higher = ('deepmetric.evaluation', 'deepmetric.training', 'deepmetric.losses',\n"
        "          'deepmetric.miners', 'deepmetric.distributed', 'deepmetric.reducers')\n"
        "print(sorted(m for m in sys.modules if m.startswith(higher)))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
