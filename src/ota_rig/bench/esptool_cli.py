"""esptool's own command line, with pyserial's RFC2217 client at line speed, as a process or
in this one.

    python -m ota_rig.bench.esptool_cli ARGS...

is `python -m esptool ARGS...`: the same arguments, esptool's own `__main__` run as `-m esptool`
runs it (so its program name, output and exit status are esptool's), after
`ota_rig.bench.rfc2217_fix.apply()` has fixed the installed pyserial where it renegotiates the
line on every timeout change (a no-op where it does not), and `esptool_trace_fix.quiet()` has
stopped esptool from making hex dumps of every packet for a trace that was not asked for. So an
rfc2217:// port costs esptool what a local one does, and a packet costs no more than its bytes.

`in_process(ARGS)` runs the same command line in the calling process through
`esptool.main(argv, esp)`, the entry point esptool documents for scripts ("Embedding into Custom
Scripts", https://docs.espressif.com/projects/esptool/en/latest/esp32/esptool/scripting.html:
"pass exactly the same arguments as you would on the CLI"): no Python interpreter to start and
no esptool to import for each command, and with `esp` (a connection already made) several
commands share one connection, as `main`'s `esp` parameter allows (esptool/__init__.py, 5.6.0).
Everything esptool prints, to stdout and stderr, is captured as the CLI's output would be
(esptool's logger follows a redirected sys.stdout: esptool/logger.py `EsptoolLogger.print`),
and a failure is printed as esptool's `_main` prints it (esptool/__init__.py) with its exit
status.
"""

from __future__ import annotations

import contextlib
import io
import runpy
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from ota_rig.bench import esptool_trace_fix, rfc2217_fix


def main() -> None:
    rfc2217_fix.apply()
    esptool_trace_fix.quiet(esptool_trace_fix.trace_asked(sys.argv[1:]))
    runpy.run_module("esptool", run_name="__main__", alter_sys=True)


def in_process(argv: list[str], esp: Any = None) -> tuple[int, str]:
    """Run esptool's command line `argv` in this process: (exit status, everything it printed).

    `esp` is a connected `esptool.loader.ESPLoader` to run the command on instead of connecting
    (it stays open: its owner closes it)."""
    import esptool  # imported on first use: a rig that runs esptool as a process never loads it

    trace = esptool_trace_fix.trace_asked(argv) or bool(getattr(esp, "_trace_enabled", False))
    return captured(lambda: esptool.main(argv, esp=esp), trace)


def captured(call: Callable[[], object], trace: bool = False) -> tuple[int, str]:
    """Call esptool code in this process as its CLI would run it: (exit status, everything it
    printed, stdout and stderr); `trace` when it was asked for esptool's trace. Ctrl-C is not
    caught: it stops the rig as it stops esptool."""
    import serial
    from esptool.util import FatalError

    rfc2217_fix.apply()
    esptool_trace_fix.quiet(trace)
    output = io.StringIO()
    with redirect_stdout(output), redirect_stderr(output), _SerialSeenByEsptool.watching() as opened:
        # What esptool's `_main` does with each failure (esptool/__init__.py, 5.6.0): the same
        # first sentence and exit status; anything else is an uncaught exception, printed as
        # Python prints one, with the exit status 1 Python gives it.
        try:
            call()
            status = 0
        except FatalError as err:
            print(f"\nA fatal error occurred: {err}")
            status = 2
        except serial.SerialException as err:
            print(f"\nA serial exception error occurred: {err}")
            status = 1
        except StopIteration:
            print("\nA fatal error occurred: The chip stopped responding.")
            status = 2
        except SystemExit as exit:  # click's own (a usage error: status 2)
            status = exit.code if isinstance(exit.code, int) else 1
        except Exception:
            traceback.print_exc()
            status = 1
    if status != 0:
        # esptool closes its port in a teardown it registers once connected, stub running and
        # baud changed (esptool/__init__.py `prepare_esp_object`): a failure before that leaves
        # the port open, which a process's exit closes. Here the rig closes it, or the port (an
        # RFC2217 server takes one client, a local port is locked) stays taken.
        for port in opened:
            if port.is_open:
                port.close()
    return status, output.getvalue()


class _SerialSeenByEsptool:
    """pyserial as esptool's loader sees it once `watching()` has put this in place of its
    `serial` (esptool/loader.py opens every port with `serial.serial_for_url`): the same module,
    except that a port opened in a thread that is watching is noted. Only the calling thread's
    own ports are noted, so a failed run never closes a port another thread opened."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self._watching = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def serial_for_url(self, *args: Any, **kwargs: Any) -> Any:
        port = self._module.serial_for_url(*args, **kwargs)
        opened = getattr(self._watching, "ports", None)
        if opened is not None:
            opened.append(port)
        return port

    @classmethod
    @contextlib.contextmanager
    def watching(cls) -> Iterator[list[Any]]:
        """The ports esptool opens in this thread while the block runs."""
        import esptool.loader

        seen = esptool.loader.serial
        if not isinstance(seen, cls):
            seen = esptool.loader.serial = cls(seen)
        opened: list[Any] = []
        seen._watching.ports = opened
        try:
            yield opened
        finally:
            seen._watching.ports = None


if __name__ == "__main__":
    main()
