"""One scenario's section in report.html: a test, what it waited for and what came.

`section(key, scenario, run_dir)` is a <section> with the test's verdict, module, name and
total time as its (clickable) summary, open when the verdict is in BAD. Inside: the test's
docstring and message, then, when the test reached its scenario, what it built, offered and
presented (setup), what the rig found wrong in the device's story (findings: an update
loop), what it waited for against the transitions the device showed, side by
side, its timeline (timeline.py), the server's record of connections, the serial log with the
lines the verdict rests on marked (serial_log.py), and links to the scenario's files. A test
that never reached its scenario (a setup error) has just its verdict and message. Every id in
the section starts with `key`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ota_rig.reporting import serial_log, timeline
from ota_rig.reporting.markup import at, badge, breakable, duration, e, facts, href, sha, size, table

BAD = ("failed", "error", "interrupted")  # the verdicts whose section starts open, and that "show only failures" keeps


def section(key: str, scenario: dict[str, Any], run_dir: Path) -> str:
    """The section for one test; `key` prefixes every id in it."""
    verdict = scenario["verdict"]
    total = (scenario.get("durations") or {}).get("total")
    parts = [
        f"<summary>{badge(verdict)}<span class=\"muted\">{e(scenario.get('module') or '')} ·</span> "
        f"<h2>{breakable(scenario['name'])}</h2> <span class=\"muted\">{e(duration(total))}</span></summary>",
    ]
    if scenario.get("doc"):
        parts.append(f"<p class=\"doc\">{e(scenario['doc'])}</p>")
    if scenario.get("details") or scenario.get("message"):
        parts.append(f"<pre class=\"message\">{e(scenario.get('details') or scenario['message'])}</pre>")
    if "observed" not in scenario or "expected" not in scenario:
        why = scenario.get("record_error") or "it ended before its scenario began"
        parts.append(f"<p class=\"note\">This test left no scenario record: {e(why)}.</p>")
    else:
        log = serial_log.read(scenario, run_dir)
        parts += [
            _setup(scenario),
            _findings(key, scenario, log),
            "<div class=\"pair\">" + _expected(key, scenario, log) + _transitions(key, scenario, log) + "</div>",
            timeline.render(scenario),
            _server(scenario),
            "<h3>Serial log</h3>" + serial_log.render(key, scenario, log),
            _logs(scenario),
        ]
    opened = " open" if verdict in BAD else ""
    return (f"<section class=\"scenario v-{e(verdict)}\" id=\"{key}\" data-id=\"{e(scenario['id'])}\">"
            f"<details{opened}>\n" + "\n".join(parts) + "\n</details></section>")


def _setup(scenario: dict[str, Any]) -> str:
    """What the scenario built, offered and presented, in one list."""
    def firmware(item: dict[str, Any]) -> str:
        extras = [f"rate {size(item['rate'], per_second=True)}" if item.get("rate") else "",
                  f"<code>{e(item['fault'])}</code>" if item.get("fault") else ""]
        return f"{e(item['version'])} {sha(item['sha256'])} {' '.join(extra for extra in extras if extra)}".strip()

    pairs = [("Profile", e(scenario.get("profile") or "—"))]
    for role in ("built", "offered"):
        items = [item for item in scenario.get("firmware", ()) if item["role"] == role]
        if items:
            pairs.append((f"Firmware {role}", "; ".join(firmware(item) for item in items)))
    certificates = scenario.get("certificates", ())
    if certificates:
        pairs.append(("Certificates", "; ".join(
            f"{e(c['name'])} <span class=\"muted\">({e(c['role'])}"
            f"{', listener ' + e(c['listener']) if c.get('listener') else ''})</span> {sha(c['sha256'])}"
            for c in certificates)))
    return facts(pairs)


def _expected(key: str, scenario: dict[str, Any], log: serial_log.Log | None) -> str:
    rows = [[at(wait["t"]), f"<code>{e(wait['what'])}</code>",
             f"<span class=\"badge o-{e(wait['outcome'])}\">{e(wait['outcome'])}</span>",
             serial_log.link(key, wait["line"], log)] for wait in scenario["expected"]]
    none = "<p class=\"note\">The test waited for nothing.</p>"
    shown = table("t:num|Expected|Outcome|Line:num", rows) if rows else none
    return f"<div><h3>Expected</h3>{shown}</div>"


def _transitions(key: str, scenario: dict[str, Any], log: serial_log.Log | None) -> str:
    rows = [[at(event["t"]), e(event["transition"]), serial_log.link(key, event["line"], log)]
            for event in scenario["observed"] if event["transition"]]
    none = "<p class=\"note\">The device showed no transition.</p>"
    shown = table("t:num|Observed transition|Line:num", rows) if rows else none
    return f"<div><h3>Observed</h3>{shown}</div>"


def _findings(key: str, scenario: dict[str, Any], log: serial_log.Log | None) -> str:
    """What the rig found wrong in the device's story whatever the verdict (an update loop), or nothing."""
    rows = [[at(finding["t"]), f"<strong>{e(finding['finding'])}</strong>: {e(finding['text'])}",
             serial_log.link(key, finding["line"], log)] for finding in scenario.get("findings", ())]
    return f"<div class=\"findings\"><h3>Findings</h3>{table('t:num|Finding|Line:num', rows)}</div>" if rows else ""


def _server(scenario: dict[str, Any]) -> str:
    connections = scenario.get("connections", ())
    total = scenario.get("connections_total", len(connections))
    if not connections:
        return "<h3>Server</h3><p class=\"note\">The server saw no connection.</p>"
    rows = [[at(c["t"]), e(c["peer"]), e(c["listener"]), _tls(c["tls"]), *_requests(c["requests"]),
             e(c["ended"] or "") + (f"<br><span class=\"muted\">{e(c['error'])}</span>" if c.get("error") else "")]
            for c in connections]
    shown = (f"{len(connections)} of {total:,} connections, the first by time; server.jsonl has them all"
             if total > len(connections) else f"{total} connection{'s' * (total != 1)}")
    return (f"<h3>Server</h3><p class=\"note\">{e(shown)}</p>"
            + table("t:num|Peer|Listener|TLS|Request|x-ESP32-version|Sent / length:num|Complete|Ended", rows))


def _requests(requests: list[dict[str, Any]]) -> list[str]:
    """A connection's requests as four cells: request line and status, version asked from,
    bytes sent of the length announced, complete; one line per request."""
    def column(words) -> str:
        return "<br>".join(words(r) for r in requests) or "—"
    return [
        column(lambda r: f"<code>{e(r['method'])} {e(r['path'])}</code> → {e(r['status'])}"),
        column(lambda r: e(r["version"] or "—")),
        column(lambda r: f"{size(r['bytes_sent'])} / {size(r['content_length'])}"),
        column(lambda r: "yes" if r["complete"] else "<strong>no</strong>"),
    ]


def _tls(tls: dict[str, Any] | None) -> str:
    if tls is None:
        return "<span class=\"muted\">plain</span>"
    if tls["ok"]:
        return f"✓ {e(tls['version'])}"
    reason = tls["alert"] or tls["error"] or "failed"
    return f"<strong title=\"{e(tls['error'] or '')}\">✕ {e(reason)}</strong>"


def _logs(scenario: dict[str, Any]) -> str:
    logs = scenario.get("logs") or {}
    links = [f"<a href=\"{href(path)}\">{e(name)}</a>" for name, path in logs.items()]
    return f"<p class=\"logs\"><span class=\"muted\">Files:</span> {''.join(links) or 'none'}</p>"
