"""How fast the twin's TLS client (src/ota_rig/virtual/tls.py) shakes hands and downloads 1.3 MB.

    python bench/tls_client.py [--rounds 5] [--size 1300000] [--tree DIR ...]

A Python `ssl` server (OpenSSL, as the rig's update server) on 127.0.0.1 presents a trustme
certificate (ECDSA P-256 or RSA 2048) and answers one request per connection with `--size`
bytes, then close_notify. The client is `tls.connect()` with the CA as the bundle, for each
device profile: the handshake is connect()'s wall time (TCP, TLS and the device's certificate
check), the download is from the request to the last byte.

Each `--tree` is a checkout of the rig (default: this one); a fresh process per tree and round
imports that tree's `rig`, and the trees take turns, so two engines are compared in one run on
the same machine state (the old one from `git archive <commit> | tar -x -C DIR`). Prints the
median and the best of the rounds per tree, profile and key, and the cipher the server saw.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
PROFILES = ("arduino-esp32-2.0", "arduino-esp32-3")
KEYS = ("ecdsa", "rsa")


class Server:
    """Answers each connection's first bytes with `size` bytes and a close_notify."""

    def __init__(self, chain_pem: bytes, key_pem: bytes, size: int) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.NamedTemporaryFile(suffix=".pem") as cert, tempfile.NamedTemporaryFile(suffix=".pem") as key:
            cert.write(chain_pem)
            key.write(key_pem)
            cert.flush()
            key.flush()
            self.ctx.load_cert_chain(cert.name, key.name)
        self.body = bytes(size)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.ciphers: list[str] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.ciphers.append(tls.cipher()[0])
                    tls.recv(1024)
                    tls.sendall(self.body)
                    tls.unwrap()
            except (ssl.SSLError, OSError):
                pass


def worker(size: int) -> dict[str, dict[str, object]]:
    """One round of every case with the `rig` on sys.path; {case: {handshake, download, cipher}}."""
    import trustme

    from ota_rig.device import profiles
    from ota_rig.virtual import tls

    out: dict[str, dict[str, object]] = {}
    for key in KEYS:
        ca = trustme.CA(key_type=trustme.KeyType[key.upper()])
        leaf = ca.issue_cert("localhost", key_type=trustme.KeyType[key.upper()])
        server = Server(b"".join(b.bytes() for b in leaf.cert_chain_pems), leaf.private_key_pem.bytes(), size)
        bundle = ca.cert_pem.bytes().decode()
        for name in PROFILES:
            started = time.perf_counter()
            session = tls.connect("localhost", server.port, bundle, profiles.get(name), timeout=30)
            shaken = time.perf_counter()
            session.send(b"GET /firmware.bin HTTP/1.0\r\n\r\n")
            got = 0
            while True:
                try:
                    chunk = session.recv(16384, timeout=30)
                except tls.TlsError:
                    break
                if not chunk:
                    break
                got += len(chunk)
            done = time.perf_counter()
            session.close()
            if got != size:
                raise SystemExit(f"{name}/{key}: {got} of {size} bytes")
            out[f"{name} {key}"] = {"handshake": shaken - started, "download": done - shaken,
                                    "cipher": server.ciphers[-1]}
        server.listener.close()
    return out


def run_tree(tree: Path, size: int) -> dict[str, dict[str, object]]:
    source = tree / "src" if (tree / "src" / "ota_rig").is_dir() else tree  # the src layout, or an older checkout's
    code = (f"import sys, json; sys.path.insert(0, {str(source)!r}); sys.path.insert(1, {str(HERE / 'bench')!r}); "
            f"import tls_client; print(json.dumps(tls_client.worker({size})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tree)
    if done.returncode:
        raise SystemExit(f"{tree}: {done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=1_300_000, help="download size in bytes")
    parser.add_argument("--tree", type=Path, action="append", help="a rig checkout (repeatable; default: this one)")
    args = parser.parse_args()
    trees = [t.resolve() for t in args.tree or [HERE]]
    results: dict[Path, list[dict[str, dict[str, object]]]] = {t: [] for t in trees}
    for _ in range(args.rounds):
        for tree in trees:  # taking turns: both see the same machine load
            results[tree].append(run_tree(tree, args.size))
    print(f"{args.rounds} rounds, {args.size} bytes; seconds as median (best)")
    print(f"{'tree':<28} {'case':<24} {'handshake':>16} {'download':>16} {'MB/s':>6}  cipher (server)")
    for tree in trees:
        for case in results[tree][0]:
            hs = [r[case]["handshake"] for r in results[tree]]
            dl = [r[case]["download"] for r in results[tree]]
            print(f"{str(tree)[-28:]:<28} {case:<24} {statistics.median(hs):8.4f} ({min(hs):.4f}) "
                  f"{statistics.median(dl):8.4f} ({min(dl):.4f}) {args.size / statistics.median(dl) / 1e6:6.2f}  "
                  f"{results[tree][0][case]['cipher']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
