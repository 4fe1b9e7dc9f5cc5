"""flowers-transfer: the PyImageSearch transfer-learning tutorial, rebuilt on one shared engine."""
