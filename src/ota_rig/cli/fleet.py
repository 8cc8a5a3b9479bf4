"""`rig fleet URL --devices N`: a fleet of twins updating at once from one server (ota_rig.scenario.fleet),
printed as a table and written as JSON.

    rig fleet https://ota.local:8443/update --devices 20 --ca out/serve/ca.pem --version 0.1

Exit status 0 when every device updated, 1 when any did not (the table says why).
"""

from __future__ import annotations

import datetime
from pathlib import Path

from ota_rig.cli.build import ca_bundle, checked_url
from ota_rig.errors import CommandError
from ota_rig.scenario.fleet import FleetPlan, rehearse, write_json


def fleet(url: str, devices: int, ca: Path, version: str, profile: str, check_dates: bool, timeout: float,
          out: Path, json_path: Path | None) -> int:
    try:
        plan = FleetPlan(checked_url(url), ca_bundle(ca), version, devices, profile, check_dates, timeout)
    except ValueError as err:
        raise CommandError(f"{err}; pass --devices 1 or more and --timeout in seconds") from None
    folder = Path(out) / datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    print(f"fleet of {devices} twins at {version} against {url}; their logs in {folder}", flush=True)
    result = rehearse(plan, folder)
    print(result.table())
    path = json_path or folder / "fleet.json"
    write_json(result, path)
    print(f"fleet.json: {path}")
    return 0 if len(result.updated) == devices else 1
