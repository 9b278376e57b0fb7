# make demo: create .venv, install the core, run the quickstart suite (report in reports/quickstart/)
# make test: create .venv if needed, install, check the import contracts, run the whole test suite
# make test-fast: the tests that start no process and are not end-to-end (under 2 minutes)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORE := $(VENV)/.installed-core

.PHONY: demo test test-fast bench bench-all install chromium clean litert-env

# The core (torch, ONNX Runtime, LoadGen): all `make demo` needs, about a minute on a fresh 2-core machine.
$(CORE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: an open range would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $(CORE)

LLAMA_CPP_VERSION := 0.3.36
LLAMA_WHEELS := .wheels/llama-cpp-avx2
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

# Everything the tests exercise, on top of the core.
$(STAMP): $(CORE)
	# fleet: the Ray cluster tests (tests/test_fleet.py) start a local cluster and fail without it
	# llm: generative models on every runtime (tests/execution/test_generation.py); pip compiles
	# llama-cpp-python from source the first time (about 5-10 minutes on 2 cores), then reuses its wheel
	# openvino, executorch, litert: the deployment runtimes, tested for real (tests/runners/test_openvino.py,
	# test_executorch.py, test_litert.py; LiteRT's converter is `make litert-env`'s venv)
	# llama-cpp-python is built portable (AVX2, no -march=native) into a wheelhouse of ours: a native build on
	# an AMX host takes llama.cpp's AMX path, which segfaults on Q8_0 here (ggml-org/llama.cpp#20824), and
	# pip's cached wheel of a native build would SIGILL on the next host without AVX-512
	test -n "$$(ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl 2>/dev/null)" || \
		CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
		llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(LLAMA_WHEELS)
	$(BIN)/pip install --quiet $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/pip install --quiet -e '.[test,fleet,llm,openvino,executorch,litert]'
	touch $(STAMP)

install: $(STAMP)

# LiteRT's converter (litert-torch) in a venv of its own: it downgrades typing_extensions, which breaks
# cattrs (ExecuTorch's) in the main one, and pulls jax and kagglehub. The litert runner converts in a
# subprocess run by this venv's python (effbench/runners/litert_convert.py; docs/runtime-notes.md, LiteRT).
LITERT_VENV := .venv-litert
LITERT_STAMP := $(LITERT_VENV)/.installed
$(LITERT_STAMP):
	test -x $(LITERT_VENV)/bin/python || $(PYTHON) -m venv $(LITERT_VENV)
	echo '*' > $(LITERT_VENV)/.gitignore
	$(LITERT_VENV)/bin/pip install --quiet --upgrade pip
	# torch first, pinned like the main venv's (an open range would pull a multi-GB CUDA build)
	$(LITERT_VENV)/bin/pip install --quiet torch==2.13.0
	$(LITERT_VENV)/bin/pip install --quiet litert-torch==0.10.0
	touch $(LITERT_STAMP)

litert-env: $(LITERT_STAMP)

demo: $(CORE)
	$(BIN)/effbench run suites/quickstart.yaml

# Headless Chromium renders the HTML report in the tests (they fail without it); installed where this machine allows.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1) \
	  || echo "note: chromium could not be installed; the report rendering tests will fail"; }

test: $(STAMP) chromium litert-env
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow and not spawns"

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/flops_100m.py

# The long ones (about 2 hours together; run them on a quiet machine): variant speedups, where INT8 pays
# on CNNs, speedups from paired blocks, and the gate's false-positive and detection rates.
bench-all: bench
	$(BIN)/python bench/variants.py
	$(BIN)/python bench/int8_width.py
	$(BIN)/python bench/paired_speedup.py
	$(BIN)/python bench/gate_false_positives.py --pairs 3 --rounds 12 --quick --modes ab
	$(BIN)/python bench/projection_error.py --json bench/projection_error.json

clean:
	rm -rf $(VENV) $(LITERT_VENV) build *.egg-info
