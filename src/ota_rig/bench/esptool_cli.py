"""esptool's own command line, with pyserial's RFC2217 client at line speed.

    python -m ota_rig.bench.esptool_cli ARGS...

is `python -m esptool ARGS...`: the same arguments, esptool's own `__main__` run as `-m esptool`
runs it (so its program name, output and exit status are esptool's), after
`ota_rig.bench.rfc2217_fix.apply()` has fixed the installed pyserial where it renegotiates the
line on every timeout change (a no-op where it does not). The rig runs every esptool command
this way (ota_rig.bench.flash.Esptool), so an rfc2217:// port costs esptool what a local one does.
"""

from __future__ import annotations

import runpy

from ota_rig.bench import rfc2217_fix


def main() -> None:
    rfc2217_fix.apply()
    runpy.run_module("esptool", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
