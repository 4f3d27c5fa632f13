# Two commands do everything: `make demo` and `make test`. Both build into .venv from nothing.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test bench lint format clean

# The package builds in pip's isolated build environment (no torch there: the C++ core does not
# link libtorch); build/ keeps the CMake tree between runs.
# torch goes in first, from the pinned CPU build, so the project's `torch>=2.4` range is already
# satisfied and pip never pulls a multi-GB CUDA build.
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml CMakeLists.txt $(shell find csrc python cmake -type f -not -path '*/__pycache__/*')
	$(PIP) install -q ".[test,demo,plot,dev]"
	touch $@

# The kernels run on torch's OpenMP threads (docs/architecture.md#threads), which spin after each
# op; on a machine shared with other jobs, passive waiting keeps the demo's timings and the test
# time independent of the load.
demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/qkernels demo

test: $(VENV)/.installed
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/python -m pytest -q tests

bench: $(VENV)/.installed
	$(VENV)/bin/qkernels bench int8

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check python tests bench
	$(VENV)/bin/ruff format --check python tests bench
	$(VENV)/bin/clang-format --dry-run --Werror $(shell find csrc tests -name '*.cpp' -o -name '*.h' -o -name '*.c')

format: $(VENV)/.installed
	$(VENV)/bin/ruff format python tests bench
	$(VENV)/bin/clang-format -i $(shell find csrc tests -name '*.cpp' -o -name '*.h' -o -name '*.c')

clean:
	rm -rf build $(VENV) qkernels-report
