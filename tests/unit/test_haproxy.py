"""app.haproxy reaps HAProxy processes whose HAProxyManager is gone, and only those."""
import os
import signal
import subprocess
import sys
import time

import pytest

from app.haproxy import haproxy_binary, orphans, reap
from tests.conftest import free_port

CONFIG = """global
    maxconn 16
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend f
    bind 127.0.0.1:{port}
    http-request return status 200
"""


def _wait_listening(port: int) -> None:
    import socket

    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def base(tmp_path):
    return tmp_path / "haproxy-serve"


def _config(base, name: str) -> tuple[str, int]:
    (base / name).mkdir(parents=True)
    port = free_port()
    path = base / name / "haproxy.cfg"
    path.write_text(CONFIG.format(port=port))
    return str(path), port


def test_reaps_an_orphan_and_spares_a_managed_haproxy(base):
    binary = haproxy_binary()
    orphan_cfg, orphan_port = _config(base, "old")
    managed_cfg, managed_port = _config(base, "live")
    # The orphan: started from a shell that exits at once, so its parent is gone.
    subprocess.run(["sh", "-c", f"'{binary}' -db -f '{orphan_cfg}' >/dev/null 2>&1 &"], check=True)
    # The managed one: its parent's command line names HAProxyManager, as Ray's actor does.
    manager = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.Popen(sys.argv[1:-1]).wait()",
                                binary, "-db", "-f", managed_cfg, "ray::HAProxyManager"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        _wait_listening(orphan_port)
        _wait_listening(managed_port)
        (orphan,) = orphans(base=str(base))
        assert managed_cfg not in open(f"/proc/{orphan}/cmdline").read().replace("\0", " ")
        assert reap(base=str(base)) == [orphan]
        assert not os.path.exists(f"/proc/{orphan}")
        assert orphans(base=str(base)) == []  # the managed HAProxy is still there, untouched
    finally:
        for pid in orphans(base=str(base)) + [int(p) for p in os.listdir("/proc") if p.isdigit()
                                              and open(f"/proc/{p}/stat").read().split()[3] == str(manager.pid)]:
            os.kill(pid, signal.SIGKILL)
        manager.kill()
        manager.wait()


def test_nothing_outside_the_base_directory_is_an_orphan(base, tmp_path):
    cfg, port = _config(tmp_path / "elsewhere", "x")
    subprocess.run(["sh", "-c", f"'{haproxy_binary()}' -db -f '{cfg}' >/dev/null 2>&1 & echo $! > '{tmp_path}/pid'"],
                   check=True)
    pid = int((tmp_path / "pid").read_text())
    try:
        _wait_listening(port)
        assert pid not in orphans(base=str(base))
    finally:
        os.kill(pid, signal.SIGKILL)
