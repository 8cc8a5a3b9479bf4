# Two entry points: `make demo` (the rig's main job on the virtual ESP32: `rig run`) and `make test`.
# Both create .venv and install the rig into it on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench hardware clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,labgrid]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/rig run

# RFC2217 tests spend their time in pyserial's 50 ms polls, not on the CPU: run them in parallel.
test: $(VENV)/.installed
	$(PY) -m pytest -n 8 --dist loadgroup

# What keeps the code as it is laid out: ruff, mypy (no error) and the import contracts
# (pyproject.toml: layers, no cycles). CI runs it before the tests.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench .ci
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# The suite on a real board (docs/hardware.md): make hardware BOARD=/dev/ttyUSB0 (or mac:..., rfc2217://...).
# Wi-Fi from OTA_WIFI_SSID / OTA_WIFI_PASSWORD; arduino-cli with the esp32 core on PATH.
BOARD ?= $(OTA_BOARD)
hardware: $(VENV)/.installed
	@test -n "$(BOARD)" || { echo "make hardware needs BOARD=/dev/ttyUSB0, mac:<MAC> or rfc2217://host:port"; exit 2; }
	$(PY) -m pytest tests/hardware src/ota_rig/scenarios --ota-board "$(BOARD)" --timeout 900 --ota-report out/hardware $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) bench/overhead.py
	$(PY) bench/flash_speed.py
	$(PY) bench/monitor_flood.py
	$(PY) bench/stalled_readers.py --path /firmware/big.bin
	$(PY) bench/tls_client.py

clean:
	rm -rf $(VENV) out .pytest_cache
