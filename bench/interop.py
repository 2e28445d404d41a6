"""Texts/s of the interop routes against /v1/classify on the same graph, in one run.

    python -m bench.interop [--rounds 3] [--duration 10] [--model DIR]

Starts the graph as `make serve` does (`serve run serve_config.yaml` with app/serve.env), then
runs wrk's W1 c=64 (one short SST-2 text per request, 64 connections) on /v1/classify, HF
(`POST /models/{name}`), OIP v2 with JSON tensors and v2 with binary tensors (as tritonclient
sends them), interleaved round by round, each round starting at the next route, so drift on the
shared machine hits every route alike.
Prints a Markdown table: per route the best round's texts/s, its ratio to /v1/classify's best and
its p50/p99 latency. Every request must answer 200 (wrk counts others as non2xx; they fail the run).

`--handlers` instead times, in this process and without Ray, each route's own work for a one-text
request (parse the body, build Job, answer from fixed predictions): the per-protocol ingress cost.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from app.serve_configs import serve_env
from bench import run
from tests.conftest import wait_ready

ROUTES = {"/v1/classify": "v1", "HF /models/{name}": "hf", "v2 infer (JSON)": "v2", "v2 infer (binary)": "v2bin"}


def handler_costs(n: int = 20_000) -> None:
    import asyncio
    import json
    import time
    import types

    from app.config import AppArgs
    from app.ingress import Ingress
    from app.protocols import hf, oip

    cls, text = Ingress.func_or_class, "a gripping , funny and moving film about friendship"
    preds = [{"label": "positive", "score": 0.9, "scores": [{"label": "positive", "score": 0.9},
              {"label": "negative", "score": 0.1}], "truncated": False, "tokens": 12}]
    ingress = types.SimpleNamespace(args=AppArgs(), info=types.SimpleNamespace(
        labels=["negative", "positive"], version="0" * 64, multi_label=False, max_length=128))
    ingress.check_count = lambda items, field: cls.check_count(ingress, items, field)
    ingress._parse = lambda body: cls._parse(ingress, body)
    bodies = {
        "/v1/classify": (("POST", "/v1/classify"), {"texts": [text]}),
        "HF /models/{name}": (("POST", "/models/text-classifier"), {"inputs": text, "parameters": {}}),
        "v2 infer (JSON)": (("POST", "/v2/models/text-classifier/infer"),
                            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}),
    }
    routes = hf.routes(ingress) | oip.routes(ingress)
    routes[("POST", "/v1/classify")] = types.SimpleNamespace(handler=lambda scope, receive: cls._classify_http(ingress, scope, receive))

    async def measure():
        for name, (key, body) in bodies.items():
            raw = json.dumps(body).encode()

            async def infer(scope, receive, parse, raw=raw):
                return parse(raw)[1], preds
            ingress.infer = infer
            started = time.perf_counter()
            for _ in range(n):
                await routes[key].handler({"headers": []}, None)
            print(f"| {name} | {(time.perf_counter() - started) / n * 1e6:.1f} µs |")
    print("| route | parse + answer, one text |\n|---|---|")
    asyncio.run(measure())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--model", help="artifact directory (default: the packaged MiniLM, untrained head, max_length 128)")
    p.add_argument("--handlers", action="store_true", help="time each route's own parse/answer work in-process")
    args = p.parse_args()
    if args.handlers:
        handler_costs()
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files, model = run.texts(tmp), run.bench_model(args.model, tmp)
        proc, url, _ = run.start_serve_run(model, tmp, serve_env())
        try:
            wait_ready(url, proc)
            os.environ["MODEL"] = "text-classifier"
            rounds = {name: [] for name in ROUTES}
            for protocol in ROUTES.values():  # warm every route's path
                os.environ["PROTOCOL"] = protocol
                run.wrk(url, files["short"], 1, 4, 2)
            names = list(ROUTES)
            for r in range(args.rounds):
                # Each round starts at another route, so no route always runs first (or last).
                for name in names[r % len(names):] + names[: r % len(names)]:
                    protocol = ROUTES[name]
                    os.environ["PROTOCOL"] = protocol
                    stats = run.wrk(url, files["short"], 1, args.connections, args.duration)
                    if stats["non2xx"] or stats["socket_errors"]:
                        raise RuntimeError(f"{name}: {stats}")
                    rounds[name].append(stats)
        finally:
            run.stop(proc, url)
    base = max(s["texts_per_s"] for s in rounds["/v1/classify"])
    print(f"W1 c={args.connections}, {args.rounds} interleaved rounds of {args.duration:.0f} s; best round per route\n")
    print("| route | texts/s (best) | all rounds | vs /v1/classify | p50 ms | p99 ms |\n|---|---|---|---|---|---|")
    for name, stats in rounds.items():
        best = max(stats, key=lambda s: s["texts_per_s"])
        every = " / ".join(f"{s['texts_per_s']:.0f}" for s in stats)
        print(f"| {name} | {best['texts_per_s']:.0f} | {every} | {best['texts_per_s'] / base:.0%} | "
              f"{best['p50_ms']:.0f} | {best['p99_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
