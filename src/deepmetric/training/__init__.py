"""What the trainers share: checkpoints, record keeping, logging hooks, saved models, loaders.

Modules (import them directly; this package imports nothing on its own):

* :mod:`.checkpoint`: crash-safe checkpoints and random-number-generator states;
  :mod:`.seeding`: ``seed_everything``.
* :mod:`.record_keeper`, :mod:`.logging_presets`: records (CSV, SQLite, TensorBoard) and the
  ``HookContainer`` of end-of-iteration / end-of-epoch hooks.
* :mod:`.saved_models`: saving, loading and finding ``<name>_<suffix>.pth`` model files.
* :mod:`.dataloaders`: the trainers' and testers' data loaders, ``EmbeddingDataset``.
* :mod:`.loss_tracker`, :mod:`.key_checker`: the trainers' loss bookkeeping and argument checks.

pytorch-metric-learning's paths ``deepmetric.utils.logging_presets``,
``deepmetric.utils.loss_tracker`` and ``deepmetric.utils.key_checker`` re-export these, and
``c_f.save_dict_of_models`` and the other training helpers of ``common_functions`` still work.
"""
