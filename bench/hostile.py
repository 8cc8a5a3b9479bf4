"""How fast the update server takes a flood of hostile connections (ota_rig.server.hostile), with no
device and no scenario: a standalone UpdateServer on 127.0.0.1, the flood in another process.

    python bench/hostile.py [--count 1000] [--concurrency 50] [--patience 1.0]

Prints the count of each case's outcomes, the totals, connections per second, and what the
server recorded. `--patience` is the server's handshake and request timeout: the slow cases
(slowloris, a ClientHello cut short, an idle kept-alive connection) each hold a connection
that long, so it bounds the run from below.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ota_rig.server import hostile
from ota_rig.server.app import UpdateServer
from ota_rig.server.pki import Pki


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--patience", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rig-bench-") as tmp:
        folder = Path(tmp)
        pki = Pki(folder / "pki")
        (folder / "firmware").mkdir()
        secret = folder / "canary.bin"
        secret.write_bytes(b"\xe9canary")
        with UpdateServer(folder / "firmware", folder / "server.jsonl", handshake_timeout=args.patience,
                          request_timeout=args.patience) as server:
            port = server.add_listener("main", pki.dns()).port
            started = time.monotonic()
            with hostile.Attacker("127.0.0.1", port, pki.authority().pem, "ota.local", secret=secret,
                                  count=args.count, concurrency=args.concurrency,
                                  deadline=args.patience + 4) as attacker:
                flood = attacker.result()
            wall = time.monotonic() - started
            server.wait_idle()
            connections = server.log.connections()
    print(flood.summary())
    print(f"with the attacker's start: {wall:.2f} s")
    ended = Counter(c.ended for c in connections)
    print(f"server record: {len(connections)} connections, {sum(1 for c in connections if not c.tls.ok)} failed "
          f"handshakes, {sum(1 for c in connections if c.error)} refused by the parser, "
          f"{sum(len(c.requests) for c in connections)} requests answered; ended {dict(ended)}")
    return 0 if not flood.findings else 1


if __name__ == "__main__":
    sys.exit(main())
