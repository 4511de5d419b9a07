# Two commands on a fresh machine: `make demo` and `make test`. Every target sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip >= 21.3 installs a pyproject-only package in editable mode; newer is faster.
PIP_MIN := pip>=23

.PHONY: venv demo test quick check lint typecheck services bench bench-peers clean

# The demo needs the package and rich only: no cloud SDKs, test servers or linters.
$(VENV)/.installed-demo: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "== installing objstore-wfp[cli] (the package and rich) into $(VENV)"
	@$(BIN)/pip install -q --disable-pip-version-check "$(PIP_MIN)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[cli]"
	@touch $@

# Everything: the cloud stores' SDKs, the demo, and what tests, lint and type checks need.
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "== installing objstore-wfp[s3,gcs,azure,obstore,cli,test] into $(VENV) (1-2 minutes on a fresh machine)"
	@$(BIN)/pip install -q --disable-pip-version-check "$(PIP_MIN)"
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[s3,gcs,azure,obstore,cli,test]"
	@touch $@ $(VENV)/.installed-demo

venv: $(VENV)/.installed

## The demo: many workers share workflows on local disk; one is killed and another takes over.
demo: $(VENV)/.installed-demo
	$(BIN)/objstore-wfp demo

## External servers the tests use (moto, LocalStack, Azurite, fake-gcs-server, Redis, PostgreSQL).
## Each script says what it installs first, and how long it took after.
services: venv
	@scripts="$$(ls scripts/services/install-*.sh 2>/dev/null)"; \
	total=$$(echo $$scripts | wc -w); n=0; \
	for script in $$scripts; do \
		n=$$((n + 1)); start=$$(date +%s); \
		echo "== [$$n/$$total] $$script: $$(sed -n '2s/^# //p' "$$script")"; \
		VENV=$(VENV) bash "$$script" || exit 1; \
		echo "   done in $$(($$(date +%s) - start)) s"; \
	done

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

## The whole test suite, as CI runs it (two pytest workers: CI has two cores).
test: venv services lint typecheck
	OBJSTORE_WFP_REQUIRE_SERVICES=1 $(BIN)/pytest -q -n 2

## The inner loop: lint, then the tests not marked slow (servers start as they are needed).
quick: venv
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n 2 -x -m "not slow"

bench: venv services
	$(BIN)/python -m benchmarks

## Our runtime side by side with sayiir 1.0 on PostgreSQL (benchmarks/peers.py); not in `make test`.
bench-peers: venv services
	$(BIN)/pip install -q -e ".[peers]"
	$(BIN)/python -m benchmarks.peers

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
