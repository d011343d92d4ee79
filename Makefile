PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := -c constraints.txt

.PHONY: demo test test-fast venv test-deps bench clean docs

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install $(CONSTRAINTS) -e ".[test]"
	$(PIP) install --no-deps zennit==0.5.1 lxt==2.1  # LRP oracles of the tests; --no-deps: no torchvision (tests/stubs)
	touch $@

test-deps: $(VENV)/.installed-test

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/lrprec demo --out runs/demo

# Debian's chromium drives the browser test; playwright never downloads a browser of its own.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium could not be installed; browser tests will fail"

test: $(VENV)/.installed-test browser
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pytest -q

# everything but the end-to-end (slow) and browser tests, for quick iterations; `make test` runs all
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m "not slow and not browser"

# the documentation site into site/: no broken link, no missing reference (the CLI page is generated from the typer app)
docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

bench: $(VENV)/.installed-test
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) runs build site *.egg-info src/*.egg-info
