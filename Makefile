# Two entry points (see README): `make run` launches the app, `make test` runs the whole test suite.
# Each creates .venv and installs the pinned dependencies on first use.
PY ?= python3
VENV := .venv
CONSTRAINTS ?= constraints.txt
STAMP := $(VENV)/.installed

.PHONY: run test bench bundle clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -c $(CONSTRAINTS) -e '.[dev,build]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python main.py

test: $(STAMP)
	$(VENV)/bin/ruff check .
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(VENV)/bin/python -m pip install -q -c $(CONSTRAINTS) -e '.[bench]'
	$(VENV)/bin/python bench/bench_speed.py
	$(VENV)/bin/python bench/bench_load.py
	$(VENV)/bin/python bench/bench_budget.py

BUNDLE_BUDGET_MB ?= 650

bundle: $(STAMP)
	$(VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN build.spec
	@size=$$(du -sm dist/nlica-lab | cut -f1); echo "bundle dist/nlica-lab: $$size MB (budget $(BUNDLE_BUDGET_MB) MB)"; \
	  test $$size -le $(BUNDLE_BUDGET_MB) || { echo "bundle over its size budget"; exit 1; }
	@! find dist/nlica-lab -iname 'libQt6Qml*' -o -iname 'libQt6WebEngine*' -o -iname 'libQt6Quick*' | grep . \
	  || { echo "bundle holds unused Qt libraries"; exit 1; }
	@if $(VENV)/bin/python -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; then \
	  ! find dist/nlica-lab -iname '*nvidia*' | grep . || { echo "a CPU bundle holds CUDA libraries"; exit 1; }; fi
	QT_QPA_PLATFORM=offscreen dist/nlica-lab/nlica-lab --self-test

clean:
	rm -rf build dist
