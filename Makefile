# Two commands do everything on a fresh machine:
#   make demo   -- set up, start the local stack (Tarantool cluster, Kafka, consumers, API) and run the demo
#   make test   -- set up, then run lint, types and the whole test suite against real Tarantool and Kafka
# `make setup` is idempotent; both run it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_LIBS := .rtrec/kafka/libs
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: setup demo test lint down bench evaluate-large clean

setup: $(BIN)/rtrec $(KAFKA_LIBS)/.complete .rtrec/.system-packages

# Debian packages: Tarantool (2.6 in bookworm), a JDK to run Kafka and Maven to fetch it.
.rtrec/.system-packages:
	@mkdir -p .rtrec
	@missing=""; \
	command -v tarantool >/dev/null || missing="$$missing tarantool"; \
	command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@touch $@

$(BIN)/rtrec: pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# The real Apache Kafka broker and its dependencies from Maven Central (see deploy/kafka/pom.xml).
$(KAFKA_LIBS)/.complete: deploy/kafka/pom.xml .rtrec/.system-packages
	@mkdir -p $(KAFKA_LIBS)
	mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
	    -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	@touch $@

demo: setup
	$(BIN)/rtrec demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

down:
	$(BIN)/rtrec down

bench: setup
	$(BIN)/rtrec bench store --json
	$(BIN)/rtrec bench ingest --json

# A long run, outside `make test`: a simulated bank large enough for the served model's and the logistic
# regression's MAP@3 intervals to part (docs/models.md); 13 minutes on 2 cores, ~7 GB of store memory.
evaluate-large: setup
	$(BIN)/rtrec evaluate --dataset simulated --large

clean: down
	rm -rf .rtrec/run
