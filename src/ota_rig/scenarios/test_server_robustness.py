"""Server robustness: while a device downloads its update, a thousand malformed or hostile
connections (ota_rig.server.hostile: bad methods and request lines, huge headers, path traversal, bodies
and chunked coding where none belong, slow senders, TLS garbage, hang-ups) hit the same
listener. The device still updates, nothing outside the firmware folder is served, the server
drops the slow ones itself, still answers afterwards, and records every connection."""

from __future__ import annotations

import datetime
import http.client
import json
import shutil
import socket
import ssl
import time
from collections import Counter

import pytest

from ota_rig.server import hostile
from ota_rig.server.records import ConnectionRecord

from .evidence import BOOT_TIMEOUT, assert_boots_slot_holding

CANARY = b"\xe9CANARY: a file next to the firmware folder, never to be served\n"
DOWNLOAD_SECONDS = 1.5
SERVER_PATIENCE = 1.0  # the server's handshake and request timeouts, on the twin
# How much longer than that a hostile client waits before it calls a connection left open. The
# deadline counts from the client's connect, on a client that shares the runner's CPU: on a
# clean-clone CI run with 8 workers (the flood at 56 attempts/s, a quarter of its idle rate) one
# attempt in 1000 outlasted 1 + 4 s, though the server closes idle connections after 1 s.
CLIENT_SLACK = 9.0
FLOOD_ON = 20  # hostile connections the server has recorded before the device boots


def records_written(ota) -> int:
    """The connections the server has written to its record so far (whole lines only: one may
    be on its way)."""
    path = ota.server.log.path
    return path.read_bytes().count(b"\n") if path.exists() else 0


def is_device(connection: ConnectionRecord) -> bool:
    return any(r.header("User-Agent") == "ESP32-http-Update" for r in connection.requests)


def interval(connection: ConnectionRecord) -> tuple[datetime.datetime, datetime.datetime]:
    """When a closed connection was open (every connection in the record has closed: it is
    written when the connection ends, with its duration)."""
    start = datetime.datetime.fromisoformat(connection.start)
    assert connection.duration is not None, f"connection {connection.start} has no duration in the record"
    return start, start + datetime.timedelta(seconds=connection.duration)


def fetch(address: str, port: int, host: str, ca_pem: str, path: str) -> tuple[int, bytes]:
    """One ordinary HTTPS GET, as any well-behaved client sends it."""
    context = ssl.create_default_context(cadata=ca_pem)
    with socket.create_connection((address, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: rig-check\r\n\r\n".encode())
            response = http.client.HTTPResponse(tls)
            response.begin()
            return response.status, response.read()


@pytest.mark.long
def test_a_thousand_hostile_connections_during_an_update(ota, pki) -> None:
    listener = ota.listen(pki.dns())
    old, new = ota.build("0.1", listener), ota.build("0.2", listener)
    size = new.app.stat().st_size
    ota.offer(new, rate=size / DOWNLOAD_SECONDS)
    firmware = ota.server.firmware_dir
    firmware.mkdir(exist_ok=True)
    shutil.copy(new.app, firmware / new.app.name)
    secret = firmware.parent / "canary.bin"
    secret.write_bytes(CANARY)
    patience = SERVER_PATIENCE * ota.board.time_scale
    ota.server.handshake_timeout = ota.server.request_timeout = patience

    # The attacker is another process, as it would be, so that it does not share the server's
    # interpreter. It starts once the board is flashed (a slow line's flashing would outlast the
    # flood), and the device boots once the flood is on, and downloads through it.
    ota.flash(old)
    with hostile.Attacker(pki.address, listener.port, pki.authority().pem, listener.cert.host, secret=secret,
                          count=1000, concurrency=50, deadline=patience + CLIENT_SLACK) as attacker:
        flood_on = time.monotonic() + BOOT_TIMEOUT
        while records_written(ota) < FLOOD_ON and not attacker.done() and time.monotonic() < flood_on:
            time.sleep(0.05)
        monitor = ota.boot(old)
        flood = attacker.result()
    monitor.expect_sequence([("firmware_version", {"version": "0.1"}), "update_ok",
                             ("reset", {"reason": "SW_CPU_RESET"}), ("firmware_version", {"version": "0.2"}),
                             "no_updates"], timeout=BOOT_TIMEOUT)
    status, body = fetch(pki.address, listener.port, listener.cert.host, pki.authority().pem,
                         f"/firmware/{new.app.name}")

    connections = ota.server_log.connections()
    device = [c for c in connections if is_device(c)]
    [check] = [c for c in connections if c.requests and c.requests[0].header("User-Agent") == "rig-check"]
    attacks = [c for c in connections if c not in device and c is not check]
    [downloading] = [c for c in device if any(r.status == 200 for r in c.requests)]
    began, ended = interval(downloading)
    during = [c for c in attacks if began <= interval(c)[0] <= ended]
    recorded = Counter(f"http {r.status}" for c in attacks for r in c.requests)
    recorded.update(f"http {c.error.split()[0]}" for c in attacks if c.error)
    seen = Counter({outcome: n for outcome, n in flood.by_outcome().items() if outcome.startswith("http ")})
    counts = {
        "flood": flood.to_json(),
        "server": {
            "connections": len(connections), "device": len(device), "hostile": len(attacks),
            "hostile during the download": len(during),
            "handshake failed": sum(1 for c in attacks if not c.tls.ok),
            "refused by the parser": sum(1 for c in attacks if c.error),
            "answered": sum(1 for c in attacks if c.requests),
            "dropped for keeping the server waiting": sum(1 for c in attacks if c.ended == "timeout"),
            "statuses sent": dict(recorded),
        },
    }
    (ota.folder / "hostile.json").write_text(json.dumps(counts, indent=2))
    print(f"\n{flood.summary()}\nserver record: {json.dumps(counts['server'])}")

    # The device updated, its download whole, while the flood ran.
    [download] = [r for r in downloading.requests if r.status == 200]
    assert (download.status, download.bytes_sent, download.complete) == (200, size, True)
    assert len(during) >= 50, f"only {len(during)} hostile connections came during the download"
    assert_boots_slot_holding(ota, new)
    # Nothing outside the firmware folder was served, and the server still serves what is in it.
    assert not flood.findings and not any(CANARY in a.received for a in flood.attempts)
    assert [r for c in attacks for r in c.requests if r.status == 200] == []
    assert (status, body) == (200, new.app.read_bytes())
    # Every hostile connection is in the record, the server sent no status it did not record,
    # and it closed every connection the client left open (none reached the client's deadline).
    assert len(attacks) == len(flood.attempts) and "connect failed" not in flood.by_outcome()
    assert seen <= recorded, f"statuses seen by clients {seen}, recorded {recorded}"
    assert flood.by_ending()["deadline"] == 0, [a.case.name for a in flood.attempts if a.ending == "deadline"]
    assert counts["server"]["dropped for keeping the server waiting"] > 0
