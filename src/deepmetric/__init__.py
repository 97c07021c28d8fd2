"""deepmetric: deep metric learning for PyTorch.

The public API mirrors pytorch-metric-learning 2.9: import submodules such as
``deepmetric.losses``, ``deepmetric.miners`` or ``deepmetric.utils.accuracy_calculator``.
Optional packages (faiss, tensorboard, matplotlib, umap-learn) are imported only when used.
"""

__version__ = "0.1.0"
