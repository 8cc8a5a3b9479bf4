"""A farm reached through SSH (`LG_PROXY`): a private OpenSSH server on a free loopback port stands
for the lab's gateway, and the rig reaches the coordinator and the place's RFC2217 port only
through the local forwards labgrid's proxy manager asks that ssh connection for
(labgrid/util/proxy.py get_grpc_address and get_host_and_port, labgrid/util/ssh.py
add_port_forward). The sshd's own log shows each forward it carried."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.farm.lab import MISSING, Farm
from tests.farm.test_farm import NOBODY, ROOT, rig_argv, rig_env
from tests.servers import free_port, stop, wait_listening

if MISSING:
    pytest.skip(MISSING, allow_module_level=True)
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
SSH = shutil.which("ssh")
if SSHD is None or SSH is None:
    pytest.skip("OpenSSH is not installed (apt-get install openssh-server: sshd and ssh)", allow_module_level=True)

pytestmark = [pytest.mark.virtual, pytest.mark.slow]

GATEWAY = "rig-gateway"  # the Host name in the ssh config, what LG_PROXY names


@dataclass
class Gateway:
    port: int
    log: Path
    bin: Path  # a folder whose `ssh` uses this gateway's client config

    def ssh_processes(self) -> list[str]:
        """Command lines of the ssh clients still running with this gateway's config."""
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"ssh") and str(self.bin.parent).encode() in b" ".join(argv):
                found.append(b" ".join(argv).decode())
        return found


@contextmanager
def gateway(folder: Path) -> Iterator[Gateway]:
    """A private sshd on 127.0.0.1 (own host key, one authorized client key, root allowed by key as
    CI runs as root) and an `ssh` that reaches it as GATEWAY. labgrid runs the `ssh` it finds on PATH
    with the LG_PROXY host name and no port or key (labgrid/util/ssh.py _start_own_master): a runner
    sets them in ~/.ssh/config, which OpenSSH finds through the password database's home, not
    $HOME, so the test puts an `ssh` on PATH that passes its own config with -F."""
    folder.mkdir()
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "AllowTcpForwarding yes\nLogLevel DEBUG1\n")
    host_key = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"{GATEWAY} {host_key[0]} {host_key[1]}\n")
    (folder / "ssh_config").write_text(
        f"Host {GATEWAY}\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
        f"  HostKeyAlias {GATEWAY}\n  UserKnownHostsFile {folder / 'known_hosts'}\n"
        f"  IdentityFile {folder / 'client_key'}\n  IdentitiesOnly yes\n  BatchMode yes\n")
    bin_folder = folder / "bin"
    bin_folder.mkdir()
    (bin_folder / "ssh").write_text(f"#!/bin/sh\nexec {SSH} -F {folder / 'ssh_config'} \"$@\"\n")
    (bin_folder / "ssh").chmod(0o755)
    if os.geteuid() == 0:  # sshd started by root wants its privilege separation folder (Debian's unit makes it)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = folder / "sshd.log"
    process = subprocess.Popen([SSHD, "-D", "-f", str(folder / "sshd_config"), "-E", str(log)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_listening(port)
        yield Gateway(port, log, bin_folder)
    finally:
        stop(process)


@pytest.mark.timeout(600)
def test_a_scenario_runs_through_an_ssh_proxy(farm: Farm, tmp_path: Path) -> None:
    with gateway(tmp_path / "gateway") as ssh:
        env = {**rig_env(farm, tmp_path), "LG_PROXY": GATEWAY, "PATH": f"{ssh.bin}{os.pathsep}{os.environ['PATH']}"}
        done = subprocess.run(
            rig_argv(tmp_path, "labgrid:esp-a", "src/ota_rig/scenarios", "-k", "test_device_on_the_latest_version",
                     "--ota-profile", "arduino-esp32-2.0"),
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
        log = ssh.log.read_text()
        deadline = time.monotonic() + 10
        while ssh.ssh_processes() and time.monotonic() < deadline:  # labgrid stops its master at exit
            time.sleep(0.2)
        left = ssh.ssh_processes()
    assert done.returncode == 0, done.stdout + done.stderr
    [scenario] = json.loads((tmp_path / "report" / "results.json").read_text())["scenarios"]
    assert scenario["verdict"] == "passed" and scenario["board"]["place"] == "esp-a"
    twin = int(farm.twins["esp-a"].port.rsplit(":", 1)[1])
    [port] = json.loads((tmp_path / "report" / "labgrid-places.json").read_text())["ports"]
    host, forwarded = port.removeprefix("rfc2217://").rsplit(":", 1)
    assert host == "localhost" and int(forwarded) != twin  # the rig's port is ssh's local forward
    assert scenario["board"]["port"] == port
    coordinator = int(farm.address.rsplit(":", 1)[1])
    for target in (coordinator, twin):  # sshd carried both: the coordinator's gRPC and the RFC2217 bytes
        assert f"target 127.0.0.1 port {target}" in log, log
    assert left == []
    assert farm.held() == NOBODY
