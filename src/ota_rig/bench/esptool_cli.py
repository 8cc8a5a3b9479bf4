"""esptool's own command line, with pyserial's RFC2217 client at line speed, as a process or
in this one.

    python -m ota_rig.bench.esptool_cli ARGS...

is `python -m esptool ARGS...`: the same arguments, esptool's own `__main__` run as `-m esptool`
runs it (so its program name, output and exit status are esptool's), after
`ota_rig.bench.rfc2217_fix.apply()` has fixed the installed pyserial where it renegotiates the
line on every timeout change (a no-op where it does not). So an rfc2217:// port costs esptool
what a local one does.

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

import gc
import io
import runpy
import traceback
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from ota_rig.bench import rfc2217_fix


def main() -> None:
    rfc2217_fix.apply()
    runpy.run_module("esptool", run_name="__main__", alter_sys=True)


def in_process(argv: list[str], esp: Any = None) -> tuple[int, str]:
    """Run esptool's command line `argv` in this process: (exit status, everything it printed).

    `esp` is a connected `esptool.loader.ESPLoader` to run the command on instead of connecting
    (it stays open: its owner closes it)."""
    import esptool  # imported on first use: a rig that runs esptool as a process never loads it

    return captured(lambda: esptool.main(argv, esp=esp))


def captured(call: Callable[[], object]) -> tuple[int, str]:
    """Call esptool code in this process as its CLI would run it: (exit status, everything it
    printed, stdout and stderr). Ctrl-C is not caught: it stops the rig as it stops esptool."""
    import serial
    from esptool.util import FatalError

    rfc2217_fix.apply()
    already_open = {id(port) for port in _open_ports(serial.SerialBase)}
    output = io.StringIO()
    with redirect_stdout(output), redirect_stderr(output):
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
        for port in _open_ports(serial.SerialBase):
            if id(port) not in already_open:
                port.close()
    return status, output.getvalue()


def _open_ports(kind: type) -> list[Any]:
    gc.collect()
    return [thing for thing in gc.get_objects() if isinstance(thing, kind) and getattr(thing, "is_open", False)]


if __name__ == "__main__":
    main()
