"""The `rig` command: the rig's jobs from a terminal or a CI script.

    rig run [--ota-board B] [--ota-profile P] [-k EXPR]   the OTA scenarios, with a report
    rig serve                                     the update server alone, for work with a board
    rig certs                                     a CA and server certificates on disk
    rig sign APP --version V                      a signed release of an app image
    rig virtual --flash F --pty LINK              a virtual ESP32
    rig build --url U --ca F --version V          the sketch's image for a server, for the twin
    rig fleet URL --devices N                     N twins updating at once from a server
    rig report RESULTS                            report.html and junit.xml again from results.json
    rig compare OLD NEW                           what got worse between two runs
    rig check-server URL --ca B --version V       what each ESP32 core does against an update server

A failure is one sentence saying what is wrong and what to do about it; `--debug` adds the
traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from ota_rig import __version__
from ota_rig.cli import check_server
from ota_rig.device.profiles import DEFAULT as DEFAULT_PROFILE
from ota_rig.device.profiles import PROFILES
from ota_rig.errors import RigError
from ota_rig.pytest_plugin.options import add_bench_options, hostname
from ota_rig.reporting.compare import MIN_SECONDS, THRESHOLD, compare


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    words = [word for word in argv if not word.startswith("-")]
    if words[:1] == ["virtual"]:  # the twin's own options, untouched (ota_rig.virtual's parser)
        at = argv.index("virtual")
        args = parser.parse_args([*argv[:at], "virtual"])
        args.twin_args = argv[at + 1:]
    else:
        args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("rig: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # every failure becomes one sentence
        if args.debug:
            traceback.print_exc()
        print(f"rig: {one_sentence(error)}", file=sys.stderr)
        return 2


def one_sentence(error: BaseException) -> str:
    """The sentence a user reads for `error`: the rig's own errors say what to fix; anything
    else is named and points at --debug."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, RigError):
        return text or type(error).__name__
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"{error.filename}: no such file; check the path"
    if isinstance(error, OSError):
        return f"{text}; check the path, port or permission it names"
    return f"unexpected {type(error).__name__}: {text} (run again with --debug for the traceback)"


class Parser(argparse.ArgumentParser):
    """argparse, saying a mistake in one line as the rest of `rig` does."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"rig: {message}; see `{self.prog} --help`\n")


def count(text: str) -> int:
    """A number of things at once: 1 or more (an argparse type)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count; pass 1 or more")
    return int(text)


def folder(text: str) -> Path:
    """A folder to write into, made if missing (an argparse type)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; pass a folder (it is made if missing)")
    return path


def new_file(text: str) -> Path:
    """A file to write, in a folder that exists (an argparse type)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; pass a file name")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(
            f"{path.parent} is no folder; make it first, or pass a file in a folder that is there"
        )
    return path


def add_fault_options(serve: argparse.ArgumentParser) -> None:
    """`rig serve`'s faults: how /update hands out --firmware wrong, to stage them on a board."""
    faults = serve.add_argument_group("faults of /update (with --firmware)")
    faults.add_argument("--rate", type=float, metavar="BYTES_PER_S", help="send the image at this rate, a slow link")
    faults.add_argument("--stall-after", type=int, metavar="BYTES", help="send this many bytes, then nothing more")
    faults.add_argument("--drop-after", type=int, metavar="BYTES",
                        help="send this many bytes, then drop the connection (a server crash, a power cut)")
    faults.add_argument("--status", type=int, metavar="CODE", help="answer this status with no body instead of 200")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rig", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"rig {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the OTA scenarios (ota_rig/scenarios) and write the report",
        description="Run the OTA scenarios on a board and write results.json, junit.xml "
        "and report.html. Every option but --out, --jobs and --compare-to is "
        "the pytest plugin's option of the same name, passed on.",
    )
    run.add_argument(
        "--ota-board",
        "--board",
        dest="board",
        default="virtual",
        help="virtual (default), virtual-rfc2217, a port, mac:<MAC>, rfc2217://host:port "
        "(comma-separated: several, with --jobs), labgrid:PLACE[,...] or labgrid:TAG=VALUE[,...]",
    )
    run.add_argument(
        "--ota-profile",
        "--profile",
        dest="profile",
        choices=sorted(PROFILES),
        help="only this device profile (default: each profile a scenario depends on)",
    )
    run.add_argument("-k", dest="keyword", help="only the scenarios matching this pytest expression")
    run.add_argument(
        "--out", type=folder, default=Path("out/runs"), help="where the run's folder goes (default out/runs)"
    )
    run.add_argument(
        "--jobs",
        "-j",
        type=count,
        default=None,
        help="scenarios at once on virtual boards (default 4); on real boards one per board (default 1)",
    )
    run.add_argument(
        "--compare-to",
        type=Path,
        metavar="RESULTS",
        help="an earlier results.json: say what got worse, and fail if anything did",
    )
    forwarded: list[str] = []

    # `settings` are add_argument's own keywords (default, choices, type, help, metavar), each
    # of its own type: Any, as add_argument's stub takes them one by one.
    def forward(flag: str, **settings: Any) -> None:  # only what is given goes to pytest
        forwarded.append(flag)
        run.add_argument(flag, **{**settings, "default": argparse.SUPPRESS})

    add_bench_options(forward)
    run.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARG", help="passed on to pytest after --")
    run.set_defaults(handler=_run, forwarded=forwarded)

    serve = commands.add_parser("serve", help="the HTTPS update server alone, for manual work with a board")
    serve.add_argument(
        "--folder",
        type=folder,
        default=Path("out/serve"),
        help="its certificates, firmware folder and record (default out/serve; kept between runs)",
    )
    serve.add_argument(
        "--host", default=None, help="address to listen on (default: this machine's address on the default route)"
    )
    serve.add_argument("--port", type=int, default=8443, help="port (default 8443)")
    serve.add_argument(
        "--hostname", type=hostname, default=None, help="the DNS name in the certificate and URL (default ota.local)"
    )
    serve.add_argument("--firmware", type=Path, help="an app image (.bin) to offer on /update")
    serve.add_argument("--firmware-version", help="the version --firmware is (compared with x-ESP32-version)")
    serve.add_argument(
        "--signing-key",
        type=folder,
        metavar="DIR",
        help="offer --firmware as a release signed with the key pair in DIR (made there if none), "
        "for a sketch built with its public half",
    )
    add_fault_options(serve)
    serve.set_defaults(handler=_serve)

    sign = commands.add_parser("sign", help="write an app image as a signed release (for a sketch built with a key)")
    sign.add_argument("app", type=Path, help="the app image (<sketch>.ino.bin)")
    sign.add_argument(
        "--version", required=True, help="the firmware version the app was built as (OTA_FIRMWARE_VERSION)"
    )
    sign.add_argument(
        "--key",
        type=folder,
        default=Path("out/signing"),
        help="folder of the key pair (private.pem, public.pem; made there if none; default out/signing)",
    )
    sign.add_argument("--out", type=new_file, help="where the release goes (default: beside APP, as <name>.signed.bin)")
    sign.set_defaults(handler=_sign)

    certs = commands.add_parser("certs", help="write a CA and a server certificate for manual work")
    certs.add_argument(
        "--out", type=folder, default=Path("out/serve"), help="folder (default out/serve; an existing CA is kept)"
    )
    certs.add_argument(
        "--hostname", type=hostname, default=None, help="DNS name of the server certificate (default ota.local)"
    )
    certs.add_argument("--ip", default=None, help="also an IP-address certificate for this address")
    certs.set_defaults(handler=_certs)

    build = commands.add_parser("build", help="build the reference sketch for an update server, for the twin")
    build.add_argument("--url", required=True, help="the update URL the device asks (https://host[:port]/path)")
    build.add_argument("--ca", type=Path, required=True, help="PEM file of the CA certificate(s) the device trusts")
    build.add_argument("--version", required=True, help="the firmware version it is built as (x-ESP32-version)")
    build.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE, help="the core it is built for")
    build.add_argument("--no-date-check", dest="check_dates", action="store_false",
                       help="build without the sketch's certificate date check (as the stock core: dates unchecked)")
    build.add_argument("--out", type=folder, default=Path("out/build"), help="where builds go (default out/build)")
    build.add_argument("--flash", metavar="PORT", help="then write it with esptool through PORT (a twin's pty link)")
    build.set_defaults(handler=_build)

    fleet = commands.add_parser("fleet", help="N twins check and update at once against a server, with a report")
    fleet.add_argument("url", help="the update URL the devices ask (a server on this machine: twins resolve any name "
                       "to 127.0.0.1)")
    fleet.add_argument("--devices", type=count, default=20, help="twins at once (default 20, at most 100)")
    fleet.add_argument("--ca", type=Path, default=Path("out/serve/ca.pem"),
                       help="PEM file of the CA(s) the devices trust (default out/serve/ca.pem, rig serve's)")
    fleet.add_argument("--version", default="0.1", help="the version the devices run (default 0.1)")
    fleet.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE, help="the core they run")
    fleet.add_argument("--no-date-check", dest="check_dates", action="store_false",
                       help="build without the sketch's certificate date check (the stock core's behaviour)")
    fleet.add_argument("--timeout", type=float, default=120.0, help="seconds the fleet gets (default 120)")
    fleet.add_argument("--out", type=folder, default=Path("out/fleet"), help="its folder goes here (default out/fleet)")
    fleet.add_argument("--json", type=new_file, help="also write the result here (always: fleet.json in its folder)")
    fleet.set_defaults(handler=_fleet)

    virtual = commands.add_parser(
        "virtual", help="start a virtual ESP32 (`rig virtual --help` for its options)", add_help=False
    )
    virtual.set_defaults(handler=_virtual, twin_args=[])

    report = commands.add_parser("report", help="write report.html and junit.xml from a results.json")
    report.add_argument("results", type=Path, help="a run's results.json (or its folder)")
    report.add_argument("--out", type=folder, help="folder for the two files (default: beside results.json)")
    report.set_defaults(handler=_report)

    compare = commands.add_parser("compare", help="verdict flips and slower steps between two runs")
    compare.add_argument("old", type=Path, help="the earlier results.json (or its run folder)")
    compare.add_argument("new", type=Path, help="the later results.json (or its run folder)")
    compare.add_argument(
        "--threshold",
        type=float,
        default=THRESHOLD,
        help=f"a duration is a regression when it grows by this factor or more (default {THRESHOLD:g})",
    )
    compare.add_argument(
        "--min-seconds",
        type=float,
        default=MIN_SECONDS,
        help=f"... and by at least this many seconds (default {MIN_SECONDS:g})",
    )
    compare.add_argument(
        "--markdown", type=new_file, metavar="FILE", help="also write the comparison as markdown to FILE"
    )
    compare.set_defaults(handler=_compare)

    check_server.add_parser(commands, new_file)
    return parser


def _run(args: argparse.Namespace) -> int:
    from ota_rig.cli.run import run

    return run(args)


def _serve(args: argparse.Namespace) -> int:
    from ota_rig.cli.manual import serve

    return serve(
        args.folder,
        host=args.host,
        port=args.port,
        hostname=args.hostname,
        firmware=args.firmware,
        firmware_version=args.firmware_version,
        signing_key=args.signing_key,
        fault=args.status, stall_after=args.stall_after, drop_after=args.drop_after, rate=args.rate,
    )


def _build(args: argparse.Namespace) -> int:
    from ota_rig.cli.build import build

    return build(args.url, args.ca, args.version, args.profile, args.out, args.check_dates, args.flash)


def _fleet(args: argparse.Namespace) -> int:
    from ota_rig.cli.fleet import fleet

    return fleet(args.url, args.devices, args.ca, args.version, args.profile, args.check_dates, args.timeout,
                 args.out, args.json)


def _sign(args: argparse.Namespace) -> int:
    from ota_rig.cli.manual import sign_release

    return sign_release(args.app, args.version, args.key, args.out)


def _certs(args: argparse.Namespace) -> int:
    from ota_rig.cli.manual import write_certs

    return write_certs(args.out, hostname=args.hostname, ip=args.ip)


def _virtual(args: argparse.Namespace) -> int:
    from ota_rig.virtual.__main__ import main as twin

    return twin(args.twin_args)


def _report(args: argparse.Namespace) -> int:
    from ota_rig.records.results import load, write_reports

    results_path, results = load(args.results)
    for path in write_reports(results, args.out or results_path.parent, results_path.parent):
        print(path)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ota_rig.records.results import load

    _, old = load(args.old)
    _, new = load(args.new)
    comparison = compare(old, new, threshold=args.threshold, min_seconds=args.min_seconds)
    print(comparison.text())
    if args.markdown:
        args.markdown.write_text(comparison.markdown())
    return 1 if comparison.regressed else 0
