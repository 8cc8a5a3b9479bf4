"""A run's results: one JSON document a release engineer, a CI job and `rig compare` can read.

Each scenario leaves scenario.json in its folder when it closes (`scenario_record`): its facts on
one clock, in seconds since the scenario began, drawn from evidence the device did not write
about itself (the UART as the monitor received it, the server's record, esptool's output) and
from what the rig did (builds, flashes, resets). `RunRecorder`, a pytest plugin, adds each test's
verdict and gathers the scenarios into the run's results.json, then writes junit.xml and
report.html from it. The schema is `SCHEMA`; docs/results.md describes every field.

    results.json
      schema, rig {version, commit, python, esptool}, run {started, finished, seconds, command, board, interrupted}
      board {kind, port, chip, mac}, profiles [{name, core, idf, mbedtls}]
      summary {total, passed, failed, error, skipped, interrupted}
      firmware [{version, profile, sha256, size}], certificates [{name, role, sha256, ...}]
      scenarios [{id, name, verdict, message, profile, durations, expected, observed, ...}]
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import shlex
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509

from . import __version__
from .certs import fingerprint
from .interrupt import interrupted_by
from .schema import SCHEMA, VERDICTS, check
from .server import ServerLog
from .virtual import profiles

if TYPE_CHECKING:
    from .interrupt import Interrupt
    from .ota import OtaScenario

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
    observed, expected = _serial(scenario)
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
    rig/virtual/secure_client.py): a server choice its TLS engine cannot run. Never a verdict on
    the device; a test that then waits in vain fails with the reason here."""
    if not twin_log.exists():
        return []
    marker = "rig limitation: "
    return [line.split(marker, 1)[1] for line in twin_log.read_text(errors="replace").splitlines()
            if marker in line]


def _serial(scenario: OtaScenario) -> tuple[list[dict], list[dict]]:
    """The events the UART showed and the waits the test made, numbered by serial.log line."""
    observed: list[dict] = []
    expected: list[dict] = []
    first_line = 0  # serial.log holds each monitor's lines, one monitor after the other
    for monitor in scenario.monitors:
        for event in monitor.events:
            observed.append({"t": _on_clock(scenario, event.t), "event": event.name, "fields": event.fields,
                             "line": first_line + event.index, "text": event.raw,
                             "transition": transition(event.name, event.fields)})
        for wait in monitor.expectations:
            expected.append({"t": _on_clock(scenario, wait.t), "what": wait.what, "outcome": wait.outcome,
                             "line": None if wait.index is None else first_line + wait.index})
        first_line += monitor.mark()  # the lines it wrote, held in memory or not
    return observed, expected


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

    reset = next((s["end"] for s in steps if s["step"] == "reset"), None)
    booted = None if reset is None else first("firmware_version", reset)
    update_ok = first("update_ok", 0.0)
    rebooted = None if update_ok is None else first("firmware_version", update_ok)
    handshake = next((c["tls"]["seconds"] for c in connections if c["tls"] and c["tls"]["seconds"] is not None), None)
    body = next((r for c in connections for r in c["requests"] if r["bytes_sent"] and r["body_ended"] is not None), None)
    download = None
    if body is not None:
        seconds = round(body["body_ended"] - body["body_started"], 4)
        download = {"bytes": body["bytes_sent"], "seconds": seconds,
                    "bytes_per_second": round(body["bytes_sent"] / seconds) if seconds > 0 else None}
    return {
        "build": total("build"),
        "flash": total("flash"),
        "boot": None if booted is None else round(booted - reset, 4),
        "tls_handshake": handshake,
        "download": download,
        "reboot": None if rebooted is None else round(rebooted - update_ok, 4),
        "total": None,  # the test's own time, set by RunRecorder from pytest's report
    }


def _board(scenario: OtaScenario) -> dict[str, Any]:
    chip = scenario.chip_seen
    return {"kind": scenario.about.get("board_kind"), "port": scenario.board.port,
            "chip": chip.chip if chip else None, "mac": chip.mac if chip else None}


def _file_facts(path: Path) -> dict[str, Any]:
    data = Path(path).read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _certificates(scenario: OtaScenario, connections: list[dict]) -> list[dict[str, Any]]:
    """The leaves the listeners presented (a listener may have moved to another certificate
    during the scenario: the server's record names each one it presented) and the CAs the
    builds trusted, by SHA-256."""
    found: dict[str, dict[str, Any]] = {}
    presented = [(listener, listener.cert) for listener in scenario.server.listeners.values()]
    presented += [(scenario.server.listeners[c["listener"]], scenario.pki.find(c["tls"]["certificate"]))
                  for c in connections if c["tls"] and c["tls"]["certificate"]]
    for listener, cert in presented:
        found.setdefault(cert.fingerprint, {
            "name": cert.name, "role": "server", "sha256": cert.fingerprint, "identities": list(cert.identities),
            "issuer": cert.authority.name if cert.authority else "self-signed",
            "not_before": cert.not_before.isoformat(), "not_after": cert.not_after.isoformat(),
            "listener": listener.name, "port": listener.port,
        })
    for sketch, _ in scenario.builds:
        for ca in x509.load_pem_x509_certificates(sketch.ca_bundle.encode()) if sketch.ca_bundle else ():
            sha256 = fingerprint(ca)
            found.setdefault(sha256, {"name": ca.subject.rfc4514_string(), "role": "trusted CA",
                                      "sha256": sha256, "not_after": ca.not_valid_after_utc.isoformat()})
    return list(found.values())


# --- the run --------------------------------------------------------------------------------

class RunRecorder:
    """A pytest plugin on the session's controller: each test's verdict and time from pytest's
    reports, joined with the scenario.json its folder under `scenarios` holds; at the end,
    results.json, junit.xml and report.html in `folder`."""

    def __init__(self, folder: Path, scenarios: Path, board: str, cores: dict[str, str],
                 stop: Interrupt) -> None:
        self.folder = Path(folder)
        self.scenarios = Path(scenarios)
        self.board = board  # the --board the run was asked for
        self.cores = cores  # profile -> the core version built with
        self.stop = stop  # this process's signal handling: which signal stopped the run, if one did
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.tests: dict[str, dict[str, Any]] = {}
        self.written: list[Path] = []
        self.signal: str | None = None  # the signal a test was interrupted by (a worker's own)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = self.tests.setdefault(report.nodeid, _test_record(report.nodeid))
        test["_seconds"] += report.duration
        self.signal = self.signal or interrupted_by(report)
        if report.when == "call" or report.failed or (report.skipped and test["verdict"] is None):
            verdict, message = _verdict_of(report)
            if test["verdict"] in (None, "passed"):  # a teardown error after a pass is the news
                test["verdict"], test["message"] = verdict, message
                test["details"] = None if verdict == "interrupted" else _details(report)
        if report.when == "teardown":
            self._close(report.nodeid, test)

    def _close(self, nodeid: str, test: dict[str, Any]) -> None:
        """The test is over: its scenario.json joins its record, and its time is totalled."""
        from .plugin import folder_name
        folder = self.scenarios / folder_name(nodeid)
        if (folder / "scenario.json").exists():
            test.update({key: value for key, value in _scenario_file(folder).items() if key not in test})
            logs = test.setdefault("logs", {})
            test["logs"] = {name: os.path.relpath(folder / file, self.folder) for name, file in logs.items()}
            test["logs"]["folder"] = os.path.relpath(folder, self.folder)
        test.setdefault("durations", {})["total"] = round(test.pop("_seconds"), 4)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        for nodeid, test in self.tests.items():
            if "_seconds" in test:  # no teardown report came: the run stopped while the test ran
                if test["verdict"] is None:
                    test["verdict"], test["message"] = "interrupted", "the run stopped before the test ended"
                self._close(nodeid, test)
        results = run_record(list(self.tests.values()), self.started, self.board, self.cores,
                             self.stop.signal or self.signal)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "results.json"
        path.write_text(json.dumps(results, indent=1))
        self.written = [path, *write_reports(results, self.folder, self.folder)]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for path in self.written:
            terminalreporter.write_line(f"rig: wrote {path}")


def _scenario_file(folder: Path) -> dict[str, Any]:
    """A scenario's scenario.json; one that cannot be read (a run killed as it wrote) is said
    in `record_error`, and the test keeps its verdict."""
    try:
        record = json.loads((folder / "scenario.json").read_text())
    except (OSError, ValueError) as err:
        return {"record_error": f"{folder / 'scenario.json'} is unreadable ({err})"}
    return record if isinstance(record, dict) else {"record_error": "scenario.json holds no JSON object"}


def _test_record(nodeid: str) -> dict[str, Any]:
    module, _, name = nodeid.partition("::")
    return {"id": nodeid, "module": Path(module).stem, "name": name, "verdict": None, "message": None,
            "_seconds": 0.0}


def _verdict_of(report: pytest.TestReport) -> tuple[str, str | None]:
    """pytest's word for how a phase went (a failed setup or teardown is an "error"; a phase a
    signal cut short is "interrupted") and the one line that says why."""
    signal = interrupted_by(report)
    if signal:
        return "interrupted", f"interrupted by {signal}"
    if report.passed:
        return "passed", None
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        return "skipped", reason.removeprefix("Skipped: ")
    line = next((part.strip() for part in _details(report).splitlines() if part.strip()), "failed")
    # "...did not come within 1 s; the last 15 lines received:": the lines are in `details`
    if line.endswith(":") and "; " in line:
        line = line.rsplit("; ", 1)[0]
    return ("failed" if report.when == "call" else "error"), line


def _details(report: pytest.TestReport) -> str | None:
    """The whole failure message (an ExpectTimeout's quotes the last lines the port sent),
    without the traceback; None for a test that passed or was skipped."""
    if report.passed or report.skipped:
        return None
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else str(report.longrepr)


def run_record(tests: list[dict[str, Any]], started: datetime.datetime, board: str,
               cores: dict[str, str], interrupted: str | None = None) -> dict[str, Any]:
    """results.json: the run, what it ran on and with, and every test's record; `interrupted`
    names the signal that stopped the run."""
    finished = datetime.datetime.now(datetime.timezone.utc)
    verdicts = [test["verdict"] for test in tests]
    seen_board = next((test["board"] for test in tests if (test.get("board") or {}).get("mac")), None)
    used = sorted({test["profile"] for test in tests if test.get("profile")})
    return {
        "schema": SCHEMA,
        "rig": {"version": __version__, "commit": _commit(), "python": platform.python_version(),
                "esptool": _installed("esptool"), "host": platform.node()},
        "run": {"started": started.isoformat(), "finished": finished.isoformat(),
                "seconds": round((finished - started).total_seconds(), 3),
                "command": _command(),
                "board": board,
                "interrupted": interrupted},
        "board": seen_board or {"kind": board, "port": None, "chip": None, "mac": None},
        "profiles": [{"name": name, "core": cores.get(name, profiles.get(name).core),
                      "idf": profiles.get(name).idf_version, "mbedtls": profiles.get(name).mbedtls} for name in used],
        "summary": {"total": len(tests), **{word: verdicts.count(word) for word in VERDICTS}},
        "firmware": _unique(tests, "firmware", "sha256", lambda item: item.get("role") == "built"),
        "certificates": _unique(tests, "certificates", "sha256"),
        "scenarios": tests,
    }


def _unique(tests: list[dict], key: str, by: str, keep=lambda item: True) -> list[dict]:
    found: dict[str, dict] = {}
    for test in tests:
        for item in test.get(key, ()):
            if keep(item):
                found.setdefault(item[by], {k: v for k, v in item.items() if k not in ("listener", "port")})
    return list(found.values())


def _command() -> str:
    """The command line that made the run, as typed: `rig run -k ...`, `python -m pytest ...`."""
    if sys.orig_argv[1:2] == ["-m"]:
        return shlex.join(["python", *sys.orig_argv[1:]])
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _commit() -> str | None:
    """The rig's git commit, with `-dirty` when its tree has changes; None outside a checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
                                capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() if commit.returncode == 0 else None


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_reports(results: dict[str, Any], out: Path, run_dir: Path) -> list[Path]:
    """junit.xml and report.html for `results` into `out`; log paths in `results` are
    relative to `run_dir`, and in the two files relative to `out`."""
    from . import junit, report
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != run_dir.resolve():
        results = rebased(results, run_dir, out)
    written = [out / "junit.xml", out / "report.html"]
    written[0].write_text(junit.render(results), encoding="utf-8")
    written[1].write_text(report.render(results, out), encoding="utf-8")
    return written


def rebased(results: dict[str, Any], run_dir: Path, out: Path) -> dict[str, Any]:
    """A copy of `results` whose log paths, relative to `run_dir`, are relative to `out`."""
    copy = json.loads(json.dumps(results))
    for test in copy["scenarios"]:
        for name, path in (test.get("logs") or {}).items():
            test["logs"][name] = os.path.relpath(run_dir.resolve() / path, out.resolve())
    return copy


# --- reading one back -----------------------------------------------------------------------

class ResultsError(ValueError):
    """A file that is not a results.json this rig can read; the message says which and why."""


def load(path: Path) -> tuple[Path, dict[str, Any]]:
    """A results.json (or the run folder holding one): its path and its content, checked."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise ResultsError(f"{path}: no such file; pass a results.json or the run folder holding one")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ResultsError(f"{path} is not JSON ({error}); pass the results.json a run wrote") from None
    if not isinstance(results, dict) or results.get("schema") != SCHEMA:
        found = results.get("schema") if isinstance(results, dict) else type(results).__name__
        raise ResultsError(f"{path} has schema {found!r}, not {SCHEMA!r}; pass a results.json this rig wrote")
    problem = check(results)
    if problem:
        raise ResultsError(f"{path} is not a results.json a run wrote: {problem}; pass the results.json of a run")
    return path, results
