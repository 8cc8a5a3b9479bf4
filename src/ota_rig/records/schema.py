"""The shape of results.json (schema `rig-results/1`; docs/results.md says what each field means).

`check(results)` walks a document against `RESULTS` and names the first field that is missing or
of the wrong kind (`scenarios[2].durations.total is a string, not a number or null`), so that
`rig report` and `rig compare` refuse a file no run wrote in one sentence instead of tripping
over it halfway.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

SCHEMA = "rig-results/1"
# pytest's words, and `interrupted`: the run was stopped (SIGINT, SIGTERM) before the test ended.
VERDICTS = ("passed", "failed", "error", "skipped", "interrupted")


class Map:
    """A JSON object with any keys, each value of the shape `value`."""

    def __init__(self, value: Any) -> None:
        self.value = value


class Maybe:
    """null, or a value of the shape `value`."""

    def __init__(self, value: Any) -> None:
        self.value = value


class Moment:
    """A time as ISO 8601 text (`2026-11-21T18:22:57.123456+00:00`)."""


# A shape is a type or tuple of types, a set of allowed strings, a list holding the shape of
# its items, a Map, a Maybe, a Moment, or a dict of fields (a name ending in "?" may be missing).
TEXT, NUMBER, NULL = str, (int, float), type(None)
MAYBE_TEXT, MAYBE_NUMBER = (str, NULL), (int, float, NULL)
BOARD = {"kind": MAYBE_TEXT, "port": MAYBE_TEXT, "chip": MAYBE_TEXT, "mac": MAYBE_TEXT}
FIRMWARE = {"version": TEXT, "role": TEXT, "profile?": MAYBE_TEXT, "sha256": TEXT, "size": NUMBER}
CERTIFICATE = {"name": TEXT, "role": TEXT, "sha256": TEXT}
REQUEST = {"method": TEXT, "path": TEXT, "status": MAYBE_NUMBER, "version": MAYBE_TEXT, "bytes_sent": NUMBER,
           "content_length": MAYBE_NUMBER, "complete": bool, "at": NUMBER, "body_started": MAYBE_NUMBER,
           "body_ended": MAYBE_NUMBER}
TLS = {"ok": bool, "version": MAYBE_TEXT, "alert": MAYBE_TEXT, "error": MAYBE_TEXT, "seconds": MAYBE_NUMBER}
CONNECTION = {"t": NUMBER, "seconds": MAYBE_NUMBER, "listener": TEXT, "peer": MAYBE_TEXT, "ended": MAYBE_TEXT,
              "tls": Maybe(TLS), "requests": [REQUEST]}
DOWNLOAD = {"bytes": NUMBER, "seconds": NUMBER, "bytes_per_second": MAYBE_NUMBER}
SCENARIO = {
    "id": TEXT, "module?": TEXT, "name": TEXT, "verdict": set(VERDICTS), "message?": MAYBE_TEXT,
    "details?": MAYBE_TEXT, "doc?": MAYBE_TEXT, "profile?": MAYBE_TEXT, "started?": Moment(), "seconds?": NUMBER,
    "board?": BOARD, "firmware?": [FIRMWARE], "certificates?": [CERTIFICATE],
    "steps?": [{"step": TEXT, "start": NUMBER, "end": NUMBER, "detail": MAYBE_TEXT}],
    "observed?": [{"t": NUMBER, "event": TEXT, "fields": Map(TEXT), "line": int, "transition": MAYBE_TEXT}],
    "expected?": [{"t": NUMBER, "what": TEXT, "outcome": TEXT, "line": (int, NULL)}],
    "findings?": [{"finding": TEXT, "t": NUMBER, "line": int, "text": TEXT}],
    "connections?": [CONNECTION], "connections_total?": int,
    "durations?": {"download?": Maybe(DOWNLOAD), **{f"{phase}?": MAYBE_NUMBER for phase in
                                                    ("build", "flash", "boot", "tls_handshake", "reboot", "total")}},
    "timings?": Map(NUMBER), "logs?": Map(TEXT), "record_error?": TEXT,
}
RESULTS = {
    "schema": TEXT,
    "rig": {"version": TEXT, "commit": MAYBE_TEXT, "python?": TEXT, "esptool": MAYBE_TEXT, "host?": MAYBE_TEXT},
    "run": {"started": Moment(), "finished": Moment(), "seconds": NUMBER, "command": TEXT, "board": TEXT,
            "interrupted?": MAYBE_TEXT},
    "board": BOARD,
    "profiles": [{"name": TEXT, "core": MAYBE_TEXT, "idf": MAYBE_TEXT, "mbedtls": MAYBE_TEXT}],
    # results.json written before runs could be interrupted has no summary.interrupted
    "summary": {"total": int, "passed": int, "failed": int, "error": int, "skipped": int, "interrupted?": int},
    "firmware": [FIRMWARE],
    "certificates": [CERTIFICATE],
    "scenarios": [SCENARIO],
}

KINDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
         list: "a list", NULL: "null"}


def check(results: Any) -> str | None:
    """What is wrong with `results` as a results.json, in a few words; None when nothing is."""
    return _problem(results, RESULTS, "")


def _problem(value: Any, shape: Any, where: str) -> str | None:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where or 'the file'} is {_kind(value)}, not an object"
        for key, inner in shape.items():
            name = key.removesuffix("?")
            if name not in value:
                if key.endswith("?"):
                    continue
                return f"{_at(where, name)} is missing"
            problem = _problem(value[name], inner, _at(where, name))
            if problem:
                return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} is {_kind(value)}, not a list"
        return next((problem for number, item in enumerate(value)
                     if (problem := _problem(item, shape[0], f"{where}[{number}]"))), None)
    if isinstance(shape, Map):
        if not isinstance(value, dict):
            return f"{where} is {_kind(value)}, not an object"
        return next((problem for key, item in value.items()
                     if (problem := _problem(item, shape.value, _at(where, key)))), None)
    if isinstance(shape, Moment):
        try:
            datetime.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            return f"{where} is {json.dumps(value)}, not an ISO 8601 time"
        return None
    if isinstance(shape, Maybe):
        return None if value is None else _problem(value, shape.value, where)
    if isinstance(shape, set):
        return (
            None
            if isinstance(value, str) and value in shape
            else f"{where} is {json.dumps(value)}, not one of {', '.join(sorted(shape))}"
        )
    kinds = shape if isinstance(shape, tuple) else (shape,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        named = [KINDS[kind] for kind in kinds if not (kind is int and float in kinds)]  # a number covers both
        return f"{where} is {_kind(value)}, not {' or '.join(named)}"
    return None


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: Any) -> str:
    return KINDS.get(type(value), type(value).__name__)
