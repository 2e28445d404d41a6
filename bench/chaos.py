"""Overload and chaos, with figures: drive the graph far past capacity, then kill a model replica
under load, and count what the clients saw.

    python -m bench.chaos [--model DIR] [--seconds 8] [--connections 64]

Prints requests sent, statuses, client failures and the time from the kill until requests flow at
the pre-kill rate again. Ray runs on loopback; all traffic stays on this machine.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

from bench.common import start_graph, stop_graph


def drive(url: str, seconds: float, connections: int, body: dict, log: list) -> None:
    stop = time.monotonic() + seconds

    def client():
        session = requests.Session()
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                status = session.post(f"{url}/v1/classify", json=body, timeout=30).status_code
            except requests.RequestException:
                status = "error"
            log.append((started, time.monotonic() - started, status))

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def overload(url: str, seconds: float, connections: int) -> dict:
    log: list = []
    drive(url, seconds, connections, {"texts": [f"review {i}: a long and winding film" for i in range(32)]}, log)
    statuses = Counter(s for _, _, s in log)
    shed = [d for _, d, s in log if s == 503]
    healthy = requests.get(f"{url}/readyz", timeout=10).status_code
    return {"requests": len(log), "statuses": dict(statuses), "max_503_latency_s": round(max(shed, default=0), 3),
            "ready_after": healthy}


def chaos(url: str, seconds: float, connections: int) -> dict:
    import ray

    log: list = []
    runner = threading.Thread(target=drive, args=(url, seconds, connections, {"texts": ["fine", "poor"]}, log))
    runner.start()
    time.sleep(seconds / 3)
    (name,) = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
               if a["namespace"] == "serve" and "#Classifier#" in a["name"]]
    killed = time.monotonic()
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    runner.join()
    statuses = Counter(s for _, _, s in log)
    after = sorted((t + d) for t, d, s in log if t >= killed and s == 200)  # completions of post-kill requests
    return {"requests": len(log), "statuses": dict(statuses), "client_failures": len(log) - statuses[200],
            "first_success_after_kill_s": round(after[0] - killed, 2) if after else None,
            "max_latency_s": round(max(d for _, d, _ in log), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", help="artifact directory (default: a tiny random BERT built here)")
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--connections", type=int, default=64)
    args = p.parse_args()
    from tests.conftest import TINY, make_artifact

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(make_artifact(Path(tmp) / "model", random_init=TINY))
        url = start_graph(model, max_in_flight=16)
        try:
            print("overload:", overload(url, args.seconds, args.connections))  # noqa: T201
            print("chaos:   ", chaos(url, args.seconds * 2, 4))  # noqa: T201
        finally:
            stop_graph()


if __name__ == "__main__":
    main()
