"""The timeline of one scenario in report.html: inline SVG on the scenario's clock.

`render(scenario)` draws the scenario in seconds since it began, one lane per witness: "rig"
(what the rig did: builds, flashes and read-backs as bars, resets and power cuts as marks),
"device" (the transitions the UART showed; a wait that missed as a red cross), "server" (each
connection as a bar, its TLS handshake shaded, a refused one red with the alert the device
sent, and each body sent as a green bar labelled with its bytes). Labels stand in rows above
their marks, a crowd of them as a staircase that reads in time order from the top, and every
mark also carries its words in a <title> (a tooltip). LEGEND, under the drawing, names the marks.

Inside: _Axis maps seconds to x; a _Lane holds one witness's shapes and the _Labels that name
them, placed by _stagger; _rig_lane, _device_lane and _server_lane fill one lane each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ota_rig.reporting.markup import at, e, size

INSTANTS = ("reset", "power cut", "time lapse")  # steps that are a moment, not a span

# Timeline geometry, in SVG user units (pixels at 100 %).
WIDTH, LEFT, RIGHT = 1160, 76, 24
TRACK, ROW, PAD = 14, 14, 6  # a track of bars or marks, a row of labels, a lane's padding
LABEL_ROWS = 10  # label rows a lane may use; a label that finds no room is in its mark's <title> only
CHAR = 6.6  # width of a label character: 11 px monospace
GAP = 16  # between two labels in a row
MAX_TRACKS = 4  # rows of overlapping connections in the server lane


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
        for label, where in zip(self.labels, placed, strict=True):
            if where is not None:
                row, start = where
                baseline = PAD + (rows - 1 - row) * ROW + 10
                texts.append(_svg("line", {"class": "leader", "x1": label.x, "y1": tracks_top + label.y,
                                           "x2": start, "y2": baseline + 3}))
                texts.append(_svg("text", {"x": start + 1, "y": baseline, "class": label.cls}, e(label.text)))
        height = tracks_top + self.track_y(self.tracks) + PAD
        body = "".join([
            _svg("line", {"class": "lane-edge", "x1": 0, "x2": WIDTH, "y1": height, "y2": height}),
            _svg("text", {"class": "lane-name", "x": 4, "y": tracks_top + TRACK - 3}, e(self.name)),
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


def render(scenario: dict[str, Any]) -> str:
    """The scenario as inline SVG under its heading, rig, device and server lanes over one time
    axis, then LEGEND; or a note when nothing happened on the scenario's clock."""
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
        ticks.append(_svg("line", {"class": "tick lane-edge", "data-t": text, "x1": x, "x2": x, "y1": top,
                                   "y2": top + 5})
                     + _svg("text", {"x": x, "y": top + 17, "text-anchor": "middle"}, text))
    height = top + 24
    ticks.append(_svg("text", {"class": "lane-name", "x": 4, "y": top + 17}, "s"))
    label = f"Timeline of {scenario['name']}, {axis.end:g} s"
    return (f"<h3>Timeline</h3><svg class=\"timeline\" viewBox=\"0 0 {WIDTH} {height:.0f}\" width=\"{WIDTH}\" "
            f"height=\"{height:.0f}\" role=\"img\" aria-label=\"{e(label)}\" data-seconds=\"{axis.end:g}\">"
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
        until = "" if step["step"] in INSTANTS else f" to {at(step['end'])}"
        title = f"<title>{e(words)}: {e(at(step['start']) + until)}</title>"
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
        title = f"<title>{e(at(event['t']))} line {event['line']}: {e(event['text'])}</title>"
        if event["transition"]:
            cls = "transition reset" if event["event"] == "reset" else "transition"
            lane.shapes.append(f"<g>{title}" + _svg("circle", {"class": cls, "cx": x, "cy": middle, "r": 4}) + "</g>")
            lane.labels.append(_Label(x, middle - 4, event["transition"]))
        else:
            lane.shapes.append(f"<g>{title}" + _svg("line", {"class": "event", "x1": x, "x2": x, "y1": y + TRACK - 4,
                                                              "y2": y + TRACK}) + "</g>")
    for wait in expected:
        x = axis.x(wait["t"])
        title = f"<title>{e(at(wait['t']))} expected {e(wait['what'])}: {e(wait['outcome'])}</title>"
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
    for connection, row in zip(connections, rows, strict=True):
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
    words = f"{at(t)} {connection['peer']} → {connection['listener']}: {handshake}"
    parts = [f"<title>{e(words)}{e('; ' + requests if requests else '')}</title>",
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
    words = size(sent) if sent == length or length is None else f"{sent:,} of {size(length)}"
    x = axis.x(start)
    labels.append(_Label(x, y - 2, words))
    return (f"<g><title>{e(at(start))} to {e(at(end))}: body {e(words)} sent</title>"
            + _svg("rect", {"class": "download", "x": x, "y": y - 2, "width": max(axis.x(end) - x, 3.0),
                            "height": TRACK + 4, "data-bytes": sent, "data-start": f"{start:.6f}",
                            "data-end": f"{end:.6f}"}) + "</g>")


def _svg(tag: str, attributes: dict[str, Any], content: str | None = None) -> str:
    """An SVG element; numbers are written to a tenth, everything else escaped."""
    written = " ".join(f"{name}=\"{value:.1f}\"" if isinstance(value, float) else f"{name}=\"{e(value)}\""
                       for name, value in attributes.items() if value != "")
    return f"<{tag} {written}/>" if content is None else f"<{tag} {written}>{content}</{tag}>"

