# One command to run the service, one to run the tests; both set up the virtualenv first.
# The virtualenv (the service, the event models and the client, editable) is reused and re-installed
# only when one of their pyproject.toml files changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PROJECTS := pyproject.toml packages/event-models/pyproject.toml packages/client/pyproject.toml
STAMP  := $(VENV)/.installed-$(shell cat $(PROJECTS) | sha1sum | cut -c1-12)

# The analytics component runs in an environment of its own: Quix Streams caps confluent-kafka,
# pydantic and pydantic-settings below the versions the service runs (packages/analytics).
AVENV  := .venv-analytics
APY    := $(AVENV)/bin/python
ASTAMP := $(AVENV)/.installed-$(shell cat $(PROJECTS) packages/analytics/pyproject.toml | sha1sum | cut -c1-12)

.PHONY: analytics-install analytics install run test chromium console-screenshots lint typecheck alerts postgres unit integration test-kafka kafka-up kafka-down proto clean bench bench-outage profile bench-compare bench-instructions

install: $(STAMP)

$(STAMP): $(PROJECTS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e packages/event-models -e 'packages/client[kafka]' -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

analytics-install: $(ASTAMP)

$(ASTAMP): $(PROJECTS) packages/analytics/pyproject.toml
	$(PYTHON) -m venv $(AVENV)
	$(APY) -m pip install --quiet --upgrade pip
	$(APY) -m pip install --quiet -e packages/event-models -e . -e 'packages/analytics[dev]'
	rm -f $(AVENV)/.installed-*
	touch $@

## analytics: the learning-analytics component alone (on KAFKA_BROKERS, or the dev broker of `make run`)
analytics: analytics-install
	$(AVENV)/bin/event-ingest-analytics

## run: migrate the database, start the service on PORT (and a local dev broker when KAFKA_BROKERS is unset)
# Authentication is off for local development unless the environment or .env says otherwise.
RUN_AUTH := $(if $(shell grep -s '^AUTH_ENABLED=' .env),,AUTH_ENABLED=$${AUTH_ENABLED:-false})
# The shipped event types (workflow and training events) and their topics, unless .env says otherwise.
comma := ,
RUN_TYPES := $(if $(shell grep -s '^EVENT_TYPES_FILES=' .env),,EVENT_TYPES_FILES=$${EVENT_TYPES_FILES-event_types/workflow.json$(comma)event_types/training.json})
RUN_TOPICS := $(if $(shell grep -s '^KAFKA_ALLOWED_TOPICS=' .env),,KAFKA_ALLOWED_TOPICS=$${KAFKA_ALLOWED_TOPICS-workflow.events$(comma)training.events})

# ...and the learning-analytics component beside it, unless ANALYTICS_ENABLED=false (stopped with it).
RUN_ANALYTICS := $(if $(filter false 0 no,$(ANALYTICS_ENABLED) $(shell sed -n 's/^ANALYTICS_ENABLED=//p' .env 2>/dev/null)),,yes)

run: install $(if $(RUN_ANALYTICS),analytics-install)
	$(VENV)/bin/event-ingest migrate
ifeq ($(RUN_ANALYTICS),yes)
	@$(AVENV)/bin/event-ingest-analytics & analytics=$$!; \
	trap 'kill $$analytics 2>/dev/null; wait $$analytics' EXIT INT TERM; \
	$(RUN_AUTH) $(RUN_TYPES) $(RUN_TOPICS) $(VENV)/bin/event-ingest serve
else
	$(RUN_AUTH) $(RUN_TYPES) $(RUN_TOPICS) $(VENV)/bin/event-ingest serve
endif

## test: ruff, mypy, the alert rules' tests and the whole pytest suite (starts its own broker and
## PostgreSQL on free ports; the console's browser tests drive Debian's Chromium)
test: install analytics-install lint typecheck alerts postgres chromium
	$(PY) -m pytest
	$(APY) -m pytest -q packages/analytics/tests

## chromium: Debian's Chromium for the browser tests (Playwright drives it; it never downloads one)
chromium:
	@test -n "$(CHROMIUM_PATH)" || command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) || (echo "Chromium is missing: install the Debian package chromium, or set CHROMIUM_PATH" && false)

## console-screenshots: the browser tests, saving a screenshot of each console page in docs/console/
console-screenshots: install chromium
	CONSOLE_SCREENSHOTS_DIR=docs/console $(PY) -m pytest tests/browser

## postgres: Debian's PostgreSQL server binaries, which the tests start a throwaway server from
# (nothing is installed when TEST_POSTGRES_URL names a server of your own).
postgres:
	@test -n "$(TEST_POSTGRES_URL)" || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null) || (echo "PostgreSQL server binaries are missing: install the Debian package postgresql, or set TEST_POSTGRES_URL" && false)

## alerts: promtool checks and unit-tests deploy/prometheus/alerts.yml (installs Debian's prometheus when missing)
alerts:
	@command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) || (echo "promtool is missing: install the Debian package prometheus" && false)
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts_test.yml

## test-kafka: the integration suite on Apache Kafka (one node, started by the tests unless KAFKA_BROKERS
## is set) plus the three-node cluster and fault tests; needs Java 17+ and Maven
KAFKA_CLI := $(PY) -m tests.services.apache_kafka
NEED_JAVA = @command -v java >/dev/null && command -v mvn >/dev/null || (echo "Apache Kafka needs Java 17+ and Maven (mvn) on PATH: install them (Debian: default-jdk-headless maven)" && false)

test-kafka: install analytics-install postgres
	$(NEED_JAVA)
	$(KAFKA_CLI) install >/dev/null
	TEST_BROKER=kafka $(PY) -m pytest tests/integration $(PYTEST_ARGS)

## kafka-up: a local Apache Kafka on 127.0.0.1:19092.. (KAFKA_LOCAL_BROKERS=1|3); kafka-down stops it
kafka-up: install
	$(NEED_JAVA)
	@$(KAFKA_CLI) up --brokers $${KAFKA_LOCAL_BROKERS:-1}

kafka-down: install
	@$(KAFKA_CLI) down

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install analytics-install
	$(VENV)/bin/mypy app packages/event-models/event_models packages/client/ingest_client tests bench
	$(AVENV)/bin/mypy packages/analytics/learning_analytics packages/analytics/tests

unit: install
	$(PY) -m pytest tests/unit

integration: install
	$(PY) -m pytest tests/integration

## proto: regenerate app/serialization/generated from proto/*.proto with the pinned generator
proto: install
	PYTHON=$(PY) scripts/gen_proto.sh

clean:
	rm -rf $(VENV) $(AVENV) .mypy_cache .ruff_cache .pytest_cache .run .cache

# The load generator of bench, profile and bench-compare: Debian's wrk, installed when missing.
NEED_WRK = @command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || (echo "install wrk" && false)

## bench: the speed targets (defaults and shipped settings against bare FastAPI and the design's
## floors, medians of rounds, a plot), then the service vs bare FastAPI vs raw confluent-kafka survey,
## then taking events while Kafka is down, then the console's pages with thousands of rows, then the
## learning analytics under the batch load;
## printed and written to bench/results/ (WORKERS=n, BENCH_TARGETS_ARGS="--rounds 3 --soak 300")
bench: install analytics-install postgres
	$(NEED_WRK)
	$(PY) bench/targets.py $(BENCH_TARGETS_ARGS)
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/outage.py $(BENCH_OUTAGE_ARGS)
	$(PY) bench/console.py $(BENCH_CONSOLE_ARGS)
	$(PY) bench/analytics.py $(BENCH_ANALYTICS_ARGS)

## bench-outage: batches with Kafka up, then down (breaker open), spool on SQLite and PostgreSQL
bench-outage: install postgres
	$(NEED_WRK)
	$(PY) bench/outage.py $(BENCH_OUTAGE_ARGS)

## profile: where one worker's CPU goes under load, from py-spy samples (MODE=single|batch, PROFILE_ARGS="--gil --shipped --workers 2")
profile: install
	$(NEED_WRK)
	$(PY) bench/profile.py $${MODE:-batch} $(PROFILE_ARGS)

## bench-instructions: CPU instructions an event costs in the main thread, counted by callgrind
## (MODE=single|batch, INSTRUCTIONS_ARGS="--requests 200 --no-fast-path"); steady where timings are not
bench-instructions: install
	@command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind) || (echo "install valgrind" && false)
	$(PY) bench/instructions.py $${MODE:-batch} $(INSTRUCTIONS_ARGS)

## bench-compare: git revisions measured side by side in one run (REVS="main~3 main",
## COMPARE_ARGS="--workers 2 --modes batch --rounds 5"; --shipped: the shipped settings on PostgreSQL)
bench-compare: install postgres
	$(NEED_WRK)
	$(PY) bench/compare.py $${REVS:-HEAD~1 HEAD} $${COMPARE_ARGS}
