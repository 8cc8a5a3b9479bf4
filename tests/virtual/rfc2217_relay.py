"""A network between esptool and a board's RFC2217 server: a TCP relay that delivers every
chunk, in each direction, `--latency` seconds after it arrived (in order, like one TCP stream).

It forwards the telnet bytes untouched, as a plain relay does (ser2net in front of a remote
port, a VPN hop): each SET_CONTROL esptool sends for DTR or RTS reaches the board's port one
latency later, and pyserial's rfc2217 client waits for each answer (serial/rfc2217.py,
rfc2217_set_control) before it sends the next line change. So a line state esptool means to
pass through at once lasts two latencies at the board: espressif/esptool#383.

Usage: python rfc2217_relay.py TARGET_HOST:PORT --latency SECONDS; prints "relay on PORT".
"""

from __future__ import annotations

import argparse
import heapq
import socket
import sys
import threading
import time


def pump(source: socket.socket, sink: socket.socket, latency: float) -> None:
    queue: list[tuple[float, int, bytes]] = []
    ready = threading.Condition()
    done = threading.Event()

    def deliver() -> None:
        while True:
            with ready:
                while not queue and not done.is_set():
                    ready.wait()
                if not queue:
                    break
                due, _, data = queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    ready.wait(wait)
                    continue
                heapq.heappop(queue)
            try:
                sink.sendall(data)
            except OSError:
                break
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    sender = threading.Thread(target=deliver, daemon=True)
    sender.start()
    count = 0
    while True:
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        with ready:
            if not data:
                done.set()
                ready.notify_all()
                break
            count += 1
            heapq.heappush(queue, (time.monotonic() + latency, count, data))
            ready.notify_all()
    sender.join()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"relay on {listener.getsockname()[1]}", flush=True)
    while True:
        client, _ = listener.accept()
        board = socket.create_connection((host, int(port)))
        for sock in (client, board):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up = threading.Thread(target=pump, args=(client, board, args.latency), daemon=True)
        down = threading.Thread(target=pump, args=(board, client, args.latency), daemon=True)
        up.start()
        down.start()
        up.join()
        down.join()
        client.close()
        board.close()


if __name__ == "__main__":
    sys.exit(main())
