# The README's commands. `make demo` and `make test` work on a fresh Debian 12 machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
MRBRAINS ?= $(SHARED)/data/mrbrains18
CACHE ?= cache
export NIPYPE_NO_ET := 1

.PHONY: install install-test lock system-test-deps demo test bench bench-generalisation bench-cohort bench-train bench-train-processes image weights train-background curves cv cv-background accuracy-shipped clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv \
	  && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip

# The exact versions of requirements.lock (see `lock`), then mixnet-bids itself; pip check
# proves the set complete. torch is its CPU build: pip finds it in TORCH_WHEELS or on its own
# find-links path.
TORCH_WHEELS ?= /opt/wheels
install: $(BIN)/python
	$(BIN)/pip install --quiet --no-deps --find-links $(TORCH_WHEELS) -r requirements.lock \
	  || { echo "make install: could not install requirements.lock; its torch is the CPU" \
	       "build ($$(grep '^torch==' requirements.lock)): put that wheel (from PyTorch's CPU" \
	       "index) in TORCH_WHEELS=$(TORCH_WHEELS)" >&2; exit 1; }
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check

install-test: install system-test-deps
	$(BIN)/pip install --quiet --constraint requirements.lock -e '.[test]'

# requirements.lock: every package at one exact version, resolved from requirements.txt's
# ranges by pip-compile (pip-tools) for Python 3.11 on Linux x86_64 (Debian 12), with the
# CPU torch wheel of TORCH_WHEELS; refused if it holds any other torch build. It keeps the
# pins it has unless requirements.txt needs others; LOCK_ARGS=--upgrade moves every
# package to its newest allowed version. Needs PyPI and TORCH_WHEELS only.
PIP_TOOLS ?= pip-tools==7.7.0
LOCK_ARGS ?=
lock: $(BIN)/python
	$(BIN)/pip install --quiet '$(PIP_TOOLS)'
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --strip-extras --allow-unsafe \
	  --no-emit-index-url --no-emit-find-links --find-links $(TORCH_WHEELS) $(LOCK_ARGS) \
	  --output-file requirements.lock requirements.txt
	@grep -Eq '^torch==[^ ]+\+cpu$$' requirements.lock || { echo "make lock: torch in" \
	  "requirements.lock is not the CPU build; put its CPU wheel in" \
	  "TORCH_WHEELS=$(TORCH_WHEELS)" >&2; exit 1; }

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
	$(BIN)/mixnet-bids-demo demo_output

# Two pytest workers, each taking a whole test file at a time (module fixtures are built
# once); the slow tests wait on subprocesses, SLURM or podman much of the time. Files go out
# in collection order, so the slowest (tests/cluster, tests/containers) start first.
TEST_WORKERS ?= 2
test: install-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

# The container image (podman; a local Debian base, no registry needed).
image:
	bash containers/build-image.sh

# One participant (MRBrainS subject 1's T1 at 1 mm) beside N4 + Atropos and N4 + a Gaussian
# mixture on the same image, and the networks' GFLOP/s against a GEMM, all on one thread in
# one run (ratios); peak RSS. BENCH_ARGS adds options, e.g. BENCH_ARGS="--precision float32".
BENCH_ARGS ?=
bench: install
	$(BIN)/python benchmarks/run.py --mrbrains $(MRBRAINS) --work runs/bench \
	  --out benchmarks/results $(BENCH_ARGS)

# Generalisation: GM/WM/CSF Dice and wall time of mixnet-bids, N4 + Atropos and N4 + a
# Gaussian mixture (the peers in the app's brain mask and in the true one), one thread each,
# on MRBrainS T1w at 1 mm (as is, skull-stripped, biased) and held-out BrainWeb heads (as is,
# skull-stripped); the table goes into docs/results.md. GEN_ARGS picks a subset, e.g.
# GEN_ARGS="--conditions mrbrains brainweb --mrbrains-subjects 1 --brainweb-subjects 05".
GEN_ARGS ?=
bench-generalisation: install
	$(BIN)/python benchmarks/generalisation.py --mrbrains $(MRBRAINS) --brainweb $(BRAINWEB) \
	  --work runs/bench-generalisation --out benchmarks/results --results-doc docs/results.md \
	  $(GEN_ARGS)

# Participants per hour against the number of cores (1..ncores), two ways: single-core jobs
# side by side (a job array on one node), and one run for the whole cohort with --nprocs set
# to the cores (one Nipype graph). COHORT_ARGS picks a subset, e.g.
# COHORT_ARGS="--cores 1 --modes one-run".
COHORT_ARGS ?=
bench-cohort: install
	$(BIN)/python benchmarks/cohort.py --out benchmarks/results $(COHORT_ARGS)

# How the long run should use the cores: one trainer on every core against one single-thread
# trainer per core, side by side (total iterations per second).
bench-train-processes: install
	$(BIN)/python benchmarks/train_processes.py --mrbrains $(MRBRAINS) --brainweb $(BRAINWEB) \
	  --cache $(CACHE) --out benchmarks/results

# One training iteration of the long run's recipe: real and synthetic batch sampling vs the
# network step in every precision and layout that passes the gradient check (ratios).
bench-train: install
	$(BIN)/python benchmarks/train_step.py --cache $(CACHE) --brainweb $(BRAINWEB) \
	  --out benchmarks/results

# Training by recipe (mixnet-bids-train --list-recipes). The state of every run lives in
# checkpoints/<recipe>/ and is committed to git, so `make weights` resumes it on any machine
# (docs/training.md). TRAIN_ARGS adds options, e.g. TRAIN_ARGS="--planes axial".
RECIPE ?= wholebrain-synth-v2
BRAINWEB ?= $(SHARED)/data/brainweb20
TRAIN_ARGS ?=
weights: install
	$(BIN)/mixnet-bids-train --recipe $(RECIPE) --mrbrains $(MRBRAINS) --brainweb $(BRAINWEB) \
	  --cache $(CACHE) $(TRAIN_ARGS)

# The same in the background at low priority, committing its state (and its learning curves
# in docs/curves) to git hourly and at the end; its log goes to logs/train-<recipe>.log.
train-background: install
	mkdir -p logs
	nohup nice -n 19 $(MAKE) --no-print-directory weights RECIPE=$(RECIPE) \
	  TRAIN_ARGS="--commit-every 3600 --curves-dir docs/curves $(TRAIN_ARGS)" \
	  >> logs/train-$(RECIPE).log 2>&1 &
	@echo "training $(RECIPE) in the background: tail -f logs/train-$(RECIPE).log"

# Learning curves of a recipe's run (loss and validation Dice per plane) -> docs/curves/.
curves: install
	$(BIN)/python -m mixnet_bids.training.curves checkpoints/$(RECIPE) docs/curves

# Leave-one-subject-out cross-validation of a recipe at its budget (resumable; state in
# checkpoints/<recipe>/cv), then its tables. CV_SUBJECTS runs only those folds (e.g. 1 4 5 14,
# the subjects with all modalities).
CV_SUBJECTS ?=
CV_TRAIN = $(BIN)/mixnet-bids-cv --recipe $(RECIPE) --mrbrains $(MRBRAINS) \
  --brainweb $(BRAINWEB) --cache $(CACHE) $(if $(CV_SUBJECTS),--subjects $(CV_SUBJECTS))
cv: install
	$(CV_TRAIN) $(TRAIN_ARGS)
	$(BIN)/mixnet-bids-cv --recipe $(RECIPE) --report

# The same in the background at low priority, committing each fold's state to git hourly;
# its log goes to logs/cv-<recipe>.log. CV_JOBS=N runs N processes that share the folds'
# planes (each trains the next plane no other holds; logs/cv-<recipe>-<k>.log): with
# TRAIN_ARGS="--threads 1", one per core trains more per hour than one on every core
# (make bench-train-processes). E.g. make cv-background RECIPE=wholebrain-synth-v2
# CV_SUBJECTS="7 070 148" CV_JOBS=2 TRAIN_ARGS="--threads 1".
CV_JOBS ?= 1
cv-background: install
	@if [ "$(CV_JOBS)" -gt 1 ] && ! echo "$(TRAIN_ARGS)" | grep -q -- '--threads'; then \
	  echo "make cv-background: CV_JOBS=$(CV_JOBS) jobs would each use every core; give" \
	       "each its share, e.g. TRAIN_ARGS=\"--threads 1\"" >&2; exit 2; fi
	mkdir -p logs
	for job in $$(seq $(CV_JOBS)); do \
	  log=logs/cv-$(RECIPE)$(if $(filter-out 1,$(CV_JOBS)),-$$job).log; \
	  ( trap '' HUP; nice -n 19 $(CV_TRAIN) --commit-every 3600 $(TRAIN_ARGS) \
	    && nice -n 19 $(BIN)/mixnet-bids-cv --recipe $(RECIPE) --report ) \
	    >> $$log 2>&1 < /dev/null & \
	  echo "cross-validating $(RECIPE) in the background: tail -f $$log"; \
	done

# Shipped weights scored on the (training) subjects, per modality subset -> runs/shipped.
accuracy-shipped: install
	$(BIN)/mixnet-bids-cv --mrbrains $(MRBRAINS) --cache $(CACHE) --out runs/shipped --shipped

clean:
	rm -rf demo_output work_dir
