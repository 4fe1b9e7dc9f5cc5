"""The photos: finding them in class folders and decoding them (``images``, ``dataset``), the
split (``split``) and the duplicates it keeps on one side (``duplicates``), the flowers download
(``download``), the photos a user leaves out (``exclude``), and photos decoded once and kept where
the model runs (``decoded``), batched on the device (``device_loaders``) and augmented there (``batch_augment``).
Imports only ``utils``."""
