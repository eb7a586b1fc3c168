# Two entry points (see README): `make run` launches the app, `make test` runs the whole test suite.
# Each creates .venv and installs the pinned dependencies on first use.
PY ?= python3
VENV := .venv
CONSTRAINTS ?= constraints.txt
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bundle clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c $(CONSTRAINTS) -e '.[dev,build]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python main.py

test: $(STAMP)
	$(VENV)/bin/ruff check .
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(VENV)/bin/python bench/bench_speed.py
	$(VENV)/bin/python bench/bench_accuracy.py

bundle: $(STAMP)
	$(VENV)/bin/pyinstaller --noconfirm --clean build.spec
	QT_QPA_PLATFORM=offscreen dist/nlica-lab/nlica-lab --self-test

clean:
	rm -rf build dist
