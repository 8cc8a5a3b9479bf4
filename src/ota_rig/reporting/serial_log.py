"""A scenario's serial log in report.html: what the device printed, line by line.

`read` takes serial.log as the monitor wrote it (one line per "\\n", bytes that are not UTF-8
replaced) and decides which lines the page shows: all of them, or, past MAX_LOG_LINES or
MAX_LOG_BYTES, two thirds of the budget from the start and a third from the end, with a note
in the gap that links the whole file. `render` draws the shown lines numbered from 0, the
lines the verdict rests on marked (a line a wait matched "hit", a line that came when it
should not have "came", every other event lightly) and anchored as <key>-L<n>; `link` is a
line number that leads to that anchor when the line is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ota_rig.reporting.markup import e, href, size

MAX_LOG_LINES = 3000  # serial lines shown per scenario: two thirds from the start, the rest from the end
MAX_LOG_BYTES = 400_000


@dataclass
class Log:
    """A scenario's serial.log as read: every line, and which of them the page shows."""

    path: str  # relative to run_dir
    lines: list[str]
    head: int  # lines [0, head) are shown ...
    tail: int  # ... and lines [tail, end)

    def shows(self, index: int) -> bool:
        return 0 <= index < self.head or self.tail <= index < len(self.lines)


def read(scenario: dict[str, Any], run_dir: Path) -> Log | None:
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
        return Log(path, lines, len(lines), len(lines))
    head = _fitting(lines, MAX_LOG_LINES * 2 // 3, MAX_LOG_BYTES * 2 // 3)
    tail = len(lines) - _fitting(reversed(lines[head:]), MAX_LOG_LINES // 3, MAX_LOG_BYTES // 3)
    return Log(path, lines, head, tail)


def _fitting(lines: Iterable[str], most_lines: int, most_bytes: int) -> int:
    """How many of `lines`, from the first, fit in both budgets."""
    count = total = 0
    for line in lines:
        total += len(line.encode()) + 1
        if count == most_lines or total > most_bytes:
            break
        count += 1
    return count


def render(key: str, scenario: dict[str, Any], log: Log | None) -> str:
    """The log as a <pre> of numbered lines, or a note saying why there is none; `key` prefixes
    each marked line's id."""
    path = (scenario.get("logs") or {}).get("serial")
    if path is None:
        return "<p class=\"note\">No serial log: the board was never started.</p>"
    if log is None:
        return f"<p class=\"note\">The serial log <a href=\"{href(path)}\">{e(path)}</a> is missing or unreadable.</p>"
    marks = _line_marks(scenario)
    out = []
    for index in [*range(log.head), *range(log.tail, len(log.lines))]:
        if index == log.tail and log.tail > log.head:
            out.append(_gap(log))
        cls, title = marks.get(index, ("", ""))
        attributes = f" class=\"l {cls}\" id=\"{key}-L{index}\" title=\"{e(title)}\"" if cls else " class=\"l\""
        out.append(f"<span{attributes} data-n=\"{index}\">{e(log.lines[index])}</span>")
    if not log.lines:
        out.append("<span class=\"gap\">The device sent nothing.</span>")
    return f"<pre class=\"serial\">{''.join(out)}</pre>"


def link(key: str, line: int | None, log: Log | None) -> str:
    """A serial.log line number, as a link to the line where the page shows it."""
    if line is None:
        return ""
    if log is None or not log.shows(line):
        return str(line)
    return f"<a href=\"#{key}-L{line}\">{line}</a>"


def _gap(log: Log) -> str:
    left_out = log.lines[log.head:log.tail]
    left_bytes = sum(len(line.encode()) + 1 for line in left_out)
    return (f"<span class=\"gap\">… {len(left_out):,} lines ({e(size(left_bytes))}) left out here; "
            f"the whole log: <a href=\"{href(log.path)}\">{e(log.path)}</a></span>")


def _line_marks(scenario: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """serial.log line -> (class, tooltip): lines a wait matched strongly, other events lightly."""
    marks = {event["line"]: ("ev", event["event"]) for event in scenario["observed"]}
    for wait in scenario["expected"]:
        if wait["line"] is not None and wait["outcome"] in ("met", "came"):
            cls = "hit" if wait["outcome"] == "met" else "came"
            marks[wait["line"]] = (cls, f"expected {wait['what']}: {wait['outcome']}")
    return marks
