"""esptool without the hex dumps it makes for a trace nobody asked for (issue 19).

esptool 5.6.0 builds its trace messages as f-strings around `HexFormatter(data)`
(esptool/loader.py: `ESPLoader.write` for every packet it sends, `ESPLoader.command` for every
command, `slip_reader` for every read), and only then does `trace()` look at
`_trace_enabled` and throw the text away. So every packet is turned into an indented hex and
ASCII dump whether or not `--trace` was given: about 0.6 ms a packet, 2,051 of them for two
scenarios on the twin, half of their esptool time (bench/overhead.py --profile: 1.24 s of 2.4 s).
On a real board at 921600 baud the line takes far longer than that, so it is the twin's runs
and an RFC2217 farm's that notice.

`quiet()` makes `HexFormatter` format to an empty string while no trace is wanted, and
`tracing(True)` gives back esptool's own dump, for runs with `--trace`: what esptool prints is
the same either way, since without a trace those strings were never printed. Where esptool has
no `HexFormatter` (another release), nothing changes.
"""

from __future__ import annotations

from typing import Any

_wanted = False  # a run with --trace is under way: dump as esptool does
_original_str: Any = None  # HexFormatter.__str__ as esptool defines it


def trace_asked(argv: list[str]) -> bool:
    """Whether esptool's command line `argv` asks for a trace (`--trace` or `-t`)."""
    return "--trace" in argv or "-t" in argv


def quiet(trace: bool = False) -> None:
    """Make esptool's hex dumps cost nothing unless `trace`; call before each esptool run."""
    global _wanted, _original_str
    _wanted = trace
    try:
        from esptool.loader import HexFormatter
    except ImportError:  # an esptool without it: nothing to fix
        return
    if _original_str is None:
        _original_str = HexFormatter.__str__
        HexFormatter.__str__ = _dump_if_wanted


def _dump_if_wanted(self: Any) -> str:
    return _original_str(self) if _wanted else ""
