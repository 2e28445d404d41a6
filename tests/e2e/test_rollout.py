"""Zero-drop model rollout (issue #16): `serve deploy` of serve_config.yaml with a new `model`
into the cluster that `serve run` started as `make serve` starts it (app/serve.env: HAProxy in
front), while client threads send steady traffic.

Why the real CLI and not `serve.run` twice in-process: the rollout's risky hops are HAProxy
moving from the old ingress replica to the new one and the declarative path (`serve deploy`
changes the app's code version, so every deployment rolls); an in-process graph behind Serve's
Python proxy would skip both. The two artifacts have different label sets, so a request that
mixed an old stage with a new one would show as a 500 or as labels that do not belong to the
version the answer names.
"""
import json
import os
import signal
import subprocess
import threading
import time

import pytest
import requests
import yaml

from app.haproxy import wait_port_closed
from tests.conftest import TINY, make_artifact, wait_ready
from tests.e2e.launch import SERVE, dashboard_address, serve_run
from train.artifact import read_info

pytestmark = pytest.mark.slow
CLIENTS = 4
OLD_LABELS, NEW_LABELS = ("negative", "positive"), ("bad", "fine", "good")
# Requests of one text, of a few, and of more than the ingress's max_batch_texts (64): a request
# split into parts must be answered by one version too.
BODIES = [{"text": "a fine film"}, {"texts": ["dull", "a triumph", "too long"]}, {"texts": ["word"] * 80}]
ROLLOUT_LIMIT_S = 180


def load(url: str, stop: threading.Event, answers: list, seed: int) -> None:
    session, i = requests.Session(), seed
    while not stop.is_set():
        body = BODIES[i % len(BODIES)]
        i += 1
        try:
            r = session.post(f"{url}/v1/classify", json=body | {"top_k": None}, timeout=60)
            answers.append((time.monotonic(), r.status_code, r.json() if r.status_code == 200 else r.text[:300]))
        except requests.RequestException as err:  # a dropped connection counts as a failure
            answers.append((time.monotonic(), 0, repr(err)))


def serve_status(dashboard: str, env: dict) -> dict:
    out = subprocess.run([str(SERVE), "status", "-a", dashboard], capture_output=True, text=True, timeout=60,
                         env=env, check=True).stdout
    return yaml.safe_load(out)["applications"]["classifier"]


def live_replicas(dashboard: str, env: dict) -> int:
    """Replica actors still alive, old or new: `serve status` lists only the ones Serve still
    targets, so a draining old replica shows here alone."""
    out = subprocess.run([str(SERVE.parent / "ray"), "list", "actors", "--address", dashboard, "--filter",
                          "state=ALIVE", "--format", "json", "--limit", "1000"],
                         capture_output=True, text=True, timeout=60, env=env, check=True).stdout
    return sum(a["class_name"].startswith("ServeReplica:classifier:") for a in json.loads(out))


def settled(status: dict, replicas: dict[str, int]) -> bool:
    """RUNNING, every deployment HEALTHY with only RUNNING replicas, as many as at the start (a
    deployment scaled to zero, like an idle Explainer, lists no replica states at all)."""
    deployments = status["deployments"]
    return status["status"] == "RUNNING" and all(
        deployments[name]["status"] == "HEALTHY"
        and {state: k for state, k in deployments[name]["replica_states"].items() if k} == ({"RUNNING": n} if n else {})
        for name, n in replicas.items())


def test_serve_deploy_of_a_new_model_under_load_drops_nothing(tmp_path):
    old = make_artifact(tmp_path / "old", random_init=TINY, labels=OLD_LABELS)
    new = make_artifact(tmp_path / "new", random_init=TINY, labels=NEW_LABELS)
    labels = {read_info(old).version[:16]: set(OLD_LABELS), read_info(new).version[:16]: set(NEW_LABELS)}
    old_version, new_version = list(labels)
    proc, url, port, env = serve_run(tmp_path, old)
    env = dict(env, RAY_AUTH_MODE="token")  # the local cluster wants its token on the dashboard API
    stop, answers, clients = threading.Event(), [], []
    try:
        wait_ready(url, proc)
        dashboard = dashboard_address(tmp_path / "serve.log")
        config = yaml.safe_load((tmp_path / "serve_config.yaml").read_text())
        replicas = {d["name"]: d["autoscaling_config"]["min_replicas"] for d in config["applications"][0]["deployments"]}
        deadline = time.monotonic() + 120
        while not settled(serve_status(dashboard, env), replicas):  # every replica up, not only one per stage
            assert time.monotonic() < deadline, serve_status(dashboard, env)
            time.sleep(1)
        assert requests.get(f"{url}/v1/model", timeout=10).json()["version"] == old_version

        clients = [threading.Thread(target=load, args=(url, stop, answers, i)) for i in range(CLIENTS)]
        for client in clients:
            client.start()
        time.sleep(3)
        config["applications"][0]["args"]["model"] = str(new)
        (tmp_path / "new.yaml").write_text(yaml.safe_dump(config))
        deployed = time.monotonic()
        subprocess.run([str(SERVE), "deploy", "-a", dashboard, str(tmp_path / "new.yaml")], env=env, timeout=60,
                       check=True, capture_output=True)

        # Done when /v1/model names the new artifact, Serve reports the app settled and the old
        # replicas are gone (drained, then stopped: no more replica actors alive than targeted).
        most_alive = 0
        while True:
            status = serve_status(dashboard, env)
            model = requests.get(f"{url}/v1/model", timeout=10).json()
            alive = live_replicas(dashboard, env)
            most_alive = max(most_alive, alive)
            if model["version"] == new_version and settled(status, replicas) and alive == sum(replicas.values()):
                break
            assert time.monotonic() - deployed < ROLLOUT_LIMIT_S, (status, alive)
            time.sleep(0.5)
        assert set(model["labels"]) == set(NEW_LABELS)
        done = time.monotonic()
        time.sleep(3)  # traffic after the rollout: the new version only
    finally:
        stop.set()
        for client in clients:
            client.join(90)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    assert wait_port_closed(port)

    failed = [(status, body) for _, status, body in answers if status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:5]}"
    served = [(t, body["model"]["version"], body["predictions"]) for t, _, body in answers]
    for _, version, predictions in served:
        # Each answer's labels and score lists are the version's it names: no stage of the other.
        for p in predictions:
            assert {s["label"] for s in p["scores"]} == labels[version], (version, p)
    versions = [v for t, v, _ in served if t < deployed]
    assert versions and set(versions) == {old_version}
    assert {v for t, v, _ in served if t > done} == {new_version}
    print(f"rollout: {len(answers)} requests, {len(failed)} failed, "  # noqa: T201 - the figure for the note
          f"{sum(v == old_version for _, v, _ in served)} old / {sum(v == new_version for _, v, _ in served)} new, "
          f"settled {done - deployed:.1f} s after serve deploy, at most {most_alive} replicas alive")
