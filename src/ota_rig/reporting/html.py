"""report.html: a run on one page, for a release engineer to read in a minute.

`render(results, run_dir)` turns a results.json (ota_rig/records/) into one HTML5 document, read
from top to bottom:

1. The header: the verdict in counts, when and how the run ran, and what it ran on and with
   (rig, esptool, board, device profiles, firmware and certificate fingerprints).
2. The summary table: a row per test with its verdict, phase durations and one-line message.
   A "show only failures" box (JavaScript) hides the passed and skipped rows and sections.
3. A section per test, open when it failed or erred: what the test waited for against what the
   device did, a timeline, the server's record of connections, and the serial log with the
   lines the verdict rests on highlighted.

The timeline is inline SVG on the scenario's clock (seconds since it began), one lane per
witness: "rig" (what the rig did: builds, flashes and read-backs as bars, resets and power
cuts as marks), "device" (the transitions the UART showed; a wait that missed as a red cross),
"server" (each connection as a bar, its TLS handshake shaded, a refused one red with the alert
the device sent, and each body sent as a green bar labelled with its bytes). Labels stand in
rows above their marks, a crowd of them as a staircase that reads in time order from the top,
and every mark also carries its words in a <title> (a tooltip).

The page stands alone: CSS and the little JavaScript are inline, nothing is fetched, and a
Content-Security-Policy lets only those two blocks run, so that a line a device printed can
never become markup or a request. Every string from results and from the logs goes through
`html.escape`. Log files are linked by their path relative to `run_dir`, where report.html
lives; a test that never reached its scenario (a setup error) has just its verdict and message.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import math
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

BAD = ("failed", "error", "interrupted")  # the verdicts "show only failures" keeps
MAX_LOG_LINES = 3000  # serial lines shown per scenario: two thirds from the start, the rest from the end
MAX_LOG_BYTES = 400_000
OPEN_TABLE_ROWS = 8  # a header table with more rows starts folded
INSTANTS = ("reset", "power cut", "time lapse")  # steps that are a moment, not a span

# Timeline geometry, in SVG user units (pixels at 100 %).
WIDTH, LEFT, RIGHT = 1160, 76, 24
TRACK, ROW, PAD = 14, 14, 6  # a track of bars or marks, a row of labels, a lane's padding
LABEL_ROWS = 10  # label rows a lane may use; a label that finds no room is in its mark's <title> only
CHAR = 6.6  # width of a label character: 11 px monospace
GAP = 16  # between two labels in a row
MAX_TRACKS = 4  # rows of overlapping connections in the server lane


def render(results: dict[str, Any], run_dir: Path) -> str:
    """The whole report.html for `results`; log paths in it are relative to `run_dir`."""
    run_dir = Path(run_dir)
    scenarios = results["scenarios"]
    body = "\n".join([
        _header(results),
        _summary(scenarios),
        *(_scenario(f"s{number}", scenario, run_dir) for number, scenario in enumerate(scenarios, 1)),
    ])
    return _page(_title(results), body)


# --- the page -----------------------------------------------------------------------------

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa;
  --passed: #1a7f37; --failed: #cf222e; --error: #bc4c00; --skipped: #6e7781; --interrupted: #8250df;
  --link: #0550ae; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1280px; padding: 24px 32px 64px; color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
a { color: var(--link); }
h1 { font-size: 1.55rem; margin: 0; }
h2 { font-size: 1.05rem; margin: 0; display: inline; overflow-wrap: anywhere; }
h3 { font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin: 1.2rem 0 .3rem; }
code, pre, svg text { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace; }
code { font-size: .85em; }
table { border-collapse: collapse; width: 100%; font-size: .88rem; }
th, td { text-align: left; padding: .28rem .55rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: .72rem; font-weight: 600; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.muted, .note { color: var(--muted); }
.note { font-size: .88rem; margin: .3rem 0; }
.badge { display: inline-block; min-width: 4.6em; text-align: center; padding: 0 .5em; border-radius: 1em;
  font-size: .75rem; font-weight: 600; line-height: 1.6; color: #fff; background: var(--skipped); }
.badge.v-passed, .badge.o-met, .badge.o-absent { background: var(--passed); }
.badge.v-failed, .badge.o-missed, .badge.o-came { background: var(--failed); }
.badge.v-error { background: var(--error); } .badge.v-interrupted { background: var(--interrupted); }
header { border-bottom: 2px solid var(--fg); padding-bottom: 1rem; margin-bottom: 1.2rem; }
.verdict { font-size: 1.15rem; margin: .35rem 0 .6rem; }
.verdict .count { font-weight: 700; margin-right: 1.1em; }
.count.v-passed { color: var(--passed); } .count.v-failed { color: var(--failed); }
.count.v-error { color: var(--error); } .count.v-skipped { color: var(--skipped); }
.count.v-interrupted { color: var(--interrupted); }
.count.zero { color: var(--muted); font-weight: 400; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; margin: .5rem 0; font-size: .9rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.tables { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: .2rem 2rem; }
.tables td { white-space: nowrap; }
details.fold > summary { cursor: pointer; font-weight: 600; font-size: .9rem; margin: .6rem 0 .2rem; }
.filter { display: inline-flex; gap: .4em; align-items: center; font-size: .9rem; margin: .2rem 0 .5rem; cursor: pointer; }
.filter[hidden] { display: none; }
table.summary { font-size: .84rem; }
.summary td { white-space: nowrap; }
.summary td.name { white-space: normal; min-width: 15em; }
.summary td.message { white-space: normal; font-size: .78rem; color: var(--failed); min-width: 12em; overflow-wrap: anywhere; }
.summary .rate { display: block; font-size: .75rem; color: var(--muted); }
.summary tr.v-passed td.message, .summary tr.v-skipped td.message { color: var(--muted); }
section.scenario { border: 1px solid var(--line); border-left: 5px solid var(--skipped); border-radius: 6px;
  margin: .9rem 0; padding: .45rem .9rem; }
section.scenario.v-passed { border-left-color: var(--passed); }
section.scenario.v-failed { border-left-color: var(--failed); }
section.scenario.v-error { border-left-color: var(--error); }
section.scenario.v-interrupted { border-left-color: var(--interrupted); }
section.scenario > details > summary { cursor: pointer; padding: .2rem 0; }
section.scenario > details > summary .badge { margin-right: .6em; vertical-align: .1em; }
.doc { font-style: italic; margin: .5rem 0; max-width: 70em; }
pre.message { background: #fff5f5; border: 1px solid #ffcecb; border-radius: 4px; padding: .5rem .7rem;
  white-space: pre-wrap; overflow-wrap: anywhere; font-size: .82rem; margin: .5rem 0; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 0 2rem; }
svg.timeline { display: block; width: 100%; max-width: 1160px; height: auto; margin: .3rem 0; }
svg text { font-size: 11px; fill: var(--fg); }
svg .lane-name { font-size: 12px; font-weight: 600; fill: var(--muted); }
svg .grid { stroke: #eaeef2; }
svg .lane-edge { stroke: var(--line); }
svg .leader { stroke: #6e7781; stroke-width: .8; }
svg .build { fill: #afb8c1; } svg .flash { fill: #0969da; } svg .read-back { fill: #8250df; }
svg .bar { fill: #57606a; }
svg .instant { stroke: var(--fg); stroke-width: 1.5; fill: var(--fg); }
svg .instant.power-cut { stroke: var(--failed); fill: var(--failed); }
svg .transition { fill: #0550ae; } svg .transition.reset { fill: #8250df; }
svg .event { stroke: #afb8c1; }
svg .met { fill: var(--passed); }
svg .missed line { stroke: var(--failed); stroke-width: 2.5; }
svg text.bad { fill: var(--failed); font-weight: 600; }
svg .connection { fill: #ddf4ff; stroke: #54aeff; stroke-width: .8; }
svg .handshake { fill: #54aeff; }
svg .refused .connection { fill: #ffebe9; stroke: var(--failed); }
svg .refused .handshake { fill: var(--failed); }
svg .request { stroke: var(--fg); stroke-width: 1.2; }
svg .download { fill: var(--passed); }
.legend { font-size: .78rem; color: var(--muted); margin: 0 0 .5rem; }
.legend span { margin-right: 1.1em; white-space: nowrap; }
.legend i { display: inline-block; width: .9em; height: .7em; margin-right: .3em; vertical-align: -.02em; }
.legend .k-flash { background: #0969da; } .legend .k-read-back { background: #8250df; }
.legend .k-transition { background: #0550ae; border-radius: 50%; width: .7em; }
.legend .k-connection { background: #ddf4ff; border: 1px solid #54aeff; }
.legend .k-handshake { background: #54aeff; } .legend .k-refused { background: var(--failed); }
.legend .k-download { background: var(--passed); }
pre.serial { background: var(--soft); border: 1px solid var(--line); border-radius: 4px; padding: .4rem 0;
  max-height: 32em; overflow: auto; font-size: .78rem; line-height: 1.45; white-space: pre-wrap; margin: .3rem 0; }
section.v-failed pre.serial, section.v-error pre.serial { max-height: 64em; }
pre.serial .l { display: block; padding: 0 .7rem 0 7.5ch; text-indent: -6.5ch; overflow-wrap: anywhere; }
pre.serial .l::before { content: attr(data-n); display: inline-block; width: 5ch; margin-right: 1.5ch;
  text-align: right; text-indent: 0; color: #8c959f; user-select: none; }
pre.serial .ev { background: #eef6ff; }
pre.serial .hit { background: #fff1b8; font-weight: 700; box-shadow: inset 3px 0 #bf8700; }
pre.serial .came { background: #ffd8d3; font-weight: 700; box-shadow: inset 3px 0 var(--failed); }
pre.serial .gap { display: block; padding: .3rem .7rem; color: var(--muted); font-style: italic; }
.logs { font-size: .85rem; margin: .6rem 0 .3rem; }
.logs a { margin-right: 1em; }
body.only-failures .v-passed, body.only-failures .v-skipped { display: none; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .filter { display: none; }
  pre.serial { max-height: none; overflow: visible; }
  section.scenario, svg.timeline, tr { break-inside: avoid; }
  a { color: inherit; }
}
"""

# The filter box, shown only where it works, and a folded section opened when a link leads into it.
SCRIPT = """
(function () {
  var box = document.getElementById("only-failures");
  box.parentNode.hidden = false;
  box.addEventListener("change", function () {
    document.body.classList.toggle("only-failures", box.checked);
  });
  function reveal() {
    var target = location.hash && document.getElementById(location.hash.slice(1));
    for (var node = target; node; node = node.parentElement) {
      if (node.tagName === "DETAILS") { node.open = true; }
    }
  }
  window.addEventListener("hashchange", reveal);
  reveal();
})();
"""


def _page(title: str, body: str) -> str:
    policy = (f"default-src 'none'; style-src '{_digest(CSS)}'; script-src '{_digest(SCRIPT)}'; "
              "base-uri 'none'; form-action 'none'")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def _digest(text: str) -> str:
    """The CSP source that allows exactly this inline block."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _title(results: dict[str, Any]) -> str:
    return f"OTA rig: {_counts_text(results['summary'])}, {_when(results['run']['started'])}"


# --- the header ---------------------------------------------------------------------------

def _header(results: dict[str, Any]) -> str:
    rig, run, board = results["rig"], results["run"], results["board"]
    facts = [
        ("Run", f"{_e(_when(run['started']))} to {_e(_when(run['finished']))} "
                f"<span class=\"muted\">({_e(_seconds(run['seconds']))})</span>"),
        ("Command", f"<code>{_e(run['command'])}</code>"),
        ("Rig", f"{_e(rig['version'])} <span class=\"muted\">commit</span> <code>{_e(rig['commit'] or 'unknown')}</code>"
                f" · esptool {_e(rig['esptool'] or 'not installed')} · Python {_e(rig.get('python') or '?')}"),
        ("Board", _board(board, run["board"])),
    ]
    if run.get("interrupted"):
        facts.insert(1, ("Stopped", f"by {_e(run['interrupted'])}: the tests under way then are "
                                    "<em>interrupted</em>; those not yet begun are not listed"))
    profiles = _table("Profile|Core|ESP-IDF|Mbed TLS",
                      [[_e(p["name"]), _e(p["core"]), _e(p["idf"]), _e(p["mbedtls"])] for p in results["profiles"]])
    firmware = _table("Version|Profile|SHA-256|Size:num",
                      [[_e(f["version"]), _e(f.get("profile") or ""), _sha(f["sha256"]), _bytes(f["size"])]
                       for f in results["firmware"]])
    certificates = _table("Certificate|Role|SHA-256",
                          [[_e(c["name"]), _e(c["role"]), _sha(c["sha256"])] for c in results["certificates"]])
    return (
        "<header>\n<h1>OTA rig report</h1>\n"
        f"<p class=\"verdict\">{_counts(results['summary'])}</p>\n"
        f"{_facts(facts)}\n"
        "<div class=\"tables\">"
        + _fold("Device profiles", len(results["profiles"]), profiles)
        + _fold("Firmware built", len(results["firmware"]), firmware)
        + _fold("Certificates", len(results["certificates"]), certificates)
        + "</div>\n</header>"
    )


def _board(board: dict[str, Any], asked: str) -> str:
    seen = [board["kind"], board["chip"], board["mac"] and f"MAC {board['mac']}"]
    return " · ".join(_e(value) for value in seen if value) + f" <span class=\"muted\">(--ota-board {_e(asked)})</span>"


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


def _fold(title: str, count: int, table: str) -> str:
    """A header table under its title, folded when it is long."""
    opened = " open" if count <= OPEN_TABLE_ROWS else ""
    return f"<details class=\"fold\"{opened}><summary>{_e(title)} ({count})</summary>{table}</details>"


# --- the summary table --------------------------------------------------------------------

def _summary(scenarios: list[dict[str, Any]]) -> str:
    failures = sum(scenario["verdict"] in BAD for scenario in scenarios)
    rows = []
    for number, scenario in enumerate(scenarios, 1):
        durations = scenario.get("durations") or {}
        rows.append([
            _badge(scenario["verdict"]), _e(scenario.get("module") or ""),
            f"<a href=\"#s{number}\">{_breakable(scenario['name'])}</a>", _e(scenario.get("profile") or ""),
            _seconds(durations.get("flash") or None),  # 0: nothing flashed
            *(_seconds(durations.get(phase)) for phase in ("boot", "tls_handshake")),
            _download(durations.get("download")),
            *(_seconds(durations.get(phase)) for phase in ("reboot", "total")),
            _e(scenario.get("message") or ""),
        ])
    attributes = [f" class=\"v-{_e(s['verdict'])}\" data-id=\"{_e(s['id'])}\"" for s in scenarios]
    table = _table("Verdict|Module|Test:name|Profile|Flash:num|Boot:num|TLS:num|Download:num|Reboot:num|Total:num"
                   "|Message:message", rows, attributes, "summary")
    return (
        "<h3>Tests</h3>\n"
        "<label class=\"filter\" hidden><input type=\"checkbox\" id=\"only-failures\"> "
        f"show only failures ({failures})</label>\n{table}"
    )


def _download(download: dict[str, Any] | None) -> str:
    """A body sent: its bytes, and under them its time and throughput."""
    if not download:
        return "—"
    rate = download.get("bytes_per_second")
    speed = f" · {_bytes(rate, per_second=True)}" if rate else ""
    return f"{_bytes(download['bytes'])}<span class=\"rate\">{_seconds(download['seconds'])}{speed}</span>"


# --- one scenario ---------------------------------------------------------------------------

def _scenario(key: str, scenario: dict[str, Any], run_dir: Path) -> str:
    """The section for one test; `key` prefixes every id in it."""
    verdict = scenario["verdict"]
    total = (scenario.get("durations") or {}).get("total")
    parts = [
        f"<summary>{_badge(verdict)}<span class=\"muted\">{_e(scenario.get('module') or '')} ·</span> "
        f"<h2>{_breakable(scenario['name'])}</h2> <span class=\"muted\">{_e(_seconds(total))}</span></summary>",
    ]
    if scenario.get("doc"):
        parts.append(f"<p class=\"doc\">{_e(scenario['doc'])}</p>")
    if scenario.get("details") or scenario.get("message"):
        parts.append(f"<pre class=\"message\">{_e(scenario.get('details') or scenario['message'])}</pre>")
    if "observed" not in scenario or "expected" not in scenario:
        why = scenario.get("record_error") or "it ended before its scenario began"
        parts.append(f"<p class=\"note\">This test left no scenario record: {_e(why)}.</p>")
    else:
        log = _read_log(scenario, run_dir)
        parts += [
            _setup(scenario),
            "<div class=\"pair\">" + _expected(key, scenario, log) + _transitions(key, scenario, log) + "</div>",
            _timeline(scenario),
            _server(scenario),
            "<h3>Serial log</h3>" + _serial(key, scenario, log),
            _logs(scenario),
        ]
    opened = " open" if verdict in BAD else ""
    return (f"<section class=\"scenario v-{_e(verdict)}\" id=\"{key}\" data-id=\"{_e(scenario['id'])}\">"
            f"<details{opened}>\n" + "\n".join(parts) + "\n</details></section>")


def _setup(scenario: dict[str, Any]) -> str:
    """What the scenario built, offered and presented, in one list."""
    def firmware(item: dict[str, Any]) -> str:
        extras = [f"rate {_bytes(item['rate'], per_second=True)}" if item.get("rate") else "",
                  f"<code>{_e(item['fault'])}</code>" if item.get("fault") else ""]
        return f"{_e(item['version'])} {_sha(item['sha256'])} {' '.join(extra for extra in extras if extra)}".strip()

    facts = [("Profile", _e(scenario.get("profile") or "—"))]
    for role in ("built", "offered"):
        items = [item for item in scenario.get("firmware", ()) if item["role"] == role]
        if items:
            facts.append((f"Firmware {role}", "; ".join(firmware(item) for item in items)))
    certificates = scenario.get("certificates", ())
    if certificates:
        facts.append(("Certificates", "; ".join(
            f"{_e(c['name'])} <span class=\"muted\">({_e(c['role'])}"
            f"{', listener ' + _e(c['listener']) if c.get('listener') else ''})</span> {_sha(c['sha256'])}"
            for c in certificates)))
    return _facts(facts)


def _expected(key: str, scenario: dict[str, Any], log: _Log | None) -> str:
    rows = [[_at(wait["t"]), f"<code>{_e(wait['what'])}</code>",
             f"<span class=\"badge o-{_e(wait['outcome'])}\">{_e(wait['outcome'])}</span>",
             _line_link(key, wait["line"], log)] for wait in scenario["expected"]]
    none = "<p class=\"note\">The test waited for nothing.</p>"
    table = _table("t:num|Expected|Outcome|Line:num", rows) if rows else none
    return f"<div><h3>Expected</h3>{table}</div>"


def _transitions(key: str, scenario: dict[str, Any], log: _Log | None) -> str:
    rows = [[_at(event["t"]), _e(event["transition"]), _line_link(key, event["line"], log)]
            for event in scenario["observed"] if event["transition"]]
    none = "<p class=\"note\">The device showed no transition.</p>"
    table = _table("t:num|Observed transition|Line:num", rows) if rows else none
    return f"<div><h3>Observed</h3>{table}</div>"


def _line_link(key: str, line: int | None, log: _Log | None) -> str:
    if line is None:
        return ""
    if log is None or not log.shows(line):
        return str(line)
    return f"<a href=\"#{key}-L{line}\">{line}</a>"


def _server(scenario: dict[str, Any]) -> str:
    connections = scenario.get("connections", ())
    total = scenario.get("connections_total", len(connections))
    if not connections:
        return "<h3>Server</h3><p class=\"note\">The server saw no connection.</p>"
    rows = [[_at(c["t"]), _e(c["peer"]), _e(c["listener"]), _tls(c["tls"]), *_requests(c["requests"]),
             _e(c["ended"] or "") + (f"<br><span class=\"muted\">{_e(c['error'])}</span>" if c.get("error") else "")]
            for c in connections]
    shown = (f"{len(connections)} of {total:,} connections, the first by time; server.jsonl has them all"
             if total > len(connections) else f"{total} connection{'s' * (total != 1)}")
    return (f"<h3>Server</h3><p class=\"note\">{_e(shown)}</p>"
            + _table("t:num|Peer|Listener|TLS|Request|x-ESP32-version|Sent / length:num|Complete|Ended", rows))


def _requests(requests: list[dict[str, Any]]) -> list[str]:
    """A connection's requests as four cells: request line and status, version asked from,
    bytes sent of the length announced, complete; one line per request."""
    def column(words) -> str:
        return "<br>".join(words(r) for r in requests) or "—"
    return [
        column(lambda r: f"<code>{_e(r['method'])} {_e(r['path'])}</code> → {_e(r['status'])}"),
        column(lambda r: _e(r["version"] or "—")),
        column(lambda r: f"{_bytes(r['bytes_sent'])} / {_bytes(r['content_length'])}"),
        column(lambda r: "yes" if r["complete"] else "<strong>no</strong>"),
    ]


def _tls(tls: dict[str, Any] | None) -> str:
    if tls is None:
        return "<span class=\"muted\">plain</span>"
    if tls["ok"]:
        return f"✓ {_e(tls['version'])}"
    reason = tls["alert"] or tls["error"] or "failed"
    return f"<strong title=\"{_e(tls['error'] or '')}\">✕ {_e(reason)}</strong>"


def _logs(scenario: dict[str, Any]) -> str:
    logs = scenario.get("logs") or {}
    links = [f"<a href=\"{_href(path)}\">{_e(name)}</a>" for name, path in logs.items()]
    return f"<p class=\"logs\"><span class=\"muted\">Files:</span> {''.join(links) or 'none'}</p>"


# --- the serial log -------------------------------------------------------------------------

@dataclass
class _Log:
    """A scenario's serial.log as read: every line, and which of them the page shows."""

    path: str  # relative to run_dir
    lines: list[str]
    head: int  # lines [0, head) are shown ...
    tail: int  # ... and lines [tail, end)

    def shows(self, index: int) -> bool:
        return 0 <= index < self.head or self.tail <= index < len(self.lines)


def _read_log(scenario: dict[str, Any], run_dir: Path) -> _Log | None:
    """serial.log as the monitor wrote it (one line per "\\n"), or None when it cannot be read."""
    path = (scenario.get("logs") or {}).get("serial")
    if path is None:
        return None
    try:
        data = (run_dir / path).read_bytes()
    except OSError:
        return None
    lines = data.decode("utf-8", "replace").split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) <= MAX_LOG_LINES and len(data) <= MAX_LOG_BYTES:
        return _Log(path, lines, len(lines), len(lines))
    head = _fitting(lines, MAX_LOG_LINES * 2 // 3, MAX_LOG_BYTES * 2 // 3)
    tail = len(lines) - _fitting(reversed(lines[head:]), MAX_LOG_LINES // 3, MAX_LOG_BYTES // 3)
    return _Log(path, lines, head, tail)


def _fitting(lines: Iterable[str], most_lines: int, most_bytes: int) -> int:
    """How many of `lines`, from the first, fit in both budgets."""
    count = size = 0
    for line in lines:
        size += len(line.encode()) + 1
        if count == most_lines or size > most_bytes:
            break
        count += 1
    return count


def _serial(key: str, scenario: dict[str, Any], log: _Log | None) -> str:
    path = (scenario.get("logs") or {}).get("serial")
    if path is None:
        return "<p class=\"note\">No serial log: the board was never started.</p>"
    if log is None:
        return f"<p class=\"note\">The serial log <a href=\"{_href(path)}\">{_e(path)}</a> is missing or unreadable.</p>"
    marks = _line_marks(scenario)
    out = []
    for index in [*range(log.head), *range(log.tail, len(log.lines))]:
        if index == log.tail and log.tail > log.head:
            out.append(_gap(log))
        cls, title = marks.get(index, ("", ""))
        attributes = f" class=\"l {cls}\" id=\"{key}-L{index}\" title=\"{_e(title)}\"" if cls else " class=\"l\""
        out.append(f"<span{attributes} data-n=\"{index}\">{_e(log.lines[index])}</span>")
    if not log.lines:
        out.append("<span class=\"gap\">The device sent nothing.</span>")
    return f"<pre class=\"serial\">{''.join(out)}</pre>"


def _gap(log: _Log) -> str:
    left_out = log.lines[log.head:log.tail]
    size = sum(len(line.encode()) + 1 for line in left_out)
    return (f"<span class=\"gap\">… {len(left_out):,} lines ({_e(_bytes(size))}) left out here; "
            f"the whole log: <a href=\"{_href(log.path)}\">{_e(log.path)}</a></span>")


def _line_marks(scenario: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """serial.log line -> (class, tooltip): lines a wait matched strongly, other events lightly."""
    marks = {event["line"]: ("ev", event["event"]) for event in scenario["observed"]}
    for wait in scenario["expected"]:
        if wait["line"] is not None and wait["outcome"] in ("met", "came"):
            cls = "hit" if wait["outcome"] == "met" else "came"
            marks[wait["line"]] = (cls, f"expected {wait['what']}: {wait['outcome']}")
    return marks


# --- the timeline ---------------------------------------------------------------------------

@dataclass
class _Axis:
    """Seconds since the scenario began, mapped onto the plot's width."""

    end: float  # the last tick, at the plot's right edge
    step: float  # between ticks

    @classmethod
    def spanning(cls, seconds: float) -> _Axis:
        """About eight ticks at 1, 2 or 5 times a power of ten, the last at or after `seconds`."""
        seconds = max(seconds, 0.05)
        rough = seconds / 8
        power = 10 ** math.floor(math.log10(rough))
        step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
        return cls(math.ceil(seconds / step - 1e-9) * step, step)

    def x(self, t: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * t / self.end

    def ticks(self) -> list[tuple[float, str]]:
        decimals = max(0, -math.floor(math.log10(self.step) + 1e-9))
        count = round(self.end / self.step)
        return [(i * self.step, f"{i * self.step:.{decimals}f}") for i in range(count + 1)]


@dataclass
class _Label:
    x: float  # the mark it names
    y: float  # the top of the mark, where its leader starts, from the top of the tracks
    text: str
    cls: str = ""


class _Lane:
    """One witness's lane: rows of labels, then the tracks of bars and marks they name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tracks = 1
        self.shapes: list[str] = []  # drawn with y from the top of the first track
        self.labels: list[_Label] = []

    @staticmethod
    def track_y(track: int) -> float:
        return track * (TRACK + 2)

    def draw(self, top: float) -> tuple[float, str]:
        """The lane's SVG with its top at `top`, and its height. Label row 0 is the one just
        above the tracks, so that a crowd's staircase reads in time order from the top."""
        placed = _stagger(self.labels)
        rows = 1 + max((where[0] for where in placed if where is not None), default=-1)
        tracks_top = PAD + rows * ROW + (4 if rows else 0)
        texts = []
        for label, where in zip(self.labels, placed):
            if where is not None:
                row, start = where
                baseline = PAD + (rows - 1 - row) * ROW + 10
                texts.append(_svg("line", {"class": "leader", "x1": label.x, "y1": tracks_top + label.y,
                                           "x2": start, "y2": baseline + 3}))
                texts.append(_svg("text", {"x": start + 1, "y": baseline, "class": label.cls}, _e(label.text)))
        height = tracks_top + self.track_y(self.tracks) + PAD
        body = "".join([
            _svg("line", {"class": "lane-edge", "x1": 0, "x2": WIDTH, "y1": height, "y2": height}),
            _svg("text", {"class": "lane-name", "x": 4, "y": tracks_top + TRACK - 3}, _e(self.name)),
            *texts, f"<g transform=\"translate(0 {tracks_top:.1f})\">", *self.shapes, "</g>",
        ])
        return height, f"<g class=\"lane lane-{self.name}\" transform=\"translate(0 {top:.1f})\">{body}</g>"


def _stagger(labels: list[_Label]) -> list[tuple[int, float] | None]:
    """For each label, (row, x where its text starts), or None when it finds no room (its mark's
    <title> still says it). Labels are placed right to left, each in the first row it fits,
    going farther only while its leader line can pass the rows it crosses: in a crowd of marks the
    labels form a staircase (the leftmost mark's label farthest from the track), and no text
    overlaps another or a leader."""
    free: list[float] = []  # per row: everything in it lies right of this x
    placed: list[tuple[int, float] | None] = [None] * len(labels)
    for index in sorted(range(len(labels)), key=lambda i: labels[i].x, reverse=True):
        label = labels[index]
        width = len(label.text) * CHAR
        start = max(0.0, min(label.x, WIDTH - RIGHT - width))
        for row in range(LABEL_ROWS):
            if row == len(free):
                free.append(float(WIDTH))
            if start + width + GAP <= free[row]:
                placed[index] = (row, start)
                free[row] = start
                free[:row] = [min(edge, label.x) for edge in free[:row]]
                break
            if free[row] < label.x:  # its leader would cross this row's text
                break
    return placed


def _timeline(scenario: dict[str, Any]) -> str:
    """The scenario as inline SVG: rig, device and server lanes over one time axis."""
    steps, observed, expected, connections = (scenario.get(key) or [] for key in
                                              ("steps", "observed", "expected", "connections"))
    if not (steps or observed or connections):
        return "<p class=\"note\">Nothing happened on the scenario's clock: no timeline.</p>"
    times = [scenario.get("seconds") or 0.0, *(s["end"] for s in steps), *(e["t"] for e in observed),
             *(w["t"] for w in expected), *(c["t"] + (c["seconds"] or 0.0) for c in connections)]
    axis = _Axis.spanning(max(times))
    lanes = [_rig_lane(steps, axis), _device_lane(observed, expected, axis), _server_lane(connections, axis)]
    top, drawn = 0.0, []
    for lane in lanes:
        height, svg = lane.draw(top)
        drawn.append(svg)
        top += height
    grid, ticks = [], []
    for t, text in axis.ticks():
        x = axis.x(t)
        grid.append(_svg("line", {"class": "grid", "x1": x, "x2": x, "y1": 0, "y2": top}))
        ticks.append(_svg("line", {"class": "tick lane-edge", "data-t": text, "x1": x, "x2": x, "y1": top, "y2": top + 5})
                     + _svg("text", {"x": x, "y": top + 17, "text-anchor": "middle"}, text))
    height = top + 24
    ticks.append(_svg("text", {"class": "lane-name", "x": 4, "y": top + 17}, "s"))
    label = f"Timeline of {scenario['name']}, {axis.end:g} s"
    return (f"<h3>Timeline</h3><svg class=\"timeline\" viewBox=\"0 0 {WIDTH} {height:.0f}\" width=\"{WIDTH}\" "
            f"height=\"{height:.0f}\" role=\"img\" aria-label=\"{_e(label)}\" data-seconds=\"{axis.end:g}\">"
            + "".join(grid) + "".join(drawn) + "".join(ticks) + "</svg>" + LEGEND)


LEGEND = (
    "<p class=\"legend\"><span><i class=\"k-flash\"></i>flash</span><span><i class=\"k-read-back\"></i>read-back</span>"
    "<span>▼ reset</span><span>◆ power cut</span><span><i class=\"k-transition\"></i>transition</span>"
    "<span>▲ wait met</span><span>✕ wait missed</span><span><i class=\"k-connection\"></i>connection</span>"
    "<span><i class=\"k-handshake\"></i>TLS handshake</span><span><i class=\"k-refused\"></i>refused</span>"
    "<span><i class=\"k-download\"></i>body sent</span><span class=\"muted\">hover a mark for its details</span></p>"
)


def _rig_lane(steps: list[dict[str, Any]], axis: _Axis) -> _Lane:
    lane = _Lane("rig")
    y = lane.track_y(0)
    for step in sorted(steps, key=lambda s: s["start"]):
        words = " ".join(part for part in (step["step"], step["detail"]) if part)
        until = "" if step["step"] in INSTANTS else f" to {_at(step['end'])}"
        title = f"<title>{_e(words)}: {_e(_at(step['start']) + until)}</title>"
        x = axis.x(step["start"])
        if step["step"] in INSTANTS:
            shape = _marker(x, y, "triangle" if step["step"] == "reset" else "diamond")
            lane.shapes.append(f"<g class=\"instant {step['step'].replace(' ', '-')}\">{title}{shape}</g>")
        else:
            width = max(axis.x(step["end"]) - x, 1.5)
            kind = step["step"] if step["step"] in ("build", "flash", "read-back") else "bar"
            lane.shapes.append(f"<g>{title}" + _svg("rect", {"class": kind, "x": x, "y": y + 2, "width": width,
                                                              "height": TRACK - 4}) + "</g>")
        lane.labels.append(_Label(x, y, words))
    return lane


def _marker(x: float, y: float, kind: str) -> str:
    """A mark centred on x in a track starting at y: a line through the track and a head."""
    head = {"triangle": f"{x - 5:.1f},{y:.1f} {x + 5:.1f},{y:.1f} {x:.1f},{y + 7:.1f}",
            "diamond": f"{x:.1f},{y:.1f} {x + 5:.1f},{y + 5:.1f} {x:.1f},{y + 10:.1f} {x - 5:.1f},{y + 5:.1f}"}[kind]
    return _svg("line", {"x1": x, "x2": x, "y1": y, "y2": y + TRACK}) + f"<polygon points=\"{head}\"/>"


def _device_lane(observed: list[dict[str, Any]], expected: list[dict[str, Any]], axis: _Axis) -> _Lane:
    lane = _Lane("device")
    y = lane.track_y(0)
    middle = y + TRACK / 2
    for event in observed:
        x = axis.x(event["t"])
        title = f"<title>{_e(_at(event['t']))} line {event['line']}: {_e(event['text'])}</title>"
        if event["transition"]:
            cls = "transition reset" if event["event"] == "reset" else "transition"
            lane.shapes.append(f"<g>{title}" + _svg("circle", {"class": cls, "cx": x, "cy": middle, "r": 4}) + "</g>")
            lane.labels.append(_Label(x, middle - 4, event["transition"]))
        else:
            lane.shapes.append(f"<g>{title}" + _svg("line", {"class": "event", "x1": x, "x2": x, "y1": y + TRACK - 4,
                                                              "y2": y + TRACK}) + "</g>")
    for wait in expected:
        x = axis.x(wait["t"])
        title = f"<title>{_e(_at(wait['t']))} expected {_e(wait['what'])}: {_e(wait['outcome'])}</title>"
        if wait["outcome"] in ("met", "absent"):
            head = f"{x - 3:.1f},{y + TRACK:.1f} {x + 3:.1f},{y + TRACK:.1f} {x:.1f},{y + TRACK - 5:.1f}"
            lane.shapes.append(f"<g class=\"met\">{title}<polygon points=\"{head}\"/></g>")
        else:
            cross = "".join(_svg("line", {"x1": x - 5, "x2": x + 5, "y1": middle + dy, "y2": middle - dy})
                            for dy in (-5, 5))
            lane.shapes.append(f"<g class=\"missed\">{title}{cross}</g>")
            lane.labels.append(_Label(x, middle - 5, f"{wait['outcome']}: {wait['what']}", "bad"))
    return lane


def _server_lane(connections: list[dict[str, Any]], axis: _Axis) -> _Lane:
    lane = _Lane("server")
    rows = _stack([(axis.x(c["t"]), axis.x(c["t"] + (c["seconds"] or 0.0))) for c in connections])
    lane.tracks = max(rows, default=0) + 1
    for connection, row in zip(connections, rows):
        lane.shapes.append(_connection(connection, lane.track_y(row), axis, lane.labels))
    return lane


def _stack(spans: list[tuple[float, float]]) -> list[int]:
    """A track for each (start, end), spans on one track apart; at most MAX_TRACKS tracks, the
    one that frees soonest shared when more overlap (a flood)."""
    ends: list[float] = []  # where each track's last span ends
    tracks = []
    for start, end in spans:
        track = next((i for i, last in enumerate(ends) if last + 2 <= start), None)
        if track is None and len(ends) < MAX_TRACKS:
            track = len(ends)
            ends.append(0.0)
        if track is None:
            track = min(range(len(ends)), key=ends.__getitem__)
        ends[track] = max(ends[track], end, start + 2)
        tracks.append(track)
    return tracks


def _connection(connection: dict[str, Any], y: float, axis: _Axis, labels: list[_Label]) -> str:
    """One connection's bar: handshake shaded, bodies sent in green; labels go to `labels`."""
    t, tls = connection["t"], connection["tls"]
    x = axis.x(t)
    end = axis.x(t + (connection["seconds"] or 0.0))
    requests = "; ".join(f"{r['method']} {r['path']} → {r['status']}, {r['bytes_sent']} B"
                         for r in connection["requests"])
    handshake = ("plain" if tls is None else f"TLS {tls['version']}" if tls["ok"]
                 else f"TLS refused ({tls['alert'] or tls['error']})")
    words = f"{_at(t)} {connection['peer']} → {connection['listener']}: {handshake}"
    parts = [f"<title>{_e(words)}{_e('; ' + requests if requests else '')}</title>",
             _svg("rect", {"class": "connection", "x": x, "y": y, "width": max(end - x, 1.5), "height": TRACK})]
    if tls is not None and tls["seconds"] is not None:
        shaded = max(axis.x(t + tls["seconds"]) - x, 1.5)
        parts.append(_svg("rect", {"class": "handshake", "x": x, "y": y, "width": shaded, "height": TRACK}))
    if tls is not None and not tls["ok"]:
        labels.append(_Label(x, y, f"✕ {tls['alert'] or 'handshake failed'}", "bad"))
    for request in connection["requests"]:
        parts.append(_svg("line", {"class": "request", "x1": axis.x(t + request["at"]), "x2": axis.x(t + request["at"]),
                                   "y1": y + 2, "y2": y + TRACK - 2}))
        if request["body_started"] is not None and request["body_ended"] is not None:
            parts.append(_body(request, t, y, axis, labels))
    cls = "refused" if tls is not None and not tls["ok"] else "accepted"
    return f"<g class=\"{cls}\">" + "".join(parts) + "</g>"


def _body(request: dict[str, Any], t: float, y: float, axis: _Axis, labels: list[_Label]) -> str:
    """A body the server sent, first byte to last, as a bar at least 3 units wide."""
    start, end = t + request["body_started"], t + request["body_ended"]
    sent, length = request["bytes_sent"], request["content_length"]
    words = _bytes(sent) if sent == length or length is None else f"{sent:,} of {_bytes(length)}"
    x = axis.x(start)
    labels.append(_Label(x, y - 2, words))
    return (f"<g><title>{_e(_at(start))} to {_e(_at(end))}: body {_e(words)} sent</title>"
            + _svg("rect", {"class": "download", "x": x, "y": y - 2, "width": max(axis.x(end) - x, 3.0),
                            "height": TRACK + 4, "data-bytes": sent, "data-start": f"{start:.6f}",
                            "data-end": f"{end:.6f}"}) + "</g>")


# --- small pieces -----------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape(str(value))


def _svg(tag: str, attributes: dict[str, Any], content: str | None = None) -> str:
    """An SVG element; numbers are written to a tenth, everything else escaped."""
    written = " ".join(f"{name}=\"{value:.1f}\"" if isinstance(value, float) else f"{name}=\"{_e(value)}\""
                       for name, value in attributes.items() if value != "")
    return f"<{tag} {written}/>" if content is None else f"<{tag} {written}>{content}</{tag}>"


def _table(columns: str, rows: list[list[str]], row_attributes: list[str] | None = None, cls: str = "") -> str:
    """A table of cells that are HTML already. `columns` is "Name|Name:num|...": a header and
    the class of its cells (num: right-aligned figures)."""
    heads = [column.partition(":") for column in columns.split("|")]
    head = "".join(f"<th>{_e(name)}</th>" for name, _, _ in heads)
    classes = [f" class=\"{kind}\"" if kind else "" for _, _, kind in heads]
    body = "\n".join(f"<tr{attributes}>" + "".join(f"<td{c}>{cell}</td>" for c, cell in zip(classes, row)) + "</tr>"
                     for attributes, row in zip(row_attributes or [""] * len(rows), rows))
    table_class = f" class=\"{cls}\"" if cls else ""
    return f"<table{table_class}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(pairs: list[tuple[str, str]]) -> str:
    """Name: value lines; the values are HTML already."""
    return "<dl class=\"facts\">" + "".join(f"<dt>{_e(name)}</dt><dd>{value}</dd>" for name, value in pairs) + "</dl>"


def _badge(verdict: str) -> str:
    return f"<span class=\"badge v-{_e(verdict)}\">{_e(verdict)}</span>"


def _breakable(name: str) -> str:
    """A test name that may wrap after its underscores."""
    return _e(name).replace("_", "_<wbr>")


def _sha(sha256: str) -> str:
    return f"<code title=\"{_e(sha256)}\">{_e(sha256[:12])}…</code>"


def _href(path: str) -> str:
    return _e(urllib.parse.quote(path))


def _when(iso: str) -> str:
    moment = datetime.datetime.fromisoformat(iso).astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _at(t: float | None) -> str:
    """A moment on the scenario's clock."""
    return "—" if t is None else f"{t:.3f} s"


def _seconds(value: float | None) -> str:
    """A duration at a precision that reads: 12.3 s, 797 ms, 4.2 ms, 400 µs."""
    if value is None:
        return "—"
    if value >= 10:
        return f"{value:.1f} s"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 0.01:
        return f"{value * 1000:.0f} ms"
    if value >= 0.001:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1e6:.0f} µs"


def _bytes(count: int | None, per_second: bool = False) -> str:
    """90,192 B for a size; 225 MB/s for a rate."""
    if count is None:
        return "—"
    if not per_second:
        return f"{count:,} B"
    for unit, size in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count:.0f} B/s"
