"""Debian's nginx serving a folder over HTTPS, as a release engineer puts firmware on a static
server or CDN: a real `nginx` process with a temporary configuration, its access log recording
each request with the x-ESP32-version it carried (the evidence a test reads)."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.servers import free_port, stop, wait_listening

NGINX = shutil.which("nginx") or next((path for path in ("/usr/sbin/nginx",) if Path(path).exists()), None)
MISSING = "nginx is not installed (Debian: apt-get install nginx-light; .ci/run installs it)"
# Each request with the version and MAC the device sent: the evidence a fleet test reads.
DEVICE_LOG = """'$remote_addr "$request" $status $body_bytes_sent "$http_x_esp32_version" "$http_x_esp32_sta_mac"'"""


@contextmanager
def nginx(folder: Path, docroot: Path, cert: Path, key: Path, port: int | None = None, *,
          protocols: str = "TLSv1.2 TLSv1.3", log_format: str = DEVICE_LOG, server: str = "",
          ) -> Iterator[tuple[int, Path]]:
    """nginx on 127.0.0.1:`port` (a free one by default) serving `docroot` with `cert`/`key`,
    its files under `folder`: (port, access log). `protocols` is its ssl_protocols, `log_format`
    its access log's format, `server` more lines for its server block (a location, say).
    Stopped (SIGTERM, then killed) at the end."""
    assert NGINX is not None, MISSING
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    access = folder / "access.log"
    # As root, nginx's worker drops to `user`: root here, since pytest's folders are private to root.
    user = "user root root;" if os.geteuid() == 0 else ""
    config = folder / "nginx.conf"
    config.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;  # info: TLS handshake failures too
events {{ worker_connections 1024; }}
http {{
    log_format device {log_format};
    access_log {access} device;
    client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy; fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl backlog=1024;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {protocols};
        root {docroot};
        default_type application/octet-stream;
        {server}
    }}
}}
""")
    process = subprocess.Popen([NGINX, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_listening(port, process, "nginx", timeout=10)
        except AssertionError as refused:
            errors = folder / "error.log"
            raise RuntimeError(f"{refused}: {errors.read_text() if errors.exists() else ''}") from None
        yield port, access
    finally:
        stop(process)
