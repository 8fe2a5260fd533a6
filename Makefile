# Two commands do all set-up on a fresh machine:
#   make demo   install the core package, then build a dataset from the built-in procedural source (no network)
#   make test   install everything (test tools, Blender, docs tools), then run the test suite (which builds the docs)
# and one for the documentation site:
#   make docs   regenerate docs/reference/cli.md from the CLI's parser, then build the site into build/site
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin
DEMO_OUT ?= data/demo

.PHONY: demo test install system-deps bench docs clean

system-deps:
	@$(PYTHON) -c "import ctypes.util, sys; sys.exit(ctypes.util.find_library('EGL') is None)" || \
	  (echo "installing Mesa EGL for headless rendering"; apt-get update -qq && \
	   apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri libglx-mesa0)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# the demo needs the core package only (no PyTorch, no Blender); tests need the test tools, PyTorch (the models
# are tested), Blender (its renderer is tested) and the docs tools (tests/test_docs.py builds the site)
$(VENV)/.installed-core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed: pyproject.toml docs/requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,train,blender]" -r docs/requirements.txt
	touch $(VENV)/.installed-core $(VENV)/.installed-docs $@

$(VENV)/.installed-docs: docs/requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -r docs/requirements.txt
	touch $@

install: system-deps $(VENV)/.installed

demo: system-deps $(VENV)/.installed-core
	$(BIN)/pipeline run procedural --limit 60 --out $(DEMO_OUT)
	$(BIN)/pipeline inspect $(DEMO_OUT)

test: install
	$(BIN)/python -m pytest -q

docs: $(VENV)/.installed-docs
	$(BIN)/python scripts/gen_cli_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install
	$(BIN)/python bench/bench_render.py
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf $(VENV) data build *.egg-info
