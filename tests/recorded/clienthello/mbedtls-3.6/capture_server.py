#!/usr/bin/env python3
"""Capture the raw TLS ClientHello record sent by a client, then complete a
real TLS handshake with Python's ssl module on the same socket.

The first record is read with MSG_PEEK (not consumed), so the ssl module
afterwards sees the untouched byte stream.

Usage: capture_server.py PORT OUT_JSON [COUNT]
Writes a JSON list (one entry per accepted connection) to OUT_JSON.
"""
import json
import socket
import ssl
import sys
import time

HERE = __file__.rsplit("/", 1)[0]
PORT = int(sys.argv[1])
OUT = sys.argv[2]
COUNT = int(sys.argv[3]) if len(sys.argv) > 3 else 1

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(f"{HERE}/pki/server.pem", f"{HERE}/pki/server.key")
ctx.minimum_version = ssl.TLSVersion.TLSv1_2

sni_seen = []
ctx.sni_callback = lambda sock, name, c: sni_seen.append(name)

results = []
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", PORT))
srv.listen(4)
print(f"listening on 127.0.0.1:{PORT}", flush=True)
for _ in range(COUNT):
    conn, addr = srv.accept()
    conn.settimeout(10)
    # peek until the full first record (5-byte header + length) is available
    deadline = time.time() + 10
    data = b""
    while time.time() < deadline:
        data = conn.recv(65536, socket.MSG_PEEK)
        if len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[3:5], "big"):
            break
        time.sleep(0.01)
    rec_len = int.from_bytes(data[3:5], "big")
    record = data[: 5 + rec_len]
    entry = {"peer": f"{addr[0]}:{addr[1]}", "record_hex": record.hex()}
    sni_seen.clear()
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
        entry["handshake"] = "completed"
        entry["negotiated_version"] = tls.version()
        entry["negotiated_cipher"] = tls.cipher()[0]
        entry["sni_seen_by_python_ssl"] = sni_seen[0] if sni_seen else None
        try:
            req = tls.recv(4096)
            entry["app_data_received"] = req.decode("latin-1")
            tls.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except Exception as e:  # noqa: BLE001
            entry["app_data_error"] = repr(e)
        try:
            tls.close()
        except Exception:  # noqa: BLE001
            pass
    except Exception as e:  # noqa: BLE001
        entry["handshake"] = f"failed: {e!r}"
        conn.close()
    results.append(entry)
    print(json.dumps({k: v for k, v in entry.items() if k != "record_hex"}), flush=True)
srv.close()
with open(OUT, "w") as f:
    json.dump(results, f, indent=1)
