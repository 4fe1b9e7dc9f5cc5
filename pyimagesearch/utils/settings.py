"""Engine settings that users rarely touch: the C allocator, how DataLoader workers start, how
forwards without autograd are cut into pieces, and the download and extraction limits.

They are editable here like config.py's values. Only the scripts and the training session read
this module; they pass each value to the machinery as an argument, and the machinery checks it
the way it checks a flag. See docs/speed.md for how the runtime defaults were measured.
"""

# where the flowers archive's size is checked when the server does not say it (bytes, as served in 2021-10)
DATASET_ARCHIVE_SIZE = 228813984
# a download slower than DOWNLOAD_MIN_SPEED bytes/s over DOWNLOAD_SPEED_WINDOW seconds, or longer than
# DOWNLOAD_DEADLINE seconds in all, is abandoned (a server that trickles bytes never times out by itself)
DOWNLOAD_MIN_SPEED = 10 * 1024
DOWNLOAD_SPEED_WINDOW = 60.0
DOWNLOAD_DEADLINE = 4 * 3600.0
# an archive whose members add up to more than EXTRACT_MAX_BYTES, or that holds more than
# EXTRACT_MAX_MEMBERS members, is refused before extraction (flowers: 229 MB in 3,675 files);
# raise both for a larger dataset of your own
EXTRACT_MAX_BYTES = 4 * DATASET_ARCHIVE_SIZE
EXTRACT_MAX_MEMBERS = 50_000

# Linux with glibc: keep freed memory in the process instead of handing each batch's large
# buffers back to the kernel, which zeroes fresh pages for every batch (utils/memory.py).
# "auto" = everywhere, except where DataLoader workers are forked from a process whose network
# trains (WORKER_START_METHOD "fork": the kept pages are then shared with the workers, and each
# write copies one); True = everywhere; False = leave the C allocator as it is. A no-op on macOS,
# Windows, musl.
KEEP_ALLOCATOR_MEMORY = "auto"
# how training's DataLoader workers start: "auto" = in fine-tuning on Linux, "forkserver": a
# worker is forked from a small server process, not from the trainer and its GBs of model,
# gradients, optimizer state and kept buffers (every page of which the trainer then writes
# would be copied); elsewhere the platform's default ("fork" on Linux). Or "fork", "forkserver",
# "spawn" (Python's multiprocessing) for both training scripts.
WORKER_START_METHOD = "auto"
# forwards without autograd (the frozen body, evaluation, inference) run a batch this many images
# at a time: the same results, but a piece's activations, not a batch's, are alive at once, so
# the kept memory above stays small. "auto" = 16 on the CPU, whole batches on a GPU; 0 = whole.
FORWARD_CHUNK = "auto"
