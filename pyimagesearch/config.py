"""Every setting a tutorial reader tunes, with the tutorial's names.

Edit this file to tune a run; every script's command-line flags take their defaults from here,
so a flag overrides a value for one run only. The tutorial's settings come first, in its order;
what this project adds follows. Engine settings that users rarely touch (the allocator, worker
start method, forward pieces, download limits) are in pyimagesearch/utils/settings.py.
"""

import os

from .utils.runtime import default_device

# define path to the original dataset and base path to the dataset splits
DATA_PATH = "flower_photos"
BASE_PATH = "dataset"

# define validation split and paths to separate train and validation splits
VAL_SPLIT = 0.1
TRAIN = os.path.join(BASE_PATH, "train")
VAL = os.path.join(BASE_PATH, "val")

# specify ImageNet mean and standard deviation (the backbone was trained with these) and image size
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
IMAGE_SIZE = 224

# determine the device to be used for training and evaluation ("cuda", "mps" or "cpu"); --device overrides it
DEVICE = default_device()

# specify training hyperparameters
FEATURE_EXTRACTION_BATCH_SIZE = 256
FINETUNE_BATCH_SIZE = 64
PRED_BATCH_SIZE = 4
EPOCHS = 20
LR = 0.001
LR_FINETUNE = 0.0005

# define paths to store training plots and trained models ("warmup" is the tutorial's name for the
# feature-extraction run, the head trained on a frozen body; WARMUP_EPOCHS below is another warm-up,
# of the learning rate)
OUTPUT_PATH = "output"
WARMUP_PLOT = os.path.join(OUTPUT_PATH, "warmup.png")
FINETUNE_PLOT = os.path.join(OUTPUT_PATH, "finetune.png")
WARMUP_MODEL = os.path.join(OUTPUT_PATH, "warmup_model.pth")
FINETUNE_MODEL = os.path.join(OUTPUT_PATH, "finetune_model.pth")

# ---------------------------------------------------------------------------------------------
# What this project adds. Every value here is also a flag of the scripts that use it.
# ---------------------------------------------------------------------------------------------

# backbone weights: a torchvision ResNet50_Weights name (IMAGENET1K_V1 is what the
# tutorial's pretrained=True loaded), a path to a state-dict .pth file, or "none"
WEIGHTS = "IMAGENET1K_V1"
SEED = 42

# build_dataset.py: fetch the flowers archive when DATA_PATH is missing (off by default: a 218 MiB
# download should be something the user asked for), from DATASET_URL, kept in DOWNLOAD_CACHE
DOWNLOAD = False
DATASET_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
DOWNLOAD_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "flowers-transfer")
# build_dataset.py finds exact copies (identical bytes) and near duplicates (re-encoded, rescaled,
# mirrored or quarter-turned copies: perceptual hashes at most DUPLICATE_DISTANCE of 64 bits apart,
# and alike in a 16 x 16 thumbnail; docs/your-own-photos.md says how these were calibrated), lists
# those filed under two classes, and keeps each group of copies on one side of the split, so that no
# photo is validated against its own copy; --no-find-duplicates splits them like any other images
FIND_DUPLICATES = True
DUPLICATE_DISTANCE = 8

# optimizer steps every N batches, the remainder flushed at the end of each epoch; 1 = no accumulation.
# (The tutorial's `if (i + 2) % 2 == 0` stepped on every other batch, summing two batches'
# gradients, and an odd last batch's gradient leaked into the next epoch.)
GRAD_ACCUM_STEPS = 1
# opt-in, off by default so that the tutorial's run stays the default: early stopping after PATIENCE
# epochs without a better validation loss (0 = never), a per-epoch learning-rate schedule ("none",
# "cosine", "step", "plateau") after WARMUP_EPOCHS epochs of linear learning-rate warm-up (not the
# "warmup" of WARMUP_MODEL, the tutorial's feature-extraction run), and for fine-tuning
# FREEZE_EPOCHS epochs that train only the new head before the body is unfrozen
PATIENCE = 0
LR_SCHEDULER = "none"
WARMUP_EPOCHS = 0
FREEZE_EPOCHS = 0
# opt-in: weight the loss so that every class counts as much as the others (scikit-learn's
# "balanced" weights, images / (classes x images of the class)), for imbalanced class folders
BALANCED = False

# feature extraction: train the linear head on cached backbone features.
# FEATURE_CACHE_VIEWS = 1 caches one un-augmented view; N > 1 caches N augmented views
FEATURE_CACHE = True
FEATURE_CACHE_VIEWS = 1
# where cached features persist between runs, keyed by weights, images, size, views and precision:
# "auto" is feature_cache/ beside the model (output/feature_cache), "none" keeps them in memory only
FEATURE_CACHE_DIR = "auto"

# decode every training photo once and keep it as uint8 where the model runs, then crop, flip, rotate
# and normalise whole batches there, with the tutorial's augmentations drawn as torchvision draws them
# ("on", "off", or "auto": on a CUDA GPU, when the photos take at most half of its free memory). The
# cost is memory: 3 bytes a pixel, photos kept with their short side at most 915 px at IMAGE_SIZE 224,
# about 1.3 GiB for the tutorial's 3,670 flowers; a CPU is paced by the model, not by its input
DECODE_ONCE = "auto"
# DataLoader worker processes: "auto" gives every core but one on CUDA or MPS (a GPU outruns a few workers)
# and at most 4 on CPU (the math needs the cores); a number fixes it
NUM_WORKERS = "auto"
# speed: mixed precision ("auto" = bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else off),
# channels_last memory format, and optional torch.compile
AMP = "auto"
CHANNELS_LAST = True
# frozen BatchNorm layers are folded into the convolutions before them (same math, less work)
FOLD_BN = True
COMPILE = False

# how many top classes inference prints per image
TOP_K = 3
# inference.py divides the logits by the temperature each training run fits on its validation photos,
# so that a photo called 0.9 is right about 9 times in 10 (False, or --no-calibration: raw softmax)
CALIBRATION = True
# inference.py flags a photo as "unlike every class" when its novelty (its distance to the nearest
# training photos, in the model's features) is beyond this percentile of the validation photos':
# about 100 - UNLIKE_PERCENTILE % of photos like the validation ones are flagged too (50 to 100)
UNLIKE_PERCENTILE = 95
# inference.py --audit: the folds of the cross-validated linear head that predicts each photo from
# the others (every class needs at least this many photos)
AUDIT_FOLDS = 5
# inference.py --explain and --evaluate: the layer whose Grad-CAM heatmap shows where the model
# looked ("layer4", ResNet50's last block, gives the most class-specific map; "layer3" a finer one)
EXPLAIN_LAYER = "layer4"
