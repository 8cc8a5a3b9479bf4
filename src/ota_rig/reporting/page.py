"""report.html: a run on one page, for a release engineer to read in a minute.

`render(results, run_dir)` turns a results.json (ota_rig/records/) into one HTML5 document, read
from top to bottom:

1. The header: the verdict in counts, when and how the run ran, and what it ran on and with
   (rig, esptool, board, device profiles, firmware and certificate fingerprints).
2. The summary table: a row per test with its verdict, phase durations and one-line message.
   A "show only failures" box (JavaScript) hides the passed and skipped rows and sections.
3. A section per test (scenario.py), open when it failed or erred: what the test waited for
   against what the device did, a timeline (timeline.py), the server's record of connections,
   and the serial log with the lines the verdict rests on highlighted (serial_log.py).

This module holds the page itself, its header and its summary table. The page stands alone:
its CSS (report.css) and the little JavaScript (report.js), files beside this module read as
package data, are inline, nothing is fetched, and a Content-Security-Policy lets only those two
blocks run, so that a line a device printed can never become markup or a request. Every string
from results and from the logs goes through markup.e (html.escape). Log files are linked by
their path relative to `run_dir`, where report.html lives.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from importlib.resources import files
from pathlib import Path
from typing import Any

from ota_rig.reporting.markup import badge, breakable, duration, e, facts, sha, size, table
from ota_rig.reporting.scenario import BAD, section

OPEN_TABLE_ROWS = 8  # a header table with more rows starts folded

# The stylesheet, and the script for the filter box (shown only where it works) and for a folded
# section opened when a link leads into it. Their exact text is hashed into the page's policy.
CSS = files("ota_rig.reporting").joinpath("report.css").read_text(encoding="utf-8")
SCRIPT = files("ota_rig.reporting").joinpath("report.js").read_text(encoding="utf-8")


def render(results: dict[str, Any], run_dir: Path) -> str:
    """The whole report.html for `results`; log paths in it are relative to `run_dir`."""
    run_dir = Path(run_dir)
    scenarios = results["scenarios"]
    body = "\n".join([
        _header(results),
        _summary(scenarios),
        *(section(f"s{number}", scenario, run_dir) for number, scenario in enumerate(scenarios, 1)),
    ])
    return _page(_title(results), body)


# --- the page -----------------------------------------------------------------------------

def _page(title: str, body: str) -> str:
    policy = (f"default-src 'none'; style-src '{_digest(CSS)}'; script-src '{_digest(SCRIPT)}'; "
              "base-uri 'none'; form-action 'none'")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def _digest(text: str) -> str:
    """The CSP source that allows exactly this inline block."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _title(results: dict[str, Any]) -> str:
    return f"OTA rig: {_counts_text(results['summary'])}, {_when(results['run']['started'])}"


def _when(iso: str) -> str:
    moment = datetime.datetime.fromisoformat(iso).astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


# --- the header ---------------------------------------------------------------------------

def _header(results: dict[str, Any]) -> str:
    rig, run, board = results["rig"], results["run"], results["board"]
    pairs = [
        ("Run", f"{e(_when(run['started']))} to {e(_when(run['finished']))} "
                f"<span class=\"muted\">({e(duration(run['seconds']))})</span>"),
        ("Command", f"<code>{e(run['command'])}</code>"),
        ("Rig", f"{e(rig['version'])} <span class=\"muted\">commit</span> <code>{e(rig['commit'] or 'unknown')}</code>"
                f" · esptool {e(rig['esptool'] or 'not installed')} · Python {e(rig.get('python') or '?')}"),
        ("Board", _board(board, run["board"])),
    ]
    if run.get("interrupted"):
        pairs.insert(1, ("Stopped", f"by {e(run['interrupted'])}: the tests under way then are "
                                    "<em>interrupted</em>; those not yet begun are not listed"))
    profiles = table("Profile|Core|ESP-IDF|Mbed TLS",
                     [[e(p["name"]), e(p["core"]), e(p["idf"]), e(p["mbedtls"])] for p in results["profiles"]])
    firmware = table("Version|Profile|SHA-256|Size:num",
                     [[e(f["version"]), e(f.get("profile") or ""), sha(f["sha256"]), size(f["size"])]
                      for f in results["firmware"]])
    certificates = table("Certificate|Role|SHA-256",
                         [[e(c["name"]), e(c["role"]), sha(c["sha256"])] for c in results["certificates"]])
    return (
        "<header>\n<h1>OTA rig report</h1>\n"
        f"<p class=\"verdict\">{_counts(results['summary'])}</p>\n"
        f"{facts(pairs)}\n"
        "<div class=\"tables\">"
        + _fold("Device profiles", len(results["profiles"]), profiles)
        + _fold("Firmware built", len(results["firmware"]), firmware)
        + _fold("Certificates", len(results["certificates"]), certificates)
        + "</div>\n</header>"
    )


def _board(board: dict[str, Any], asked: str) -> str:
    seen = [board["kind"], board["chip"], board["mac"] and f"MAC {board['mac']}"]
    return " · ".join(e(value) for value in seen if value) + f" <span class=\"muted\">(--ota-board {e(asked)})</span>"


def _counts(summary: dict[str, int]) -> str:
    """Each verdict's count; `interrupted` only in a run that was."""
    words = ["passed", "failed", "error", "skipped"]
    if summary.get("interrupted"):
        words.append("interrupted")
    parts = [f"<span class=\"count v-{word}{'' if summary[word] else ' zero'}\">{summary[word]} {word}</span>"
             for word in words]
    return "".join(parts) + f"<span class=\"muted\">of {summary['total']} tests</span>"


def _counts_text(summary: dict[str, int]) -> str:
    return ", ".join(f"{summary[word]} {word}" for word in ("failed", "error", "interrupted", "passed", "skipped")
                     if summary.get(word))


def _fold(title: str, count: int, content: str) -> str:
    """A header table under its title, folded when it is long."""
    opened = " open" if count <= OPEN_TABLE_ROWS else ""
    return f"<details class=\"fold\"{opened}><summary>{e(title)} ({count})</summary>{content}</details>"


# --- the summary table --------------------------------------------------------------------

def _summary(scenarios: list[dict[str, Any]]) -> str:
    failures = sum(scenario["verdict"] in BAD for scenario in scenarios)
    rows = []
    for number, scenario in enumerate(scenarios, 1):
        durations = scenario.get("durations") or {}
        rows.append([
            badge(scenario["verdict"]), e(scenario.get("module") or ""),
            f"<a href=\"#s{number}\">{breakable(scenario['name'])}</a>", e(scenario.get("profile") or ""),
            duration(durations.get("flash") or None),  # 0: nothing flashed
            *(duration(durations.get(phase)) for phase in ("boot", "tls_handshake")),
            _download(durations.get("download")),
            *(duration(durations.get(phase)) for phase in ("reboot", "total")),
            e(scenario.get("message") or ""),
        ])
    attributes = [f" class=\"v-{e(s['verdict'])}\" data-id=\"{e(s['id'])}\"" for s in scenarios]
    listing = table("Verdict|Module|Test:name|Profile|Flash:num|Boot:num|TLS:num|Download:num|Reboot:num|Total:num"
                    "|Message:message", rows, attributes, "summary")
    return (
        "<h3>Tests</h3>\n"
        "<label class=\"filter\" hidden><input type=\"checkbox\" id=\"only-failures\"> "
        f"show only failures ({failures})</label>\n{listing}"
    )


def _download(download: dict[str, Any] | None) -> str:
    """A body sent: its bytes, and under them its time and throughput."""
    if not download:
        return "—"
    rate = download.get("bytes_per_second")
    speed = f" · {size(rate, per_second=True)}" if rate else ""
    return f"{size(download['bytes'])}<span class=\"rate\">{duration(download['seconds'])}{speed}</span>"
