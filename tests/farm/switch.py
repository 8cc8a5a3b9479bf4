"""A stand-in for a farm's network power switch (PDU) and relay board, wired to a twin.

THIS IS A FAKE: it stands for hardware that cannot run here, a PDU outlet feeding a board and two
relay channels on the board's EN and IO0 pins. It answers the HTTP requests labgrid's own drivers
send, as the exporter YAML of tests/farm/test_farm_power.py declares them:

- labgrid's `simplerest` power model (labgrid/driver/power/simplerest.py, NetworkPowerDriver):
  `GET /outlet/<index>/<0|1>` switches the outlet, `GET /outlet/<index>` answers `0` or `1`;
- labgrid's HttpDigitalOutput (labgrid/driver/httpdigitaloutput.py): `PUT /pin/en` or
  `PUT /pin/io0` with the body `1` asserts the output (the pin is pulled low: EN holds the chip in
  reset, IO0 selects download mode at the next boot, as pressing the board's EN or BOOT button
  does), `0` releases it; `GET /pin/<name>` answers `1` or `0`.

Behind it is the twin's own control path: the outlet kills and restarts the twin process
(VirtualBoard.power_off/power_on, the twin's power cut), the pins are the twin's wires on its
standard input (`EN 0`, `IO0 0`, ...; ota_rig.virtual.transport.Wires). Every request is kept
in `requests` and in `log_path` (one JSON object a line) with the client's User-Agent, the
evidence that labgrid's driver, and nothing else, moved the board.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from ota_rig.bench.board import VirtualBoard

WIRE = {"en": "EN", "io0": "IO0"}


class Switch:
    """The outlet and the two pins of one twin; `url` is where it listens."""

    def __init__(self, twin: VirtualBoard, log_path: Path) -> None:
        self.twin = twin
        self.log_path = log_path
        self.powered = True
        self.asserted = {"en": False, "io0": False}
        self.requests: list[dict[str, str]] = []
        switch = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                switch.answer(self, "GET", "")

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                switch.answer(self, "PUT", body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)  # one request at a time, as a relay
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def answer(self, handler: BaseHTTPRequestHandler, method: str, body: str) -> None:
        self.requests.append({"method": method, "path": handler.path, "body": body,
                              "user_agent": handler.headers.get("User-Agent", "")})
        with self.log_path.open("a") as log:
            log.write(json.dumps(self.requests[-1]) + "\n")
        try:
            status, text = 200, self.act(method, handler.path, body)
        except LookupError as err:
            status, text = 404, str(err)
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(text)))
        handler.end_headers()
        handler.wfile.write(text.encode())

    def act(self, method: str, path: str, body: str) -> str:
        outlet = re.fullmatch(r"/outlet/1(?:/([01]))?", path)
        pin = re.fullmatch(r"/pin/(en|io0)", path)
        if outlet and method == "GET":
            if outlet.group(1) is not None:
                self.switch_outlet(outlet.group(1) == "1")
            return "1" if self.powered else "0"
        if pin and method == "PUT" and body in ("0", "1"):
            self.asserted[pin.group(1)] = body == "1"
            if self.powered:
                self.twin.wire(f"{WIRE[pin.group(1)]} {0 if body == '1' else 1}")
            return body
        if pin and method == "GET":
            return "1" if self.asserted[pin.group(1)] else "0"
        raise LookupError(f"no such control: {method} {path}")

    def switch_outlet(self, on: bool) -> None:
        if on and not self.powered:
            self.twin.power_on()
            # Pins a relay still holds reach the chip once it has power (the twin starts with
            # both released, then takes them: not the same instant as on a board; the rig
            # releases both before it cuts the power, so no run here depends on it).
            self.twin.wire(*(f"{WIRE[name]} 0" for name, held in self.asserted.items() if held))
        elif not on and self.powered:
            self.twin.power_off()
        self.powered = on

    def calls(self, path_prefix: str) -> list[str]:
        """What labgrid sent to one control, in order: `GET /outlet/1/0`, `PUT /pin/en 1`, ..."""
        return [f"{r['method']} {r['path']}" + (f" {r['body']}" if r["body"] else "")
                for r in self.requests if r["path"].startswith(path_prefix)]


@contextmanager
def switch(twin: VirtualBoard, log_path: Path) -> Iterator[Switch]:
    made = Switch(twin, log_path)
    thread = threading.Thread(target=made.server.serve_forever, name="switch", daemon=True)
    thread.start()
    try:
        yield made
    finally:
        made.server.shutdown()
        made.server.server_close()
        thread.join(timeout=5)
