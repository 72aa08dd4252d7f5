# One command to run the service, one to run the tests; both set up the virtualenv first.
# The virtualenv is reused and re-installed only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install run test lint typecheck alerts unit integration test-kafka proto clean bench profile bench-compare

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

## run: migrate the database, start the service on PORT (and a local dev broker when KAFKA_BROKERS is unset)
# Authentication is off for local development unless the environment or .env says otherwise.
RUN_AUTH := $(if $(shell grep -s '^AUTH_ENABLED=' .env),,AUTH_ENABLED=$${AUTH_ENABLED:-false})

run: install
	$(VENV)/bin/alembic upgrade head
	$(RUN_AUTH) $(PY) -m app

## test: ruff, mypy, the alert rules' tests and the whole pytest suite (starts its own broker on a free port)
test: install lint typecheck alerts
	$(PY) -m pytest

## alerts: promtool checks and unit-tests deploy/prometheus/alerts.yml (installs Debian's prometheus when missing)
alerts:
	@command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) || (echo "promtool is missing: install the Debian package prometheus" && false)
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts_test.yml

## test-kafka: the integration suite against KAFKA_BROKERS (a real cluster; KAFKA_REAL_CLUSTER=1 adds its own tests)
test-kafka: install
	@test -n "$(KAFKA_BROKERS)" || (echo "set KAFKA_BROKERS=host:port,... (e.g. the docker-compose cluster)" && false)
	KAFKA_BROKERS=$(KAFKA_BROKERS) KAFKA_REAL_CLUSTER=$${KAFKA_REAL_CLUSTER:-1} $(PY) -m pytest tests/integration

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy app ingest_client tests bench

unit: install
	$(PY) -m pytest tests/unit

integration: install
	$(PY) -m pytest tests/integration

## proto: regenerate app/serialization/generated from proto/*.proto with the pinned generator
proto: install
	PYTHON=$(PY) scripts/gen_proto.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .run

# The load generator of bench, profile and bench-compare: Debian's wrk, installed when missing.
NEED_WRK = @command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || (echo "install wrk" && false)

## bench: service vs bare FastAPI vs raw confluent-kafka, printed and written to bench/results/ (WORKERS=n)
bench: install
	$(NEED_WRK)
	$(PY) bench/run.py $(BENCH_ARGS)

## profile: where one worker's CPU goes under load, from py-spy samples (MODE=single|batch, PROFILE_ARGS="--gil")
profile: install
	$(NEED_WRK)
	$(PY) bench/profile.py $${MODE:-batch} $(PROFILE_ARGS)

## bench-compare: git revisions measured side by side in one run (REVS="main~3 main")
bench-compare: install
	$(NEED_WRK)
	$(PY) bench/compare.py $${REVS:-HEAD~1 HEAD}
