# Two commands on a fresh machine: `make demo` and `make test`. Every target sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test check lint typecheck services bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[s3,gcs,azure,obstore,cli,test]"
	touch $@

venv: $(VENV)/.installed

## The demo: many workers share workflows on local disk; one is killed and another takes over.
demo: venv
	$(BIN)/objstore-wfp demo

## External servers the tests use (moto, LocalStack, Azurite, fake-gcs-server, Redis, PostgreSQL).
services: venv
	@for script in scripts/services/install-*.sh; do \
		[ -e "$$script" ] || continue; \
		echo "== $$script"; VENV=$(VENV) bash "$$script" || exit 1; \
	done

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

## The whole test suite, as CI runs it.
test: venv services lint typecheck
	OBJSTORE_WFP_REQUIRE_SERVICES=1 $(BIN)/pytest -q

bench: venv services
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
