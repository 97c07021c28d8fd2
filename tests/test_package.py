"""Package-level promises: optional dependencies stay optional, the public names exist, the
library never imports the reference, and the demo runs."""

import pathlib
import re
import subprocess
import sys

import deepmetric

REPO = pathlib.Path(__file__).resolve().parents[1]
OPTIONAL = ["faiss", "tensorboard", "matplotlib", "umap", "pytorch_metric_learning"]


def test_version():
    assert deepmetric.__version__ == "0.1.0"


def test_importing_every_module_loads_no_optional_package():
    code = (
        "import sys, pkgutil, importlib, deepmetric\n"
        "for m in pkgutil.walk_packages(deepmetric.__path__, 'deepmetric.'):\n"
        "    importlib.import_module(m.name)\n"
        f"print([name for name in {OPTIONAL!r} if name in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_library_source_never_imports_the_reference():
    pattern = re.compile(r"^\s*(import|from)\s+pytorch_metric_learning", re.MULTILINE)
    offenders = [str(p) for p in (REPO / "src").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_public_names_of_the_foundation_modules():
    from deepmetric import distances, losses, reducers, regularizers

    assert set(distances.__all__) == {
        "BaseDistance", "BatchedDistance", "CosineSimilarity", "DotProductSimilarity",
        "LpDistance", "SNRDistance",
    }
    assert len(reducers.__all__) == 10 and len(regularizers.__all__) == 6
    for name in ["BaseMetricLossFunction", "GenericPairLoss", "BaseLossWrapper",
                 "EmbeddingRegularizerMixin", "WeightRegularizerMixin", "ContrastiveLoss",
                 "TripletMarginLoss"]:
        assert hasattr(losses, name)


def test_demo_trains_and_reports_precision(tmp_path):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train_digits
    finally:
        sys.path.pop(0)
    precision = train_digits.main(["--epochs", "2"])
    assert 0.5 < precision <= 1.0
