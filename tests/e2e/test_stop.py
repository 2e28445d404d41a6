"""Ctrl-C on `make serve` stops the graph, HAProxy and the local Ray within STOP_LIMIT_S, idle
and under load (issue #10, item 7: the one timing an e2e test asserts).

Before app/serve.env set RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S, every stop took ~33 s:
the ingress replica stayed reachable for Ray's 30 s load-balancer drain, Serve waited 30 s on that
shutdown tier, and `serve run` gave up on the controller after 30 s.

Each run has its own RAY_TMPDIR, a fresh directory: every process of the run (raylet, GCS, workers,
HAProxy) inherits it, so the test finds them by that directory in /proc/PID/environ and never
matches another cluster on the machine.
"""
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from app.haproxy import haproxy_binary
from tests.conftest import wait_ready
from tests.e2e.launch import serve_run

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)
STOP_LIMIT_S = 10.0
LOAD_CLIENTS = 8
LOAD_BEFORE_STOP_S = 3.0


def run_processes(marker: str) -> dict[int, str]:
    """Live processes whose environment or command line holds marker: {pid: command line}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ, cmdline = (entry / "environ").read_bytes(), (entry / "cmdline").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if marker.encode() in environ or marker.encode() in cmdline:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def is_haproxy(pid: int, binary: str) -> bool:
    try:
        return os.path.realpath(f"/proc/{pid}/exe") == binary
    except OSError:
        return False


def load(url: str, stop: threading.Event, answered: list) -> None:
    """Classify in a loop until stop is set; count 200s (failures after the stop are expected)."""
    with requests.Session() as session:
        while not stop.is_set():
            try:
                reply = session.post(f"{url}/v1/classify", json={"texts": ["A triumph.", "Dull."] * 4}, timeout=10)
                answered.append(reply.status_code == 200)
            except requests.RequestException:  # refused once HAProxy is gone: back off, as a client would
                answered.append(False)
                stop.wait(0.1)


@pytest.mark.parametrize("loaded", [False, True], ids=["idle", "loaded"])
def test_ctrl_c_stops_everything_within_the_limit(tmp_path, tiny_artifact, loaded):
    ray_tmp = tempfile.mkdtemp(prefix="rtc-stop-")  # short: Ray's socket paths must fit 107 bytes
    binary = haproxy_binary()
    proc, url, port, _ = serve_run(tmp_path, tiny_artifact, RAY_TMPDIR=ray_tmp)
    stop_load, answered = threading.Event(), []
    clients = ThreadPoolExecutor(LOAD_CLIENTS)
    try:
        wait_ready(url, proc)
        started = run_processes(ray_tmp)
        # The marker must find this run's cluster, HAProxy included, or "nothing left" means nothing.
        assert any("gcs_server" in cmd for cmd in started.values()), started
        assert any(is_haproxy(pid, binary) for pid in started), started
        if loaded:
            for _ in range(LOAD_CLIENTS):
                clients.submit(load, url, stop_load, answered)
            time.sleep(LOAD_BEFORE_STOP_S)
            assert sum(answered) > 0, "the load never got an answer"

        sigint = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C
        deadline = sigint + STOP_LIMIT_S
        try:
            proc.wait(timeout=STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            pass
        exited = time.monotonic() - sigint
        left = run_processes(ray_tmp)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = run_processes(ray_tmp)
        stop_load.set()
        log.info("%s stop: serve run %s after %.1fs; %d processes of the run left",
                 "loaded" if loaded else "idle", "exited" if proc.poll() is not None else "still running", exited, len(left))

        assert proc.poll() is not None, f"serve run still running {STOP_LIMIT_S}s after SIGINT"
        assert not left, f"{STOP_LIMIT_S}s after SIGINT, processes of this run remain: {left}"
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
        serve_log = (tmp_path / "serve.log").read_text()
        assert "failed to shut down" not in serve_log, serve_log[-2000:]
        # Serve's own shutdown finished (every replica drained and stopped), not Ray's teardown.
        controller_log = "".join(p.read_text() for p in Path(ray_tmp).glob("ray/session_*/logs/serve/controller_*.log"))
        assert "All resources have shut down, controller exiting." in controller_log
        shutil.rmtree(ray_tmp, ignore_errors=True)  # kept for a look when an assertion fails
    finally:
        stop_load.set()
        clients.shutdown(wait=True)
        for pid in run_processes(ray_tmp):  # only this run's processes, whatever failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(STOP_LIMIT_S)
