"""The rig's parts for manual work with a board: certificates kept on disk, and the update
server on its own.

A board trusts the CA compiled into its sketch for as long as it runs that sketch, so the CA
here lives in a folder and outlives every run: the first run makes `ca.pem` and `ca.key`,
every later one loads them and signs a fresh server certificate with them::

    rig certs --ip 192.168.1.5    # ca.pem/.key (kept), server.pem/.key, server-ip.pem/.key
    rig serve --firmware build/ota_https.ino.bin --firmware-version 0.2
    rig sign build/ota_https.ino.bin --version 0.2      # a signed release, for a sketch with a key
    rig serve --firmware ... --firmware-version 0.2 --drop-after 300000   # a download cut short

A sketch built with a signing key installs only signed releases (ota_rig.device.signing); its key pair
lives in a folder too (default out/signing: private.pem, public.pem), made on first use and kept,
because the board holds the public half for as long as it runs the sketch. `rig serve
--signing-key DIR` offers the firmware as a release signed with it.

`rig serve` prints what the sketch needs (the update URL and the CA, as the two lines of
ota_config.h they become), then one line for each connection the server records in
`server.jsonl`, until Ctrl-C or SIGTERM. The URL names the server by its DNS name (default
ota.local), so the board's network must resolve that name to the address the server listens
on; by default that is this machine's address on the default route, the interface a Wi-Fi
access point on the LAN is reached through.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import io
import ipaddress
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ota_rig.bench import network
from ota_rig.device.firmware import FirmwareFormatError, parse_image
from ota_rig.device.signing import PUBLIC_PEM, KeyPair, sign, statement
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.errors import CommandError
from ota_rig.server.app import UpdateServer
from ota_rig.server.faults import Fault
from ota_rig.server.pki import DEFAULT_HOST, ORGANIZATION, Authority, ServerCert, fingerprint, write_pem
from ota_rig.server.records import CLOSED, ConnectionRecord

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER = "server"  # server.pem / server.key: the certificate for the DNS name
SERVER_IP = "server-ip"  # server-ip.pem / server-ip.key: the one for an IP address
RECORD = "server.jsonl"
FIRMWARE_DIR = "firmware"
# The lines of ota_config.h that point a sketch at a server.
SKETCH_LINES = ("#define OTA_UPDATE_URL ", "#define OTA_CA_BUNDLE ")
POLL_SECONDS = 0.2  # how often the record is read for new connections


@dataclass(frozen=True)
class KeptCerts:
    """The certificates in a folder: the lasting CA (`ca_kept`: loaded, not made, this run)
    and the server certificates signed with it this run."""

    authority: Authority
    ca_kept: bool
    server: ServerCert
    server_ip: ServerCert | None

    def lines(self) -> list[str]:
        """One line per file: whether it was kept or written, its path, and for a
        certificate what it is for and its SHA-256 fingerprint."""
        ca_state = "kept" if self.ca_kept else "written"
        ca_fingerprint = fingerprint(x509.load_pem_x509_certificate(self.authority.pem.encode()))
        lines = [f"{ca_state:8} {self.authority.cert_pem}  CA  sha256 {ca_fingerprint}",
                 f"{ca_state:8} {self.authority.cert_pem.parent / CA_KEY}"]
        for cert in (self.server, self.server_ip):
            if cert is not None:
                lines += [f"written  {cert.cert_pem}  {cert.host}  sha256 {cert.fingerprint}",
                          f"written  {cert.key_pem}"]
        return lines


def write_certs(folder: Path, *, hostname: str | None, ip: str | None) -> int:
    """`rig certs`: keep or make the CA in `folder`, issue the server certificates, print the files."""
    for line in keep_certs(folder, hostname or DEFAULT_HOST, ip).lines():
        print(line)
    return 0


def keep_certs(folder: Path, hostname: str, ip: str | None = None) -> KeptCerts:
    """The CA in `folder` (made the first time) and, signed by it, a server certificate for
    `hostname` and, if `ip` is given, one for that address."""
    if ip is not None:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise CommandError(
                f"{ip!r} is not an IP address; pass --ip the server's address, such as 192.168.1.5"
            ) from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    authority, kept = _authority(folder)
    server_ip = _issue(folder, SERVER_IP, ip, authority) if ip else None
    return KeptCerts(authority, kept, _issue(folder, SERVER, hostname, authority), server_ip)


def _authority(folder: Path) -> tuple[Authority, bool]:
    """The CA in `folder`, and whether it was there already; a new one is written if not."""
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if cert_path.exists() != key_path.exists():
        present, missing = (cert_path, key_path) if cert_path.exists() else (key_path, cert_path)
        raise CommandError(
            f"{present} is there but {missing.name} is not; put it back, or remove {present.name} "
            "to make a new CA (boards flashed with the old one will then refuse the server)"
        )
    kept = cert_path.exists()
    if kept:
        ca = _load_ca(cert_path, key_path)
    else:
        ca = trustme.CA(organization_name=ORGANIZATION, organization_unit_name="manual CA")
        write_pem(cert_path, ca.cert_pem.bytes())
        write_pem(key_path, ca.private_key_pem.bytes(), private=True)
    return Authority("ca", cert_path, ca.cert_pem.bytes().decode("ascii"), ca), kept


def _load_ca(cert_path: Path, key_path: Path) -> trustme.CA:
    """The CA whose certificate and key are in these files, checked to belong together."""
    cert_bytes, key_bytes = cert_path.read_bytes(), key_path.read_bytes()
    try:
        matching = (
            x509.load_pem_x509_certificate(cert_bytes).public_key()
            == load_pem_private_key(key_bytes, password=None).public_key()
        )
    except (ValueError, TypeError) as err:  # TypeError: a key encrypted with a password
        raise CommandError(
            f"{cert_path} and {key_path.name} are not a readable PEM certificate and "
            f"unencrypted key ({err}); restore them, or remove both to make a new CA"
        ) from None
    if not matching:
        raise CommandError(
            f"{key_path} is not the key of {cert_path.name}; restore the pair, or remove both to make a new CA"
        )
    return trustme.CA.from_pem(cert_bytes, key_bytes)


def _issue(folder: Path, name: str, identity: str, authority: Authority) -> ServerCert:
    """A server certificate for `identity` (a DNS name or an IP address), signed by
    `authority`, written as `name`.pem and `name`.key."""
    leaf = authority.ca.issue_cert(identity, organization_name=ORGANIZATION, organization_unit_name=name)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    write_pem(cert_path, chain)
    write_pem(key_path, leaf.private_key_pem.bytes(), private=True)
    cert = x509.load_pem_x509_certificates(chain)[0]
    return ServerCert(
        name,
        (identity,),
        cert_path,
        key_path,
        authority,
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        fingerprint(cert),
    )


def serve(
    folder: Path,
    *,
    host: str | None,
    port: int,
    hostname: str | None,
    firmware: Path | None,
    firmware_version: str | None,
    signing_key: Path | None = None,
    fault: int | None = None,
    stall_after: int | None = None,
    drop_after: int | None = None,
    rate: float | None = None,
) -> int:
    """`rig serve`: the update server on `port` with the certificates of `folder`, offering
    `firmware` as `firmware_version` if given (as a release signed with the key pair in
    `signing_key`, if given), until SIGINT or SIGTERM. `fault` (a status to answer instead of
    200), `stall_after`, `drop_after` and `rate` make /update hand the offer out as a broken
    server or a slow link would (ota_rig.server.faults.Fault)."""
    offered = _offered_image(firmware, firmware_version)
    faults = served_faults(offered is not None, status=fault, stall_after=stall_after, drop_after=drop_after,
                           rate=rate)
    keys = None if signing_key is None else KeyPair.load_or_create(signing_key)
    if keys is not None and offered is not None:
        version, image = offered
        offered = version, sign(image, version, keys)
    if not 0 <= port <= 65535:
        raise CommandError(f"port {port} is not a TCP port; pass --port 0..65535 (0: a free one)")
    address = host or _default_address()
    folder = Path(folder)
    certs = keep_certs(folder, hostname or DEFAULT_HOST)
    server = UpdateServer(firmware_dir=folder / FIRMWARE_DIR, record_path=folder / RECORD, host=address)
    try:
        server.add_listener(SERVER, certs.server, port)
    except OSError as err:
        _explain_listen_error(err, address, port)
        raise
    if offered is not None:
        server.offer(*offered, rate=rate, fault=faults)
    server.firmware_dir.mkdir(exist_ok=True)
    server.record_path.touch()
    with server.record_path.open(encoding="utf-8") as record:
        record.seek(0, io.SEEK_END)  # earlier runs' connections are in the record already
        stop = threading.Event()
        previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.start()
            _print_banner(server, certs, host is None, firmware, firmware_version, keys, fault_words(faults, rate))
            while not stop.wait(POLL_SECONDS):  # a bare wait() can sleep through the signal handler
                _print_new_connections(record)
        finally:
            server.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        _print_new_connections(record)  # the connections the stop closed
    print("stopped", flush=True)
    return 0


def served_faults(offering: bool, *, status: int | None, stall_after: int | None, drop_after: int | None,
                  rate: float | None) -> Fault:
    """The Fault `rig serve --status/--stall-after/--drop-after` asks for, checked; `rate` is
    checked too (it is the offer's, not the fault's). They shape the answer to a device that
    gets the image, so they need one on offer."""
    if (status, stall_after, drop_after, rate) == (None, None, None, None):
        return Fault()
    if not offering:
        raise CommandError("--status, --stall-after, --drop-after and --rate shape the image /update hands out; "
                           "pass --firmware and --firmware-version too")
    if status is not None and not 100 <= status <= 599:
        raise CommandError(f"--status {status} is not an HTTP status; pass 100..599, such as 404 or 500")
    for name, count in (("--stall-after", stall_after), ("--drop-after", drop_after)):
        if count is not None and count < 0:
            raise CommandError(f"{name} {count} is not a number of bytes; pass 0 or more")
    if rate is not None and not rate > 0:
        raise CommandError(f"--rate {rate:g} is not a rate; pass bytes per second above 0, such as 20000")
    if stall_after is not None and drop_after is not None:
        raise CommandError("a download is either stalled or dropped, not both; pass --stall-after or --drop-after")
    if status is not None and (stall_after, drop_after, rate) != (None, None, None):
        raise CommandError("--status answers with no body, so there is nothing to stall, drop or slow down; "
                           "pass --status alone")
    return Fault(status=status, stall_after=stall_after, drop_after=drop_after)


def fault_words(fault: Fault, rate: float | None) -> str:
    """How /update misbehaves, in a few words for the banner."""
    words = [f"answers {fault.status} with no body" if fault.status is not None else "",
             f"image at {rate:g} bytes/s" if rate else "",
             f"stalls after {fault.stall_after} bytes" if fault.stall_after is not None else "",
             f"drops the connection after {fault.drop_after} bytes" if fault.drop_after is not None else ""]
    return ", ".join(word for word in words if word)


def _offered_image(path: Path | None, version: str | None) -> tuple[str, bytes] | None:
    """The version and the bytes of the app image to offer, checked, or None when nothing is offered."""
    if path is None:
        if version:
            raise CommandError(
                "--firmware-version names the version of --firmware; pass --firmware with the app image too"
            )
        return None
    if not version:
        raise CommandError(
            f"{path} needs a version to compare with the board's x-ESP32-version; pass --firmware-version too"
        )
    return version, _read_app(path, "pass --firmware the app image (<sketch>.ino.bin) a build wrote")


def _read_app(path: Path, fix: str) -> bytes:
    """The bytes of the ESP32 app image at `path`, checked; `fix` says what to pass instead."""
    if not path.is_file():
        raise CommandError(f"{path}: no such file; {fix}")
    data = path.read_bytes()
    try:
        image = parse_image(data)
    except FirmwareFormatError as err:
        raise CommandError(
            f"{path} is not an ESP32 app image ({err}); pass the app's "
            "<sketch>.ino.bin, not a merged, bootloader or ELF file"
        ) from None
    if image.descriptor is None:
        raise CommandError(
            f"{path} is an ESP32 image without an app descriptor (a bootloader?); pass the app's <sketch>.ino.bin"
        )
    return data


def _default_address() -> str:
    """This machine's address on the default route. With none there is no address a board
    could reach, and listening on loopback would only hide that, so it is an error."""
    try:
        return network.host_address(None)
    except network.NetworkError:
        raise CommandError(
            "this machine has no default route, so no address a board could reach; "
            "pass --host with its address on the board's network (or 127.0.0.1 to try it locally)"
        ) from None


def _explain_listen_error(err: OSError, address: str, port: int) -> None:
    """Raise what to tell the user when the server cannot listen on `address`:`port` for a
    reason the user can fix; other errors are left to the caller."""
    if err.errno == errno.EADDRINUSE:
        raise CommandError(
            f"port {port} on {address} is in use; pass --port 0 for a free one or stop the other server"
        ) from None
    if err.errno in (errno.EADDRNOTAVAIL, socket.EAI_NONAME):
        raise CommandError(f"{address} is not an address of this machine; pass --host one of its addresses") from None


def _print_banner(
    server: UpdateServer,
    certs: KeptCerts,
    address_chosen: bool,
    image: Path | None,
    version: str | None,
    keys: KeyPair | None,
    faults: str = "",
) -> None:
    """What the user needs to point a sketch at the server, in the order it is needed."""
    url = server.url(SERVER)
    address, port = server.host, server.listeners[SERVER].port
    how = " (this machine's address on the default route; --host picks another)" if address_chosen else ""
    target = "one of this machine's addresses" if address in ("0.0.0.0", "::") else address
    ca_state = "kept from an earlier run" if certs.ca_kept else "new"
    print(url)
    print(f"listening on {address}:{port}{how}")
    print(f"{certs.server.host} must resolve to {target} on the board's network")
    signed = " signed with the key below" if keys else ""
    print(f"offering {image} as version {version}{signed}" if image else "offering no firmware: /update answers 304")
    if faults:
        print(f"faults of /update: {faults}")
    print(f"files in {server.firmware_dir} are served at {url.removesuffix('/update')}/firmware/<name>.bin")
    print(f"CA certificate ({certs.authority.cert_pem}, {ca_state}):")
    print(certs.authority.pem, end="")
    print("for the sketch's ota_config.h:")
    print("\n".join(sketch_lines(url, certs.authority.pem, keys.public_pem if keys else "")))
    print(f"record: {server.record_path} (one JSON line per connection)")
    print("Ctrl-C stops it", flush=True)


def sketch_lines(url: str, ca_bundle: str, signing_key: str = "") -> list[str]:
    """The #define lines of ota_config.h for this URL, CA bundle and signing key (if any),
    rendered by SketchConfig.header() itself so that they always match what a build writes."""
    header = SketchConfig(version="", update_url=url, ca_bundle=ca_bundle, signing_key=signing_key).header()
    wanted = SKETCH_LINES + (("#define OTA_SIGNING_KEY ",) if signing_key else ())
    return [line for line in header.splitlines() if line.startswith(wanted)]


def sign_release(app: Path, version: str, key_folder: Path, out: Path | None) -> int:
    """`rig sign`: write `app` as a release signed with the key pair in `key_folder` (made there
    first if it holds none), and print what a board and a server need."""
    image = _read_app(app, "pass the app image (<sketch>.ino.bin) a build wrote")
    try:
        statement(image, version)
    except ValueError as err:
        raise CommandError(f"{err}; pass --version the firmware version the app was built as") from None
    release = sign(image, version, KeyPair.load_or_create(key_folder))
    out = out or app.with_name(app.name.removesuffix(".bin") + ".signed.bin")
    out.write_bytes(release)
    print(out)
    print(f"release {version}: {len(image)} bytes of app image, SHA-256 {hashlib.sha256(image).hexdigest()}")
    print(f"signed with {key_folder / PUBLIC_PEM}; for the sketch's ota_config.h:")
    public = (key_folder / PUBLIC_PEM).read_text()
    print(*(line for line in sketch_lines("", "", public) if line.startswith("#define OTA_SIGNING_KEY ")))
    return 0


def _print_new_connections(record: TextIO) -> None:
    """Print a line for each connection the record gained since the last call. A line not
    yet ended by its newline is left for the next call."""
    while True:
        start = record.tell()
        line = record.readline()
        if not line.endswith("\n"):
            record.seek(start)
            return
        print(connection_line(ConnectionRecord.from_json(line)), flush=True)


def connection_line(connection: ConnectionRecord) -> str:
    """One connection in a line: local time, client address, TLS outcome, each request with
    its status and the body bytes sent; e.g. `12:03:04 192.168.1.20 TLS ok TLSv1.2 GET
    /update 200 1310720 bytes`."""
    when = datetime.datetime.fromisoformat(connection.start).astimezone().strftime("%H:%M:%S")
    parts = [when, connection.peer.rsplit(":", 1)[0].strip("[]")]
    tls = connection.tls  # every record has its TLS outcome, a shutdown mid-handshake included
    if tls is None:
        raise ValueError(f"the record of a connection from {connection.peer} has no TLS outcome")
    if not tls.ok:
        parts.append(f"TLS refused: alert {tls.alert}" if tls.alert else f"TLS failed: {tls.error}")
    else:
        parts.append(f"TLS ok {tls.version}")
        for request in connection.requests:
            incomplete = "" if request.complete else " (incomplete)"
            parts.append(f"{request.method} {request.path} {request.status} {request.bytes_sent} bytes{incomplete}")
        if connection.error:
            parts.append(connection.error)
        elif not connection.requests:
            parts.append("no request")
    if connection.ended != CLOSED:
        parts.append(f"({connection.ended})")
    return " ".join(parts)
