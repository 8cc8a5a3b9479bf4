"""A scenario's record, scenario.json: its facts on one clock, written when the scenario closes.

Times are seconds since the scenario began, drawn from evidence the device did not write about
itself (the UART as the monitor received it, the server's record, esptool's output) and from
what the rig did (builds, flashes, resets). docs/results.md describes every field.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from ota_rig.bench.monitor import Event, update_loops
from ota_rig.server.pki import fingerprint
from ota_rig.server.records import ServerLog

if TYPE_CHECKING:
    from ota_rig.scenario import OtaScenario

MAX_CONNECTIONS = 100  # connections a scenario's record lists (the flood scenario has 1000+)

# How each kind of line reads as a transition.
LABELS = {
    "firmware_version": "Firmware version {version}",
    "update_ok": "HTTP_UPDATE_OK",
    "no_updates": "HTTP_UPDATE_NO_UPDATES",
    "update_failed": "HTTP_UPDATE_FAILD ({code})",
    "tls_error": "TLS error {code}",
    "reset": "reset {reason}",
    "cert_expired": "certificate expired",
    "cert_not_yet_valid": "certificate not yet valid",
    "date_check_off": "date check off",
    "signature_valid": "signature valid",
    "signature_invalid": "signature invalid",
    "signature_missing": "signature missing",
    "image_mismatch": "image does not match its manifest",
    "downgrade_refused": "downgrade refused",
    "insecure_mode": "setInsecure",
}


def transition(name: str, fields: dict[str, str]) -> str | None:
    """How an event reads in a list of transitions, or None for one that is not a transition."""
    label = LABELS.get(name)
    return label.format(**fields) if label else None


# --- one scenario ---------------------------------------------------------------------------

def scenario_record(scenario: OtaScenario) -> dict[str, Any]:
    """Everything `scenario` saw and did, as JSON values, on the scenario's clock."""
    observed, expected, findings = _serial(scenario)
    connections = _connections(scenario.server.log, scenario.began_at)
    steps = [{"step": s.name, "start": round(s.start, 4), "end": round(s.end, 4), "detail": s.detail}
             for s in scenario.steps]
    return {
        "doc": scenario.about.get("doc"),
        "profile": scenario.profile,
        "started": scenario.began_at.isoformat(),
        "seconds": round(time.monotonic() - scenario.began, 4),
        "board": _board(scenario),
        "firmware": [{"version": sketch.version, "profile": sketch.profile, "role": "built",
                      **_file_facts(artifacts.app)} for sketch, artifacts in scenario.builds]
        + [{"version": offer.version, "role": "offered", "sha256": offer.sha256, "size": offer.size,
            "rate": offer.rate, "fault": offer.fault} for offer in scenario.offered],
        "certificates": _certificates(scenario, connections),
        "steps": steps,
        "observed": observed,
        "expected": expected,
        "findings": findings,
        "connections": connections[:MAX_CONNECTIONS],
        "connections_total": len(connections),
        "durations": durations(steps, observed, connections),
        "timings": {step: round(seconds, 4) for step, seconds in scenario.timings.items()},
        "rig_limitations": rig_limitations(scenario.folder / "board" / "twin.log"),
        "logs": {name: file for name, file in (("serial", "serial.log"), ("server", "server.jsonl"),
                                              ("esptool", "esptool.log"), ("board", "board/twin.log"))
                 if (scenario.folder / file).exists()},
    }


def rig_limitations(twin_log: Path) -> list[str]:
    """What the twin could not model in this scenario (its log's `rig limitation:` lines, from
    ota_rig/virtual/secure_client.py): a server choice its TLS engine cannot run. Never a verdict on
    the device; a test that then waits in vain fails with the reason here."""
    if not twin_log.exists():
        return []
    marker = "rig limitation: "
    return [line.split(marker, 1)[1] for line in twin_log.read_text(errors="replace").splitlines()
            if marker in line]


def _serial(scenario: OtaScenario) -> tuple[list[dict], list[dict], list[dict]]:
    """The events the UART showed, the waits the test made and what the monitors found wrong in
    the device's story (an update loop), numbered by serial.log line."""
    observed: list[dict] = []
    expected: list[dict] = []
    story: list[Event] = []  # every monitor's events, one story
    lines: dict[int, int] = {}  # id of each event in the story: its serial.log line
    first_line = 0  # serial.log holds each monitor's lines, one monitor after the other
    for monitor in scenario.monitors:
        for event in monitor.events:
            story.append(event)
            lines[id(event)] = first_line + event.index
            observed.append({"t": _on_clock(scenario, event.t), "event": event.name, "fields": event.fields,
                             "line": first_line + event.index, "text": event.raw,
                             "transition": transition(event.name, event.fields)})
        for wait in monitor.expectations:
            expected.append({"t": _on_clock(scenario, wait.t), "what": wait.what, "outcome": wait.outcome,
                             "line": None if wait.index is None else first_line + wait.index})
        first_line += monitor.mark()  # the lines it wrote, held in memory or not
    # One story across the monitors: an update seen by one and the boot after it by the next.
    findings = [{"finding": "update loop", "t": _on_clock(scenario, loop.event.t), "line": lines[id(loop.event)],
                 "text": loop.sentence}
                for loop in update_loops(story)]
    return observed, expected, findings


def _on_clock(scenario: OtaScenario, monotonic: float) -> float:
    return round(monotonic - scenario.began, 4)


def _connections(log: ServerLog, began: datetime.datetime) -> list[dict]:
    """The server's record, each connection placed on the scenario's clock, headers left out
    (server.jsonl has them)."""
    found = []
    for connection in log.connections():
        start = (datetime.datetime.fromisoformat(connection.start) - began).total_seconds()
        tls = connection.tls
        found.append({
            "t": round(start, 4), "seconds": connection.duration, "listener": connection.listener,
            "peer": connection.peer, "sni": connection.sni, "ended": connection.ended, "error": connection.error,
            "tls": None if tls is None else {"ok": tls.ok, "certificate": tls.certificate, "version": tls.version,
                                             "alert": tls.alert, "error": tls.error, "seconds": tls.seconds},
            "requests": [{"method": r.method, "path": r.path, "status": r.status, "bytes_sent": r.bytes_sent,
                          "content_length": r.content_length, "complete": r.complete,
                          "version": r.header("x-ESP32-version"), "at": r.at,
                          "body_started": r.body_started, "body_ended": r.body_ended}
                         for r in connection.requests],
        })
    return sorted(found, key=lambda c: c["t"])


def durations(steps: list[dict], observed: list[dict], connections: list[dict]) -> dict[str, Any]:
    """Seconds each phase took, None for a phase the scenario did not have.

    boot: the first reset to the first `Firmware version`; tls_handshake: the first
    handshake (accept to finished, the server's view); download: the first body the server
    sent, first byte to last; reboot: `HTTP_UPDATE_OK` to the next `Firmware version`."""
    def total(name: str) -> float:
        return round(sum(s["end"] - s["start"] for s in steps if s["step"] == name), 4)

    def first(name: str, after: float) -> float | None:
        return next((e["t"] for e in observed if e["event"] == name and e["t"] >= after), None)

    def since(start: float | None, name: str) -> float | None:
        """Seconds from `start` to the first `name` at or after it; None if either is missing."""
        if start is None:
            return None
        end = first(name, start)
        return None if end is None else round(end - start, 4)

    reset = next((s["end"] for s in steps if s["step"] == "reset"), None)
    update_ok = first("update_ok", 0.0)
    handshake = next((c["tls"]["seconds"] for c in connections if c["tls"] and c["tls"]["seconds"] is not None), None)
    body = next(
        (r for c in connections for r in c["requests"] if r["bytes_sent"] and r["body_ended"] is not None), None
    )
    download = None
    if body is not None:
        seconds = round(body["body_ended"] - body["body_started"], 4)
        download = {
            "bytes": body["bytes_sent"],
            "seconds": seconds,
            "bytes_per_second": round(body["bytes_sent"] / seconds) if seconds > 0 else None,
        }
    return {
        "build": total("build"),
        "flash": total("flash"),
        "boot": since(reset, "firmware_version"),
        "tls_handshake": handshake,
        "download": download,
        "reboot": since(update_ok, "firmware_version"),
        "total": None,  # the test's own time, set by RunRecorder from pytest's report
    }


def _board(scenario: OtaScenario) -> dict[str, Any]:
    chip = scenario.chip_seen
    return {
        "kind": scenario.about.get("board_kind"),
        "port": scenario.board.port,
        "place": getattr(scenario.board, "place", None),
        "chip": chip.chip if chip else None,
        "mac": chip.mac if chip else None,
    }


def _file_facts(path: Path) -> dict[str, Any]:
    data = Path(path).read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _certificates(scenario: OtaScenario, connections: list[dict]) -> list[dict[str, Any]]:
    """The leaves the listeners presented (a listener may have moved to another certificate
    during the scenario: the server's record names each one it presented) and the CAs the
    builds trusted, by SHA-256."""
    found: dict[str, dict[str, Any]] = {}
    presented = [(listener, listener.cert) for listener in scenario.server.listeners.values()]
    presented += [
        (scenario.server.listeners[c["listener"]], scenario.pki.find(c["tls"]["certificate"]))
        for c in connections
        if c["tls"] and c["tls"]["certificate"]
    ]
    for listener, cert in presented:
        found.setdefault(
            cert.fingerprint,
            {
                "name": cert.name,
                "role": "server",
                "sha256": cert.fingerprint,
                "identities": list(cert.identities),
                "issuer": cert.authority.name if cert.authority else "self-signed",
                "not_before": cert.not_before.isoformat(),
                "not_after": cert.not_after.isoformat(),
                "listener": listener.name,
                "port": listener.port,
            },
        )
    for sketch, _ in scenario.builds:
        for ca in x509.load_pem_x509_certificates(sketch.ca_bundle.encode()) if sketch.ca_bundle else ():
            sha256 = fingerprint(ca)
            found.setdefault(
                sha256,
                {
                    "name": ca.subject.rfc4514_string(),
                    "role": "trusted CA",
                    "sha256": sha256,
                    "not_after": ca.not_valid_after_utc.isoformat(),
                },
            )
    return list(found.values())
