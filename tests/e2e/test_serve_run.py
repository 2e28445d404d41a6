"""`serve run serve_config.yaml` exactly as a user starts it (`make serve`: with app/serve.env, so
HAProxy fronts the graph), on the packaged MiniLM artifact."""
import contextlib
import os
import signal
import socket
import subprocess

import pytest
import requests
import yaml

from app.haproxy import wait_port_closed
from tests.conftest import make_artifact, wait_ready
from tests.e2e.launch import SERVE, dashboard_address as _dashboard, serve_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    artifact = make_artifact(tmp / "minilm", max_length=64)  # the packaged weights, an untrained head
    # Ray's first-choice dashboard port is held, as another cluster on the machine may hold it: Ray
    # moves on to a free port, and `serve status` below must address this cluster's own dashboard.
    held = socket.socket()
    with contextlib.suppress(OSError):  # already held by someone else: the same case
        held.bind(("127.0.0.1", 8265))
        held.listen()
    proc, url, port, env = serve_run(tmp, artifact)
    try:
        wait_ready(url, proc)
        yield url, env, _dashboard(tmp / "serve.log")
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # serve run shuts the app, HAProxy and its Ray down on Ctrl-C
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        held.close()
    # An HAProxy that Ray's shutdown missed is reaped (app/haproxy.py), as `make serve` does.
    assert wait_port_closed(port), f"port {port} still answers after serve run stopped"


def test_serve_run_answers_over_http(served):
    url, _, _ = served
    body = requests.post(f"{url}/v1/classify", json={"texts": ["A triumph.", "Dull and far too long."], "top_k": None},
                         timeout=30).json()
    assert [len(p["scores"]) for p in body["predictions"]] == [2, 2]
    assert {p["label"] for p in body["predictions"]} <= {"negative", "positive"}
    info = requests.get(f"{url}/v1/model", timeout=10).json()
    assert info["base_model"] == "all-MiniLM-L6-v2" and info["max_length"] == 64


def test_haproxy_fronts_the_ingress(served):
    # app/serve.env's mode: HAProxy, not Serve's Python proxy, listens on the port and forwards
    # to the ingress replica's own HTTP server.
    url, env, _ = served
    stats = requests.get(f"http://127.0.0.1:{env['RAY_SERVE_HAPROXY_STATS_PORT']}/stats;csv", timeout=10)
    assert stats.status_code == 200
    rows = [line.split(",") for line in stats.text.splitlines() if not line.startswith("#")]
    # columns 0 pxname, 1 svname, 7 stot (sessions forwarded), 17 status
    ingress = [r for r in rows if r[1].startswith("SERVE_REPLICA_classifier-Ingress")]
    assert ingress and all(r[17] == "UP" for r in ingress), stats.text[:2000]
    assert sum(int(r[7]) for r in ingress) > 0


def test_serve_status_shows_every_deployment_healthy(served):
    _, env, dashboard = served
    # The local cluster requires its token on the dashboard API (~/.ray/auth_token); the client
    # sends it only when told to.
    env = dict(env, RAY_AUTH_MODE="token")
    out = subprocess.run([str(SERVE), "status", "-a", dashboard],
                         capture_output=True, text=True, timeout=60, env=env, check=True).stdout
    status = yaml.safe_load(out)["applications"]["classifier"]
    assert status["status"] == "RUNNING"
    assert {name: d["status"] for name, d in status["deployments"].items()} == {
        "Ingress": "HEALTHY", "Tokenizer": "HEALTHY", "Classifier": "HEALTHY", "Postprocessor": "HEALTHY",
        "Explainer": "HEALTHY"}  # at zero replicas until someone explains


def test_serve_run_explains(served):
    # The Explainer starts from zero replicas on the first request (serve_config.yaml).
    url, _, _ = served
    text = "A triumph of style and feeling."
    response = requests.post(f"{url}/v1/explain", json={"text": text}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [w["text"] for w in body["attributions"]] == ["A", "triumph", "of", "style", "and", "feeling", "."]
    assert body["steps"] == 32 and abs(body["completeness"]["delta"]) < 1e-3
