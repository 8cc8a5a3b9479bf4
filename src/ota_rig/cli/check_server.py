"""`rig check-server URL`: each device profile's update check against any update server, with
the probes a release needs (ota_rig.check), as a table, a JSON file and markdown."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ota_rig.device.profiles import PROFILES
from ota_rig.errors import RigError
from ota_rig.virtual.chip import DEFAULT_MAC, parse_mac

EXPIRY_DAYS = 30


def add_parser(commands: Any, new_file: Any) -> None:
    """The subcommand, on the `rig` parser's subcommands (`new_file`: the CLI's file type)."""
    check = commands.add_parser(
        "check-server", help="what each ESP32 core would do against an update server (no board needed)",
        description="Run each device profile's update check (the twin's TLS client and HTTPUpdate, in this "
        "process) against URL, probe the server for the faults that strand devices, and report per profile. "
        "Only GET requests reach the server. Exit status 1 when a finding keeps a device from updating.")
    check.add_argument("url", help="the update URL the devices use (https://host[:port]/path)")
    check.add_argument("--ca", type=Path, required=True, metavar="BUNDLE",
                       help="the CA bundle (PEM) the devices trust, as the sketch's setCACert() gets it")
    check.add_argument("--version", required=True, help="the firmware version the devices run (x-ESP32-version)")
    check.add_argument("--mac", type=_mac, default=DEFAULT_MAC,
                       help=f"the devices' factory MAC (default {DEFAULT_MAC})")
    check.add_argument("--profile", action="append", choices=sorted(PROFILES), dest="profiles",
                       help="only this profile (again for more; default: every profile)")
    check.add_argument("--offered-version", help="the version of the image the server offers, to probe for an update "
                       "loop (read from the image when it is a virtual build of the reference sketch)")
    check.add_argument("--address", help="connect to this IP address instead of resolving the URL's host (the host "
                       "still goes in SNI, Host and the certificate check)")
    check.add_argument("--date-check", action="store_true",
                       help="devices run the reference sketch's own certificate date check (stock sketches do not)")
    check.add_argument("--expiry-days", type=int, default=EXPIRY_DAYS,
                       help=f"warn when the certificate expires within this many days (default {EXPIRY_DAYS})")
    check.add_argument("--json", type=new_file, metavar="FILE", help="also write the run as JSON to FILE")
    check.add_argument("--markdown", type=new_file, metavar="FILE",
                       help="also write it as markdown (a pull-request comment) to FILE")
    check.add_argument("--strict", action="store_true", help="exit 1 on warnings too (an update loop, a certificate "
                       "near its end, no x-MD5)")
    check.set_defaults(handler=run)


def _mac(text: str) -> str:
    try:
        parse_mac(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def run(args: argparse.Namespace) -> int:
    from ota_rig.check import findings, report
    from ota_rig.check.server_check import check_server

    try:
        ca_bundle = args.ca.read_text()
    except UnicodeDecodeError:
        raise RigError(f"{args.ca} is not a PEM text file; pass the CA bundle the devices trust") from None
    result = check_server(args.url, ca_bundle, args.version, profile_names=args.profiles or list(PROFILES),
                          mac=args.mac, address=args.address, offered_version=args.offered_version,
                          date_check=args.date_check)
    found = findings.findings(result, args.expiry_days)
    print(report.text(result, found))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(result, found, args.expiry_days), indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(report.markdown(result, found))
    failing = {findings.BLOCKS, findings.WARNING} if args.strict else {findings.BLOCKS}
    return 1 if any(finding.severity in failing for finding in found) else 0
