# The README's commands. `make demo` and `make test` work on a fresh Debian 12 machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
MRBRAINS ?= $(SHARED)/data/mrbrains18
CACHE ?= cache
export NIPYPE_NO_ET := 1

.PHONY: install install-test system-test-deps demo test bench bench-cohort bench-train image weights cv cv-report cv-t1w cv-adamw cv-8label accuracy-shipped clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv \
	  && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: install system-test-deps
	$(BIN)/pip install --quiet -e '.[test]'

# Debian packages the tests use: chromium (reports in a real browser), slurm-wlm + munge (a
# real SLURM on localhost), podman & co. (the image and the Apptainer SIF). Tests that lack
# them skip with the reason; as root on Debian they are installed here.
SYSTEM_TEST_PACKAGES := chromium slurm-wlm munge podman runc netavark aardvark-dns iptables \
	mmdebstrap uidmap ca-certificates
system-test-deps:
	@missing=$$(for p in $(SYSTEM_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install
	$(BIN)/mixnet-bids demo demo_output

# Two pytest workers, each taking a whole test file at a time (module fixtures are built
# once); the slow tests wait on subprocesses, SLURM or podman much of the time. Files go out
# in collection order, so the slowest (tests/cluster, tests/containers) start first.
TEST_WORKERS ?= 2
test: install-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

# The container image (podman; a local Debian base, no registry needed).
image:
	bash containers/build-image.sh

bench: install
	$(BIN)/python benchmarks/run.py --mrbrains $(MRBRAINS) --out benchmarks/results

# Participants per hour per core, 1..ncores parallel single-core jobs (a job array on a node).
bench-cohort: install
	$(BIN)/python benchmarks/cohort.py --out benchmarks/results

# One training iteration: batch sampling vs network step; float32 vs bfloat16, eager vs
# torch.compile (ratios).
bench-train: install
	$(BIN)/python benchmarks/train_step.py --cache $(CACHE) --out benchmarks/results

# Shipped weights: 3 planes x 2 tasks on all 7 MRBrainS subjects (resumable), with the
# cross-validated CPU recipe of make cv-adamw (AdamW 1e-3, cosine decay, bfloat16, T1w kept
# alone more often) at 2x its axial iterations.
ITER_AXIAL ?= 2000
ITER_OTHER ?= 800
RECIPE := --lr 1e-3 --optimizer adamw --schedule cosine --bf16 --p-t1w-only 0.25
weights: install
	for task in 3label 8label; do \
	  $(BIN)/mixnet-bids-train --mrbrains $(MRBRAINS) --cache $(CACHE) --out runs/default \
	    --task $$task --planes axial --iterations $(ITER_AXIAL) $(RECIPE) && \
	  $(BIN)/mixnet-bids-train --mrbrains $(MRBRAINS) --cache $(CACHE) --out runs/default \
	    --task $$task --planes coronal sagittal --iterations $(ITER_OTHER) $(RECIPE) && \
	  cp runs/default/$${task}_v3_*/mixnet_v3_$${task}_*.{pt,json} mixnet_bids/data/weights/ \
	    || exit 1; \
	done

# Leave-one-subject-out cross-validation (resumable), then docs/results.md.
# Folds are shorter than the shipped recipe (2 cores: ~13 min per fold and version).
# make cv and cv-t1w: the SGD recipe of the first shipped weights (10x the paper's rate).
LR ?= 2e-3
CV_ITER ?= 400
CV_ITER_OTHER ?= 200
cv: install
	$(BIN)/mixnet-bids-cv --mrbrains $(MRBRAINS) --cache $(CACHE) --out runs/cv \
	  --versions v3 v1 --iterations $(CV_ITER) --iterations-other $(CV_ITER_OTHER) --lr $(LR)

# The cross-validation tables (Markdown, as in docs/results.md) of the folds finished so far.
cv-report: install
	$(BIN)/mixnet-bids-cv --out runs/cv --report

# The same MixNetv3 cross-validation with T1w kept alone in 25 % more samples (the
# candidate recipe for T1w-only users, see docs/results.md) -> runs/cv_t1w.
cv-t1w: install
	$(BIN)/mixnet-bids-cv --mrbrains $(MRBRAINS) --cache $(CACHE) --out runs/cv_t1w \
	  --versions v3 --iterations $(CV_ITER) --iterations-other $(CV_ITER_OTHER) --lr $(LR) \
	  --p-t1w-only 0.25
	$(BIN)/mixnet-bids-cv --out runs/cv_t1w --report

# The MixNetv3 cross-validation with the CPU recipe: AdamW, cosine decay, bfloat16 autocast,
# T1w kept alone more often, 2.5x the axial iterations of make cv -> runs/cv_adamw.
# CV_SUBJECTS runs only those folds (e.g. 1 4 5 14, the subjects with all modalities).
CV_FAST_ITER ?= 1000
CV_FAST_ITER_OTHER ?= 300
CV_FAST_OUT ?= runs/cv_adamw
CV_SUBJECTS ?=
cv-adamw: install
	$(BIN)/mixnet-bids-cv --mrbrains $(MRBRAINS) --cache $(CACHE) --out $(CV_FAST_OUT) \
	  --versions v3 --iterations $(CV_FAST_ITER) --iterations-other $(CV_FAST_ITER_OTHER) \
	  $(RECIPE) $(if $(CV_SUBJECTS),--subjects $(CV_SUBJECTS))
	$(BIN)/mixnet-bids-cv --out $(CV_FAST_OUT) --report

# The same with 8-label networks (cerebellum and brainstem as classes of their own instead of
# background), scored in the 8 labels and in the 3 tissues -> runs/cv_adamw_8label; the
# report is the 3-tissue one.
CV_8LABEL_OUT ?= runs/cv_adamw_8label
cv-8label: install
	$(BIN)/mixnet-bids-cv --mrbrains $(MRBRAINS) --cache $(CACHE) --out $(CV_8LABEL_OUT) \
	  --task 8label --versions v3 --iterations $(CV_FAST_ITER) \
	  --iterations-other $(CV_FAST_ITER_OTHER) $(RECIPE) \
	  $(if $(CV_SUBJECTS),--subjects $(CV_SUBJECTS))
	$(BIN)/mixnet-bids-cv --out $(CV_8LABEL_OUT) --task 3label --report

# Shipped weights scored on the (training) subjects, per modality subset -> runs/shipped.
accuracy-shipped: install
	$(BIN)/mixnet-bids-cv --mrbrains $(MRBRAINS) --cache $(CACHE) --out runs/shipped \
	  --versions v3 --shipped

clean:
	rm -rf demo_output work_dir
