# Every target works on a fresh clone with nothing installed by hand: it makes .venv,
# installs torch into it, then builds this package against that torch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision must match; override for another platform or CUDA build.
TORCH_PACKAGES ?= torch==2.14.1 torchvision==0.29.1
MAX_JOBS ?= 2
export MAX_JOBS

STAMP := $(VENV)/.coreaug-installed
SOURCES := setup.py pyproject.toml $(wildcard csrc/*) $(wildcard kernels/*.py)

.PHONY: demo test bench clean gpu-check gpu-wheels

$(PY):
	@echo "== creating $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) $(SOURCES)
	@echo "== installing build tools and torch into $(VENV)"
	$(PY) -m pip install -q --upgrade pip setuptools wheel ninja
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install $(TORCH_PACKAGES)
	@echo "== building coreaug_fast against torch $$($(PY) -c 'import torch; print(torch.__version__)') (full log: build/install.log)"
	@mkdir -p build
	@$(PY) -m pip install -v --no-build-isolation -e ".[test,plot]" > build/install.log 2>&1 \
	  || { tail -n 80 build/install.log; echo "== build failed; full log: build/install.log"; exit 1; }
	@awk '/coreaug_fast: building/ && !said++ { sub(/^ */, ""); print } \
	  /\[[0-9]+\/[0-9]+\]/ && match($$0, / -c [^ ]+[.](cpp|cu) /) { print "   compiled " substr($$0, RSTART + 4, RLENGTH - 5) } \
	  / -shared / && /_C[.]/ { print "   linked coreaug_fast/_C" }' build/install.log
	$(PY) -c "import coreaug_fast, json; print(json.dumps(coreaug_fast.build_info(), indent=1))"
	@touch $(STAMP)

# Two comparisons on mnist5k (5 seeds each, about 3 minutes on a 2-core CPU): every method
# with 10% subsets beside the full data, then the paper's headline setting, training on a
# 30% subset alone (random vs coreset, paired). --overwrite: each make demo runs afresh.
DEMO := OMP_WAIT_POLICY=PASSIVE $(PY) -m coreaug_fast.train compare --dataset mnist5k --model mlp --epochs 10 --seeds 0,1,2,3,4 --reference random --quiet --overwrite
demo: $(STAMP)
	$(DEMO) --methods none,random,max-loss,coreset,full --fraction 0.1 --out runs/demo
	$(DEMO) --methods random,coreset --fraction 0.3 --subset-only --out runs/demo-subset-only

test: $(STAMP)
	$(PY) -m pytest tests

bench: $(STAMP)
	$(PY) -m pytest bench --benchmark-only --benchmark-json=bench/results/$$($(PY) -c "import coreaug_fast as c; print(c.build_info()['device_name'].replace(' ', '-'))").json

# On a GPU machine: build against its own python3/torch (no venv, no network), run the CUDA
# tests and the GPU benchmarks with their peers, and write a JSON + Markdown report into
# $(OUT) (default bench/results/). Without a GPU it says so and exits 0.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py $(if $(OUT),--out "$(OUT)")

# Here, with network: the wheels of the peers gpu-check times that the GPU machine lacks
# (apricot, kornia, Liger), for its CPython 3.12 on x86-64 Linux, into .whl/ (ignored by
# git); gpu_check.py installs them from there with --no-index. Only what the machine lacks:
# kornia-rs is kornia's one missing need, and apricot's declared `nose` is never imported.
# apricot-select 0.6.1 is a source release only: built here into a pure-Python wheel.
GPU_WHEELS_DIR := .whl
GPU_WHEELS ?= kornia==0.9.0 kornia-rs==0.2.0 liger-kernel==0.8.5
GPU_SOURCE_WHEELS ?= apricot-select==0.6.1
GPU_WHEEL_PLATFORM := --python-version 3.12 --implementation cp \
	$(foreach p,manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1,--platform $(p)_x86_64)
gpu-wheels:
	@mkdir -p $(GPU_WHEELS_DIR) && rm -f $(GPU_WHEELS_DIR)/*.whl  # one version of each, or the install stops
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: $(GPU_WHEEL_PLATFORM) -d $(GPU_WHEELS_DIR) $(GPU_WHEELS)
	$(PYTHON) -m pip wheel -q --no-deps -w $(GPU_WHEELS_DIR) $(GPU_SOURCE_WHEELS)
	@ls -1 $(GPU_WHEELS_DIR)/*.whl && du -ch $(GPU_WHEELS_DIR)/*.whl | tail -n 1

clean:
	rm -rf build *.egg-info coreaug_fast/*.so
