"""An example package of models for the ``deepmetric`` command.

A config names a factory in it as ``model: {name: "my_models.nets:residual_net", args: {...}}``;
the command imports it when the folder holding ``my_models`` is on ``PYTHONPATH`` (or the package
is installed), calls it with ``args`` and trains what it returns. See ``examples/configs/``.
"""
