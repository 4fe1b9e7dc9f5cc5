"""The machinery behind the tutorial's modules: files and errors, the CLI, runtime and memory,
distributed, digests, weights and the offline stand-in, text and figures, and the engine settings.
Nothing here imports from outside ``utils``."""
