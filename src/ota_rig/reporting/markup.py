"""The small pieces report.html is made of, shared by its parts (page, scenario, serial_log,
timeline): escaped text, tables and name/value lists, badges and fingerprints, and the words
for a moment, a duration and a size.

Every string that comes from results.json or a log goes through `e` (html.escape) before it
becomes part of the page; functions that take cells or values that are "HTML already" say so.
"""

from __future__ import annotations

import html
import urllib.parse
from typing import Any


def e(value: Any) -> str:
    """`value` as text that can never become markup: html.escape of its str()."""
    return html.escape(str(value))


def table(columns: str, rows: list[list[str]], row_attributes: list[str] | None = None, cls: str = "") -> str:
    """A table of cells that are HTML already. `columns` is "Name|Name:num|...": a header and
    the class of its cells (num: right-aligned figures)."""
    heads = [column.partition(":") for column in columns.split("|")]
    head = "".join(f"<th>{e(name)}</th>" for name, _, _ in heads)
    classes = [f" class=\"{kind}\"" if kind else "" for _, _, kind in heads]
    body = "\n".join(f"<tr{attributes}>" + "".join(f"<td{c}>{cell}</td>" for c, cell in zip(classes, row, strict=True))
                     + "</tr>" for attributes, row in zip(row_attributes or [""] * len(rows), rows, strict=True))
    table_class = f" class=\"{cls}\"" if cls else ""
    return f"<table{table_class}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def facts(pairs: list[tuple[str, str]]) -> str:
    """Name: value lines; the values are HTML already."""
    return "<dl class=\"facts\">" + "".join(f"<dt>{e(name)}</dt><dd>{value}</dd>" for name, value in pairs) + "</dl>"


def badge(verdict: str) -> str:
    """A verdict as a coloured pill (class v-<verdict>)."""
    return f"<span class=\"badge v-{e(verdict)}\">{e(verdict)}</span>"


def breakable(name: str) -> str:
    """A test name that may wrap after its underscores."""
    return e(name).replace("_", "_<wbr>")


def sha(sha256: str) -> str:
    """A SHA-256 as its first 12 digits, the whole of it in a tooltip."""
    return f"<code title=\"{e(sha256)}\">{e(sha256[:12])}…</code>"


def href(path: str) -> str:
    """A relative file path as an href value."""
    return e(urllib.parse.quote(path))


def at(t: float | None) -> str:
    """A moment on the scenario's clock."""
    return "—" if t is None else f"{t:.3f} s"


def duration(value: float | None) -> str:
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


def size(count: int | None, per_second: bool = False) -> str:
    """90,192 B for a size; 225 MB/s for a rate."""
    if count is None:
        return "—"
    if not per_second:
        return f"{count:,} B"
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count:.0f} B/s"
