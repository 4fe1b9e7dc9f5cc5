"""Every tunable of the project, with the tutorial's names.

Edit this file to tune a run; every script's command-line flags take their
defaults from here, so a flag overrides a value for one run only.
"""

import os

import torch

# path to the original dataset (TensorFlow's flower_photos) and base path to the splits
DATA_PATH = "flower_photos"
BASE_PATH = "dataset"

# fraction of each class held out for validation, and the train/val split folders
VAL_SPLIT = 0.1
TRAIN = os.path.join(BASE_PATH, "train")
VAL = os.path.join(BASE_PATH, "val")

# build_dataset.py finds exact copies (identical bytes) and near duplicates (re-encoded or rescaled
# copies: perceptual hashes at most DUPLICATE_DISTANCE of 64 bits apart, and alike in a 16 x 16 thumbnail), lists
# those filed under two classes, and keeps each group of copies on one side of the split, so that no
# photo is validated against its own copy; --no-find-duplicates splits them like any other images
FIND_DUPLICATES = True
DUPLICATE_DISTANCE = 6

# where the flowers archive comes from and where the downloaded .tgz is kept
DATASET_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
DATASET_ARCHIVE_SIZE = 228813984  # bytes, as served on 2021-10; checked when the server says nothing
DOWNLOAD_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "flowers-transfer")
# off by default: a 218 MiB download should be something the user asked for
DOWNLOAD = False
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

# ImageNet mean and standard deviation (the backbone was trained with these) and image size
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
IMAGE_SIZE = 224


def _default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


# device used for training and evaluation ("cuda", "mps" or "cpu"); --device overrides it
DEVICE = _default_device()

# backbone weights: a torchvision ResNet50_Weights name (IMAGENET1K_V1 is what the
# tutorial's pretrained=True loaded), a path to a state-dict .pth file, or "none"
WEIGHTS = "IMAGENET1K_V1"

# training hyperparameters
FEATURE_EXTRACTION_BATCH_SIZE = 256
FINETUNE_BATCH_SIZE = 64
PRED_BATCH_SIZE = 4
EPOCHS = 20
LR = 0.001
LR_FINETUNE = 0.0005
# optimizer steps every N batches, the remainder flushed at the end of each epoch; 1 = no accumulation.
# (The tutorial's `if (i + 2) % 2 == 0` stepped on every other batch, summing two batches'
# gradients, and an odd last batch's gradient leaked into the next epoch.)
GRAD_ACCUM_STEPS = 1
SEED = 42
# opt-in, off by default so that the tutorial's run stays the default: early stopping after PATIENCE
# epochs without a better validation loss (0 = never), a per-epoch learning-rate schedule ("none",
# "cosine", "step", "plateau") after WARMUP_EPOCHS of linear warm-up, and for fine-tuning
# FREEZE_EPOCHS epochs that train only the new head before the body is unfrozen
PATIENCE = 0
# opt-in: weight the loss so that every class counts as much as the others (scikit-learn's
# "balanced" weights, images / (classes x images of the class)), for imbalanced class folders
BALANCED = False
LR_SCHEDULER = "none"
WARMUP_EPOCHS = 0
FREEZE_EPOCHS = 0

# DataLoader worker processes: "auto" gives most cores on CUDA (a GPU outruns a few workers)
# and at most 4 on CPU (the math needs the cores); a number fixes it
NUM_WORKERS = "auto"

# feature extraction: train the linear head on cached backbone features.
# FEATURE_CACHE_VIEWS = 1 caches one un-augmented view; N > 1 caches N augmented views
FEATURE_CACHE = True
FEATURE_CACHE_VIEWS = 1
# where cached features persist between runs, keyed by weights, images, size, views and precision:
# "auto" is feature_cache/ beside the model (output/feature_cache), "none" keeps them in memory only
FEATURE_CACHE_DIR = "auto"

# speed: mixed precision ("auto" = bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else off),
# channels_last memory format, and optional torch.compile
AMP = "auto"
CHANNELS_LAST = True
# frozen BatchNorm layers are folded into the convolutions before them (same math, less work)
FOLD_BN = True
COMPILE = False
# Linux with glibc: keep freed memory in the process instead of handing each batch's large
# buffers back to the kernel, which zeroes fresh pages for every batch (pyimagesearch/memory.py).
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

# how many top classes inference prints per image
TOP_K = 3

# define paths to store training plots and trained models
OUTPUT_PATH = "output"
WARMUP_PLOT = os.path.join(OUTPUT_PATH, "warmup.png")
FINETUNE_PLOT = os.path.join(OUTPUT_PATH, "finetune.png")
WARMUP_MODEL = os.path.join(OUTPUT_PATH, "warmup_model.pth")
FINETUNE_MODEL = os.path.join(OUTPUT_PATH, "finetune_model.pth")
