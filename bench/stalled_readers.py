"""What clients that stop reading mid-download cost the update server: its memory and open
files, read from /proc, with `rig serve` as its own process.

    python bench/stalled_readers.py [--readers 50] [--size 1300000] [--path /update] [--wait 35]

Starts `rig serve` on 127.0.0.1 offering a virtual build of about `--size` bytes on /update,
with the same image as /firmware/app.bin and an 8 MB /firmware/big.bin beside it, then opens
`--readers` TLS connections that ask for `--path`, read its first 4 KB and then stop reading
(a small receive buffer, as a device has). Prints the server process's RSS and open file
descriptors before the readers, once the server has filled their windows, `--wait` seconds
later (past the server's 30 s bound for a client that takes nothing), and once the readers
have closed; then how the server's record says those connections ended.

On loopback the kernel's socket buffers take about 4 MB of each answer, so a 1.3 MB image is
handed over whole (complete in the record) and only a larger body keeps the server waiting
on the reader: `--path /firmware/big.bin`.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.server.records import ServerLog

BIG_FILE = 8 * 1024 * 1024  # /firmware/big.bin: more than the kernel's socket buffers take in
HEADERS = b"Host: ota.local\r\nx-ESP32-STA-MAC: 24:6F:28:AA:BB:CC\r\nx-ESP32-version: 0.1\r\n\r\n"


def usage(pid: int) -> str:
    """The process's resident memory and open file descriptors, as the kernel counts them."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)[1])
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return f"RSS {rss_kb / 1024:6.1f} MB, {fds:3d} open fds"


def start_server(folder: Path, app: Path) -> tuple[subprocess.Popen, int]:
    """`rig serve` offering `app` as 0.2, once it is listening: the process and its port."""
    with (folder / "serve.out").open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "ota_rig.cli", "serve", "--folder", str(folder / "serve"), "--host", "127.0.0.1",
             "--port", "0", "--firmware", str(app), "--firmware-version", "0.2"],
            stdout=output, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while "Ctrl-C stops it" not in (text := (folder / "serve.out").read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"rig serve did not start:\n{text}")
        time.sleep(0.1)
    return process, int(re.search(r"listening on 127\.0\.0\.1:(\d+)", text)[1])


def stalled_reader(port: int, context: ssl.SSLContext, path: str) -> ssl.SSLSocket:
    """A device that asks for `path`, reads the first 4 KB of the answer and no more."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", port))
    tls = context.wrap_socket(raw, server_hostname="ota.local")
    tls.sendall(f"GET {path} HTTP/1.0\r\n".encode() + HEADERS)
    tls.recv(4096)
    return tls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--size", type=int, default=1_300_000)
    parser.add_argument("--path", default="/update", help="/update, /firmware/app.bin or /firmware/big.bin")
    parser.add_argument("--wait", type=float, default=35.0, help="seconds after the readers stall")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        folder = Path(tmp)
        app = VirtualBuilder(folder / "builds").build(SketchConfig.without_server("0.2"), size=args.size).app
        (folder / "serve" / "firmware").mkdir(parents=True)
        (folder / "serve" / "firmware" / "app.bin").write_bytes(app.read_bytes())
        (folder / "serve" / "firmware" / "big.bin").write_bytes(b"\xe9" * BIG_FILE)
        process, port = start_server(folder, app)
        try:
            time.sleep(1)
            print(f"{args.path}: image {app.stat().st_size} bytes, server pid {process.pid}")
            print(f"{'before:':27}{usage(process.pid)}")
            context = ssl.create_default_context(cafile=folder / "serve" / "ca.pem")
            readers = [stalled_reader(port, context, args.path) for _ in range(args.readers)]
            time.sleep(2)  # the server fills each reader's window, then waits on it
            print(f"{f'{args.readers} readers stalled:':27}{usage(process.pid)}")
            time.sleep(args.wait)
            print(f"{f'{args.wait:g} s later:':27}{usage(process.pid)}")
            for reader in readers:
                reader.close()
            time.sleep(1)
            print(f"{'readers closed, 1 s later:':27}{usage(process.pid)}")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        connections = ServerLog(folder / "serve" / "server.jsonl").connections()
    ended = Counter(c.ended for c in connections)
    sent = [request.bytes_sent for connection in connections for request in connection.requests]
    complete = sum(request.complete for connection in connections for request in connection.requests)
    print(f"server record: {len(connections)} connections, ended {dict(ended)}; {complete} bodies complete "
          f"(handed to the socket), body bytes sent {min(sent, default=0)}..{max(sent, default=0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
