# The two commands of the quick start are `make lab` and `make test`; both set up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp
DEPS   := pyproject.toml constraints.txt Makefile
# Debian packages for the sandboxed grader (bubblewrap) and the browser tests (chromium).
SYSTEM_PACKAGES := bubblewrap chromium
ARGS   ?=
# The folder JupyterLab serves (`make lab LAB_ROOT=solutions` opens the instructor's side;
# the browser tests serve a scratch copy so that running and saving leaves the repo alone).
LAB_ROOT ?= course
PYTEST_ARGS ?=
# Test files run side by side (pytest-xdist), a whole file per worker: files that share a
# session's graded class keep it to one worker. Many tests spend part of their time waiting
# (sleeps and kills in the fault tests, hostile cells' timeouts, kernel starts, a browser), so
# the default is two workers more than the cores, at most 4. Not measured against 3 workers on
# the same tree: a quiet fresh clone ran the suite in 1,429 s with 4 workers. xdist would hand
# out the files with the most tests first; --no-loadscope-reorder keeps tests/conftest.py's
# order, longest first. `make test TEST_WORKERS=0` runs serially.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n + 2 < 4 ? n + 2 : 4 )))

.PHONY: setup system-deps lab test release grade train bench lint format clean

setup: $(STAMP)

$(STAMP): $(DEPS)
	@echo "==> setup: virtual environment in $(VENV) (re-run only when $(DEPS) change)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> setup: installing the course (editable) with its dev extras; torch pinned by constraints.txt"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@$(MAKE) --no-print-directory system-deps
	@touch $(STAMP)
	@echo "==> setup: done"

# Installs Debian packages when it can (root, or password-less sudo); otherwise says what is
# missing. Tests that need them skip with a reason.
system-deps:
	@missing=""; \
	for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then echo "==> system packages present:$(foreach p,$(SYSTEM_PACKAGES), $(p))"; exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then echo "==> no apt-get: install$$missing yourself (the tests that need them will skip)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "==> not root and no sudo: install$$missing yourself (the tests that need them will skip)"; exit 0; fi; \
	echo "==> installing Debian packages:$$missing"; \
	$$SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	  && echo "==> installed:$$missing" || echo "==> could not install$$missing (the tests that need them will skip)"

# JupyterLab refuses to run as root unless told; containers and CI often are root.
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

# What nbgrader shows in the Lab (course/lab_profile.py): an instructor's checkout (it has
# autograder/) gets every nbgrader tool; a student's bundle gets the Validate button, and the
# Assignment List only where an exchange is set up. `make lab LAB_PROFILE=student` previews it.
LAB_PROFILE ?= $(if $(wildcard autograder/__init__.py),instructor,student)
LAB_CONFIG   = $(CURDIR)/$(VENV)/lab-config/$(LAB_PROFILE)

lab: setup
	@$(BIN)/python -m course.lab_profile $(LAB_PROFILE) $(LAB_CONFIG)
	JUPYTER_CONFIG_PATH="$(LAB_CONFIG)$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" \
	  $(BIN)/jupyter lab --ServerApp.root_dir=$(LAB_ROOT) $(ROOT_FLAG) $(ARGS)

# The test suite lives in the instructor's checkout (tests/); a student's bundle runs the
# student-side self-test instead (course/selftest.py: the environment, the lessons' checks and
# widgets, the Lab's configuration; no answers needed).
test: setup
	@if [ -d tests ]; then $(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS); \
	else echo "==> no tests/ here (the test suite belongs to the instructor's checkout): running the student self-test"; \
	  $(BIN)/python -m course.selftest; fi

# The instructor's commands need autograder/ and solutions/, which a student's bundle lacks.
INSTRUCTOR_ONLY = @test -d autograder -a -d solutions || { echo "make $@ is an instructor's command: this checkout has no autograder/ or solutions/"; exit 2; }

release: setup
	$(INSTRUCTOR_ONLY)
	$(BIN)/python -m autograder release

grade: setup
	$(INSTRUCTOR_ONLY)
	$(BIN)/python -m autograder grade $(ARGS)

train: setup
	$(BIN)/python -m course.lm train --steps 3000 $(ARGS)

bench: setup
	$(BIN)/python -m course.lm bench $(ARGS)
	@if [ -d autograder ]; then $(BIN)/python -m autograder bench; fi

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis runs grading
