"""The machinery behind the tutorial's modules: files and errors, runtime and memory, distributed,
images, the dataset split and duplicates, the download, the feature cache, weights, the offline
stand-in, and the engine settings. Nothing here imports from outside ``utils``."""
