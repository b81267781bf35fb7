# facial-keypoints: `make test` runs the test suite, `make reproduce` re-runs every chapter.
# Each target creates or refreshes the local virtual environment (.venv) when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: help install test test-fast reproduce models experiments notebook lab benchmarks data lock clean-cache peers book

help:
	@echo "make install     create .venv and install the project (every target does this when needed)"
	@echo "make test        run the tests: unit tests + every notebook under nbval (FKP_PROFILE=smoke)"
	@echo "make reproduce   execute every notebook in order, in place, writing figures/ (FKP_PROFILE, default quick)"
	@echo "make models      train every recipe in recipes/ from scratch into models/<recipe>/ (profile full; resumes)"
	@echo "make experiments train LeNet's experiments in experiments/ and write chapter 05's table (profile quick)"
	@echo "make experiments-resnet50  the same for ResNet-50's experiments (profile full: hours each)"
	@echo "make benchmarks  run the speed benchmarks in benchmarks/"
	@echo "make peers       run dlib, MediaPipe and MTCNN on the test faces in their own environment (results/)"
	@echo "make data        download YouTube-Faces 68, the portraits and the two clips into data/"
	@echo "make lab         start JupyterLab"
	@echo "make book        render the chapters as a book (Jupyter Book, from the stored outputs) into build/book/"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# the book's tools (the optional `book` extra) go into the same environment, on top of the dev install
BOOK_STAMP := $(VENV)/.installed-book
$(BOOK_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,book]"
	@touch $@

test: $(STAMP)
	FKP_PROFILE=smoke FKP_FIGURES_DIR=$(CURDIR)/build/smoke-figures $(BIN)/pytest --nbval-lax tests $(NOTEBOOKS)

test-fast: $(STAMP)
	$(BIN)/pytest tests

reproduce: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
		echo "== $$nb (profile $${FKP_PROFILE:-quick})"; start=$$SECONDS; \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 "$$nb" || exit 1; \
		echo "== $$nb: $$((SECONDS - start)) s"; \
	done

RECIPES := $(sort $(wildcard recipes/*.toml))
# LeNet's experiments are compared in minutes; ResNet-50's only mean something on all the data (hours each).
# EXPERIMENT_PROFILE=... overrides both.
EXPERIMENT_PROFILE_lenet ?= quick
EXPERIMENT_PROFILE_resnet50 ?= full

models: $(STAMP)
	@for r in $(RECIPES); do n=$$(basename $$r .toml); \
		$(BIN)/facekp train $$r --profile full --out models/$$n || exit 1; done
	$(BIN)/facekp readme

experiments: experiments-lenet

experiments-%: $(STAMP)
	@p=$(or $(EXPERIMENT_PROFILE),$(EXPERIMENT_PROFILE_$*)); for e in experiments/$*_*.toml; do n=$$(basename $$e .toml); \
		$(BIN)/facekp train $$e --profile $$p --out models/runs/$$n-$$p || exit 1; done; \
	$(BIN)/facekp table models/runs/$*_*-$$p --out models/experiments/$*.csv

PEERS := .peers-venv
$(PEERS)/.installed: peers/requirements.txt
	@test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet -r peers/requirements.txt
	@touch $@

peers: $(PEERS)/.installed
	$(PEERS)/bin/python peers/run.py --out results

benchmarks: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python "$$b" || exit 1; done

data: $(STAMP)
	$(BIN)/facekp download youtube-faces-68
	$(BIN)/facekp download portraits
	$(BIN)/facekp download videos

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

lock: $(BOOK_STAMP)
	$(BIN)/pip freeze --exclude-editable > constraints.txt

# The book: README.md, book/licences.md, then every chapter with the outputs stored in it (never executed), built from
# a staging copy (book/stage.py) so that paths relative to the repository root resolve. Offline; any warning (a broken
# link or cross-reference, a missing toc entry or image) fails the build.
book: $(BOOK_STAMP)
	rm -rf build/book                       # no page of a renamed or deleted chapter survives
	$(BIN)/python book/stage.py build/book-src
	$(BIN)/jupyter-book build build/book-src --path-output build/book --all --warningiserror --nitpick --keep-going
	@echo "book: $(CURDIR)/build/book/_build/html/index.html"

clean-cache:
	rm -rf data/cache build/smoke-figures
