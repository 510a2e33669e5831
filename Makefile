# One-command set-up on a fresh Debian-like machine with Python 3.11:
#   make demo   - venv, install, redis-server if missing, start the stack, run a demo
#   make test   - same bootstrap, then the whole test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: bootstrap demo test test-kafka down clean lint loadtest peers

bootstrap: $(STAMP) redis-server prometheus-bin

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert (3,11) <= sys.version_info[:2] < (3,13), "atp-stream needs Python 3.11 or 3.12, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# redis-server comes from the OS packages; install it only when it is missing.
.PHONY: redis-server
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing it with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	}
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server is still missing: install Debian's redis-server package"; exit 1; }

# promtool (tests/test_observability.py) and prometheus (tests/test_prometheus_e2e.py) come from
# Debian's prometheus package: installed only when missing, without its recommended exporters, and
# its packaged service left stopped (the tests start their own on a free loopback port).
.PHONY: prometheus-bin
prometheus-bin:
	@{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || { \
	  echo "promtool/prometheus not found: installing Debian's prometheus package with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  if [ -d /run/systemd/system ]; then $$SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; fi; \
	}
	@command -v promtool >/dev/null 2>&1 || { echo "promtool is still missing: install Debian's prometheus package"; exit 1; }

demo: bootstrap
	$(BIN)/atp demo

test: bootstrap lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-kafka

# The integration tests again, on a real Apache Kafka (single-node KRaft, run from the jars that
# deploy/kafka/pom.xml pins; Maven fetches them once), but for those marked one_broker: the broker
# plays no part in them (the API and Redis alone, a private tansu stack, Prometheus's rules). Without Java or Maven the tier is skipped
# with one line, unless KAFKA_TIER=required (.ci/run sets it): then they are installed with
# apt-get, and a tier that cannot run fails the build.
test-kafka: bootstrap
	@if ! { command -v java && command -v mvn; } >/dev/null 2>&1; then \
	  if [ "$$KAFKA_TIER" != required ]; then \
	    echo "skipping the Kafka tier: it needs Java 17 and Maven (apt-get install openjdk-17-jre-headless maven)"; exit 0; \
	  fi; \
	  echo "the Kafka tier is required (KAFKA_TIER=required): installing Java and Maven with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null || exit 1; \
	fi; \
	TEST_BROKER=kafka $(BIN)/python -m pytest -m "integration and not one_broker" $(PYTEST_ARGS)

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/mypy

# The load test (wrk from the OS packages, installed when missing) and the peers benchmark (Quix
# Streams in its own environment, .venv-peers). Reports go to loadtest/reports/.
loadtest: bootstrap
	@command -v wrk >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; \
	}
	$(BIN)/atp loadtest

peers: bootstrap
	test -x .venv-peers/bin/python || $(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet -e '.[dev,peers]'
	.venv-peers/bin/python -m loadtest.bench.peers --events 100000

down:
	-$(BIN)/atp stack down

clean: down
	rm -rf .atp $(VENV) .venv-peers *.egg-info
