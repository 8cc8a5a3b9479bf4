# Two entry points: `make demo` (the rig's main job on the virtual ESP32) and `make test`.
# Both create .venv and install the rig into it on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

demo: $(VENV)/.installed
	$(PY) -m rig.demo

# RFC2217 tests spend their time in pyserial's 50 ms polls, not on the CPU: run them in parallel.
test: $(VENV)/.installed
	$(PY) -m pytest -n 8

bench: $(VENV)/.installed
	$(PY) bench/ota_scenarios.py
	$(PY) bench/flash_speed.py

clean:
	rm -rf $(VENV) out .pytest_cache
