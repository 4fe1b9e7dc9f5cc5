"""flowers-transfer: the PyImageSearch transfer-learning tutorial, rebuilt on one shared engine.

Up front, what a tutorial reader opens: ``config`` (every setting), ``create_dataloaders``
(``get_dataloader``), ``model`` and ``freezing``, ``engine`` (one training pass, evaluation),
``schedule``, ``plots``, ``checkpoint`` and ``checkpointer``, ``session`` (the session around
each script's epoch loop), ``arguments`` (every script's flags) and ``feature_cache`` (feature
extraction's frozen-body step, kept between runs).

Behind it, six subpackages. Imports run one way, and tests/test_layout.py checks it:

- ``utils``: the machinery (files and errors, the CLI, runtime and memory, distributed, digests,
  weights and the offline stand-in, engine settings). It imports nothing from outside ``utils``.
- ``data``: the photos (scan and decoding, the split, duplicates, the download, exclusions, photos
  decoded once and augmented in batches on the device). It imports only ``utils``.
- ``reports``: metrics and pictures of a model's predictions. It imports only ``utils``.
- ``trust``: how far an answer can be trusted: the temperature that calibrates the probabilities
  and the novelty score that flags photos unlike every class, fitted at the end of training. It
  builds on the modules up front.
- ``inference``: the modes of inference.py. It builds on the modules up front; nothing up front
  imports it.
- ``tuning``: what helps choose a run's settings before it trains (the learning-rate range test
  of --find-lr). It builds on the modules up front, as ``inference`` does.
"""
