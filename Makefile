# Two commands: `make run` (install + the embedded demo search) and `make test` (install + the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python search_darts.py --conf_path conf/demo/digits.json --Running ista_single_doal

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) train_model .pytest_cache
