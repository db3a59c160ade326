# TAT-VPR hardware codesign flow. The two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Optional extras that `make test` installs so CI exercises them.
EXTRAS ?= dev,rtl,dse,qkeras

.PHONY: demo test install clean bench mutation

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tatvpr demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

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
