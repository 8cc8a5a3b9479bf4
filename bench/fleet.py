"""The update server under a fleet: N devices polling at once, each a full TLS 1.2 handshake and
a 1.3 MB download, against the rig's UpdateServer, nginx and an Express server like the seed
tutorial's.

    python bench/fleet.py [--clients 200] [--downloads 2000] [--rounds 3] [--before main]

Every server presents the same certificate (a Pki ECDSA P-256 leaf for ota.local) and serves
the same `--size` bytes on GET /update with an x-MD5. The load generator (`--loadgen c`, the
default) is bench/loadgen.c, built here with cc and OpenSSL (libssl-dev): `--clients` clients
at once on epoll, each one after the other opening a new TCP connection, a full TLS 1.2
handshake (a new SSL object, no session cache, no ticket: a resumed handshake counts as a
failure), checking the certificate as a device does, with the one cipher `--cipher` offered,
so every server negotiates the same; then the request arduino-esp32 2.0's HTTPUpdate sends
(HTTP/1.0, its headers: STOCK_HEADERS of scenarios/evidence.py, a version older than the
offer), reading the whole body. A download counts once its last byte is in; anything else (an
error, a short body, not 200, over 60 s) is a failure. Latency is from the connect to the last
byte. `--loadgen python` does the same from this process with asyncio and Python's ssl (used
when there is no C compiler); it takes a core's worth of CPU at about 200 downloads/s, so
then the figures are the client's ceiling more than the servers'.

With 2 cores or more, the servers run on the first core and the load generator on the second
(sched_setaffinity), and nginx has one worker, so each server has one core. The servers
take turns, `--downloads` downloads a turn, in a rotated order each round; a server's
figures are the medians of its rounds: downloads/s, p50 and p99 latency, failures (summed),
the server's CPU time per download (its processes, from /proc) and the load generator's CPU
share (well under 100 %: the server is the bottleneck). Then the ratios issue 19 sets goals
for: the rig's downloads/s over nginx's (goal at least 0.8) and over Express's (at least 2),
its p99 over nginx's (at most 1.5), and its CPU per download over nginx's. The machine's load
average is printed before and after: on a shared machine the CPU per download is the figure
least disturbed.

Servers: `rig` is this checkout's UpdateServer, in a process of its own; `--before REV` adds
`rig@REV`, the same from `git archive REV` (the server as it was, in the same run). `nginx` is
Debian's nginx with a temporary configuration (one worker, as an unprivileged user when run as
root, no session cache, no tickets, backlog 1024). `express` is bench/express/server.js on
Node (`npm install` in bench/express first). A server whose program is missing is skipped
with one line saying so.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import pwd
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parents[1]
OFFERED, DEVICE = "0.3", "0.2"  # the seed tutorial's LAST_VERSION, and an older device
HEADERS = [  # arduino-esp32 2.0's HTTPUpdate, in its order (scenarios/evidence.py STOCK_HEADERS)
    ("Host", "ota.local"),
    ("User-Agent", "ESP32-http-Update"),
    ("Connection", "close"),
    ("Cache-Control", "no-cache"),
    ("x-ESP32-STA-MAC", "24:6F:28:AA:BB:CC"),
    ("x-ESP32-AP-MAC", "24:6F:28:AA:BB:CD"),
    ("x-ESP32-free-space", "1310720"),
    ("x-ESP32-sketch-size", "912345"),
    ("x-ESP32-sketch-md5", "0123456789abcdef0123456789abcdef"),
    ("x-ESP32-sketch-sha256", "00" * 32),
    ("x-ESP32-chip-size", "4194304"),
    ("x-ESP32-sdk-version", "v4.4.6"),
    ("x-ESP32-mode", "sketch"),
    ("x-ESP32-version", DEVICE),
]
REQUEST = ("\r\n".join(["GET /update HTTP/1.0", *(f"{k}: {v}" for k, v in HEADERS)]) + "\r\n\r\n").encode()
TIMEOUT = 60.0


# The rig's server in a process of its own: `fleet.py serve-rig SRC ...` (SRC: a tree's src/).

def serve_rig(src: str, cert_pem: str, key_pem: str, image: str, folder: str) -> None:
    sys.path.insert(0, src)
    from ota_rig.server.app import UpdateServer  # this tree's or the old one's

    # what the server reads of a ServerCert, so that an old tree's server takes it too
    cert = SimpleNamespace(name="fleet", identities=("ota.local",), host="ota.local",
                           cert_pem=Path(cert_pem), key_pem=Path(key_pem))
    with UpdateServer(Path(folder), Path(folder) / "rig.jsonl") as server:
        listener = server.add_listener("main", cert)  # type: ignore[arg-type]
        server.offer(OFFERED, Path(image))
        print(f"listening on {listener.port}", flush=True)
        sys.stdin.read()  # until the benchmark closes it


# Servers.

@dataclass
class Server:
    name: str
    command: list[str]
    port: int | None = None  # None: the server prints "listening on PORT"
    cwd: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, folder: Path, core: int | None) -> None:
        def pin() -> None:
            if core is not None:
                os.sched_setaffinity(0, {core})

        log = (folder / f"{self.name.replace('@', '-')}.out").open("w")
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                        cwd=self.cwd, preexec_fn=pin, text=True)
        if self.port is None:
            assert self.process.stdout is not None
            line = self.process.stdout.readline()
            if not line.startswith("listening on "):
                raise RuntimeError(f"{self.name} did not start: {line!r}, see {log.name}")
            self.port = int(line.split()[-1])
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} is not listening on {self.port}, see {log.name}") from None
                time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """User and system time of the server's processes (a master and its workers)."""
        assert self.process is not None
        total, pids = 0.0, [self.process.pid]
        while pids:
            pid = pids.pop()
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pids += [int(child) for child in (task / "children").read_text().split()]
            except FileNotFoundError:
                pass
        return total

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nginx_server(folder: Path, cert: Path, key: Path, image: Path, md5: str) -> Server | str:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        return "nginx is not installed (Debian: apt-get install nginx-light): skipped."
    port = free_port()
    root = folder / "nginx"
    root.mkdir()
    user = ""
    if os.geteuid() == 0:  # the master binds and reads the key; the worker runs unprivileged
        user = "user nobody nogroup;" if _exists_group("nogroup") else "user nobody;"
        for path in (folder, image.parent):
            path.chmod(0o755)
        image.chmod(0o644)
        shutil.chown(root, pwd.getpwnam("nobody").pw_uid)
    config = root / "nginx.conf"
    config.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body; proxy_temp_path {root}/proxy; fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl backlog=1024;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        location = /update {{
            alias {image};
            default_type application/octet-stream;
            add_header x-MD5 {md5};
        }}
    }}
}}
""")
    return Server("nginx", [nginx, "-p", str(root), "-e", str(root / "error.log"), "-c", str(config)], port=port)


def _exists_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def express_server(cert: Path, key: Path, image: Path) -> Server | str:
    node, app = shutil.which("node"), HERE / "bench" / "express"
    if node is None:
        return "node is not installed: express skipped."
    if not (app / "node_modules" / "express").is_dir():
        return "express is not installed (cd bench/express && npm install): skipped."
    return Server("express", [node, "server.js", str(cert), str(key), str(image), OFFERED], cwd=app)


def rig_server(name: str, src: Path, folder: Path, cert: Path, key: Path, image: Path) -> Server:
    work = folder / name.replace("@", "-")
    work.mkdir()
    return Server(name, [sys.executable, str(Path(__file__).resolve()), "serve-rig", str(src), str(cert), str(key),
                         str(image), str(work)])


# The load generator.

class Download(asyncio.BufferedProtocol):
    """One device's download: the status line and headers, then the body counted, not kept."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buffer = bytearray(256 * 1024)
        self.head = b""
        self.status: int | None = None
        self.body = 0
        self.length: int | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(REQUEST)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.status is None:
            self.head += bytes(self.buffer[:nbytes])
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.head[:end].decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    self.length = int(value)
            self.body = len(self.head) - end - 4
        else:
            self.body += nbytes
        if self.body >= self.size and not self.done.done():
            self.done.set_result(time.monotonic())
            assert self.transport is not None
            self.transport.close()  # as HTTPUpdate does once it has Content-Length bytes

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError(f"closed after {self.body} of {self.size} bytes"))
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class Round:
    seconds: float
    latencies: list[float]
    failures: int
    server_cpu: float
    client_cpu: float
    errors: dict[str, int]


async def one_download(port: int, context: ssl.SSLContext, size: int) -> float:
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    _, download = await loop.create_connection(lambda: Download(size), "127.0.0.1", port, ssl=context,
                                               server_hostname="ota.local", ssl_handshake_timeout=TIMEOUT)
    try:
        end = await download.done
        if download.status != 200 or download.length != size or download.body != size:
            raise ValueError(f"status {download.status}, length {download.length}, body {download.body}")
        return end - start
    finally:
        assert download.transport is not None
        download.transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(download.closed), 5)
        except TimeoutError:
            download.transport.abort()


async def run_round(server: Server, context: ssl.SSLContext, clients: int, downloads: int, size: int) -> Round:
    """A turn of `downloads` with this process as the load generator."""
    left = downloads
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def device() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            assert server.port is not None
            try:
                latencies.append(await asyncio.wait_for(one_download(server.port, context, size), TIMEOUT))
            except Exception as error:  # noqa: BLE001 - any failure counts, by its kind
                kind = f"{type(error).__name__}: {str(error)[:60]}"
                errors[kind] = errors.get(kind, 0) + 1

    cpu, client = server.cpu_seconds(), time.process_time()
    start = time.monotonic()
    await asyncio.gather(*(device() for _ in range(clients)))
    seconds = time.monotonic() - start
    return Round(seconds, latencies, sum(errors.values()), server.cpu_seconds() - cpu,
                 (time.process_time() - client) / seconds, errors)


def run_round_c(server: Server, loadgen: list[str], clients: int, downloads: int, size: int) -> Round:
    """A turn of `downloads` with the C load generator (`loadgen`: its command up to PORT)."""
    assert server.port is not None
    cpu = server.cpu_seconds()
    start = time.monotonic()
    process = subprocess.Popen([loadgen[0], str(server.port), *loadgen[1:3], str(clients), str(downloads),
                                str(size), loadgen[3]], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"the load generator exited with {process.returncode}")
    latencies: list[float] = []
    errors: dict[str, int] = {}
    for line in output.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "ok":
            latencies.append(float(rest))
        else:
            errors[rest[:60]] = errors.get(rest[:60], 0) + 1
    return Round(seconds, latencies, sum(errors.values()), server.cpu_seconds() - cpu,
                 (usage.ru_utime + usage.ru_stime) / seconds, errors)


def build_loadgen(folder: Path) -> Path | str:
    """bench/loadgen.c compiled into `folder`, or why it cannot be."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return "no C compiler: the load generator is this Python process."
    program = folder / "loadgen"
    source = HERE / "bench" / "loadgen.c"
    built = subprocess.run([compiler, "-O2", "-o", str(program), str(source), "-lssl", "-lcrypto"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        return (f"bench/loadgen.c did not build ({built.stderr.strip().splitlines()[-1:]}; Debian: apt-get install "
                "libssl-dev): the load generator is this Python process.")
    return program


def client_context(ca: str, cipher: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca)  # checks the chain and ota.local, as a device does
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(cipher)
    context.options |= ssl.OP_NO_TICKET  # nothing to resume: every handshake is a full one
    return context


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def negotiated(port: int, context: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            context.wrap_socket(raw, server_hostname="ota.local") as tls:
        return f"{tls.version()} {tls.cipher()[0]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--downloads", type=int, default=2000, help="downloads a server's turn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=1_300_000)
    parser.add_argument("--cipher", default="ECDHE-ECDSA-AES128-GCM-SHA256")
    parser.add_argument("--before", metavar="REV", help="also the rig's server as it is at REV (git archive)")
    parser.add_argument("--only", nargs="*", help="server names to run (rig, rig@REV, nginx, express)")
    parser.add_argument("--loadgen", choices=("c", "python"), default="c",
                        help="the load generator: bench/loadgen.c (built with cc) or this Python process")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE / "src"))
    from ota_rig.server.pki import Pki

    cores = sorted(os.sched_getaffinity(0))
    server_core, client_core = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    folder = Path(tempfile.mkdtemp(prefix="fleet-"))
    servers: list[Server] = []
    try:
        cert = Pki(folder / "pki").dns()
        image = folder / "image" / "app.bin"
        image.parent.mkdir()
        image.write_bytes(b"\xe9" + os.urandom(args.size - 1))
        md5 = hashlib.md5(image.read_bytes()).hexdigest()
        servers.append(rig_server("rig", HERE / "src", folder, cert.cert_pem, cert.key_pem, image))
        if args.before:
            old = folder / "before"
            old.mkdir()
            archive = subprocess.run(["git", "-C", str(HERE), "archive", args.before, "src/ota_rig"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            servers.append(rig_server(f"rig@{args.before}", old / "src", folder, cert.cert_pem, cert.key_pem, image))
        for made in (nginx_server(folder, cert.cert_pem, cert.key_pem, image, md5),
                     express_server(cert.cert_pem, cert.key_pem, image)):
            if isinstance(made, str):
                print(made)
            else:
                servers.append(made)
        if args.only:
            servers = [server for server in servers if server.name in args.only]
        for server in servers:
            server.start(folder, server_core)
        if client_core is not None:
            os.sched_setaffinity(0, {client_core})
        authority = cert.authority
        assert authority is not None
        context = client_context(authority.pem, args.cipher)
        loadgen: list[str] | None = None
        if args.loadgen == "c":
            built = build_loadgen(folder)
            if isinstance(built, str):
                print(built)
            else:
                (folder / "ca.pem").write_text(authority.pem)
                (folder / "request").write_bytes(REQUEST)
                loadgen = [str(built), str(folder / "ca.pem"), args.cipher, str(folder / "request")]

        def turn(server: Server, downloads: int) -> Round:
            if loadgen is not None:
                return run_round_c(server, loadgen, args.clients, downloads, args.size)
            return asyncio.run(run_round(server, context, args.clients, downloads, args.size))

        print(f"load average {_load()} at the start")
        print(f"{len(cores)} cores: servers on core {server_core}, load generator "
              f"({'bench/loadgen.c' if loadgen else 'Python'}) on core {client_core}; "
              f"{args.clients} clients, {args.downloads} downloads of {args.size} bytes a turn, {args.rounds} rounds")
        for server in servers:
            assert server.port is not None
            print(f"  {server.name:<12} {negotiated(server.port, context)}")
        results: dict[str, list[Round]] = {server.name: [] for server in servers}
        for server in servers:  # a warm-up turn each, not counted
            turn(server, args.clients)
        for number in range(args.rounds):
            order = servers[number % len(servers):] + servers[:number % len(servers)]
            for server in order:
                result = turn(server, args.downloads)
                results[server.name].append(result)
                print(f"round {number + 1} {server.name:<12} {args.downloads / result.seconds:7.1f}/s "
                      f"p50 {percentile(result.latencies, 0.5):6.3f} s p99 {percentile(result.latencies, 0.99):6.3f} s "
                      f"failures {result.failures} {result.errors or ''}", flush=True)
        print_table(results, args.downloads)
        print(f"load average {_load()} at the end (2 cores: over 2 means other work took CPU)")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def print_table(results: dict[str, list[Round]], downloads: int) -> None:
    rows = {}
    for name, rounds in results.items():
        rows[name] = (
            statistics.median(downloads / r.seconds for r in rounds),
            statistics.median(percentile(r.latencies, 0.5) for r in rounds),
            statistics.median(percentile(r.latencies, 0.99) for r in rounds),
            sum(r.failures for r in rounds),
            statistics.median(1000 * r.server_cpu / max(1, len(r.latencies)) for r in rounds),
            statistics.median(100 * r.client_cpu for r in rounds),
        )
    print(f"\nmedians of {len(next(iter(results.values())))} rounds")
    print(f"{'server':<12} {'downloads/s':>11} {'p50 s':>7} {'p99 s':>7} {'failures':>8} {'CPU ms/dl':>9} "
          f"{'loadgen CPU':>11}")
    for name, (rate, p50, p99, failures, cpu, client) in rows.items():
        print(f"{name:<12} {rate:11.1f} {p50:7.3f} {p99:7.3f} {failures:8d} {cpu:9.2f} {client:10.0f}%")
    for name in (name for name in rows if name.startswith("rig")):
        if "nginx" in rows:
            rate, p99, cpu = (rows[name][i] / rows["nginx"][i] for i in (0, 2, 4))
            print(f"{name}/nginx: {rate:.2f}x downloads/s (goal >= 0.8), p99 {p99:.2f}x (goal <= 1.5), "
                  f"CPU ms/download {cpu:.2f}x")
        if "express" in rows:
            print(f"{name}/express: {rows[name][0] / rows['express'][0]:.2f}x downloads/s (goal >= 2)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve-rig":
        serve_rig(*sys.argv[2:7])
    else:
        sys.exit(main())
