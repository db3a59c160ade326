# TAT-VPR hardware codesign flow. The two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Optional extras that `make test` installs so CI exercises them.
EXTRAS ?= dev,rtl,dse,qkeras

.PHONY: demo test install clean bench mutation chromium

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tatvpr demo

test: $(STAMP) chromium
	$(PY) -m pytest -q -n 2 tests

# The report's browser test (tests/evaluation/test_report_browser.py) needs headless Chromium, the
# Debian package: installed here when missing and make runs as root (CI); otherwise that test fails
# and says how to install it.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	    else echo "chromium is not installed and this is not root: the report browser test will fail"; fi; }

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) reports/demo build .pytest_cache

# Mutation testing of the claim-bearing modules (issue 11; docs/testing.md). Slow (minutes per
# module on 2 cores), so not part of `make test`. MUTATION_MODULES=packing energy ... to select.
MUTATION_MODULES ?=
mutation: $(STAMP)
	@$(PY) -c "import mutmut" 2>/dev/null || $(PY) -m pip install -q -c constraints.txt -e ".[mutation]"
	$(PY) tools/mutation.py $(MUTATION_MODULES)
