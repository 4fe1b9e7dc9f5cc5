"""The photos: finding them in class folders and decoding them (``images``, ``dataset``), the
split (``split``) and the duplicates it keeps on one side (``duplicates``), the flowers download
(``download``) and the photos a user leaves out (``exclude``). Imports only ``utils``."""
