"""The ``deepmetric`` command: train and evaluate an embedding model from a config."""
