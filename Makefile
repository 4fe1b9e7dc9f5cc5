# make run   - the tutorial end to end: dataset split, feature extraction, fine-tuning, inference
# make test  - the test suite (offline, 60-120 s on 2 CPU cores)
# make demo  - the whole pipeline offline on a small generated image folder (--weights none)
# make gpu-check - on a machine with a CUDA GPU: its tests, then the tutorial at its own size (benchmarks/full_size.py)
# Each target creates .venv and installs requirements on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test demo lint bench gpu-check gpu-deps clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) build_dataset.py --download
	$(PY) train_feature_extraction.py
	$(PY) fine_tune.py
	$(PY) inference.py --model output/finetune_model.pth

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) benchmarks/make_images.py demo/flower_photos --per-class 40 --size 160 --distinct
	$(PY) build_dataset.py --data demo/flower_photos --output demo/dataset
	$(PY) train_feature_extraction.py --train demo/dataset/train --val demo/dataset/val --weights none \
		--image-size 64 --epochs 20 --batch-size 32 --plot demo/output/warmup.png --model demo/output/warmup_model.pth
	$(PY) fine_tune.py --train demo/dataset/train --val demo/dataset/val --weights none \
		--image-size 64 --epochs 5 --batch-size 16 --plot demo/output/finetune.png --model demo/output/finetune_model.pth
	$(PY) inference.py --model demo/output/finetune_model.pth --val demo/dataset/val --output demo/output
	$(PY) inference.py --model demo/output/finetune_model.pth --images demo/dataset/val/daisy --output demo/output

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/bench_training.py

gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

# for a GPU machine with PyTorch but no .venv: imutils and torchcam, unpacked into .gpu-deps/ to copy there (docs/speed.md, GPUs)
gpu-deps: $(STAMP)
	rm -rf .gpu-deps && $(PY) -m pip install --quiet --no-deps --target .gpu-deps imutils torchcam

clean:
	rm -rf demo output/*.png output/*.pth output/*.json output/*.csv output/*.onnx output/feature_cache output/annotated
