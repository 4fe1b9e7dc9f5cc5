"""flowers-transfer: the PyImageSearch transfer-learning tutorial, rebuilt on one shared engine.

Up front, what a tutorial reader opens: ``config`` (every setting), ``create_dataloaders``
(``get_dataloader``), ``model`` and ``freezing``, ``engine`` (one training pass, evaluation),
``schedule``, ``plots``, ``checkpoint`` and ``checkpointer``, ``training`` (the session around
each script's epoch loop) and ``arguments`` (every script's flags).

Behind it, three subpackages. Imports run one way, and tests/test_layout.py checks it:

- ``utils``: the machinery (files and errors, runtime and memory, distributed, images, the
  dataset split and duplicates, the download, the feature cache, weights, the offline stand-in,
  engine settings). It imports nothing from outside ``utils``.
- ``reports``: metrics and pictures of a model's predictions. It imports only ``utils``.
- ``inference``: the modes of inference.py (predict, annotate, video, ONNX export). It builds
  on the modules up front; nothing up front imports it.
"""
