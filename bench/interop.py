"""Texts/s of the interop routes against /v1/classify on the same graph, in one run.

    python -m bench.interop [--rounds 3] [--duration 10] [--model DIR]

Starts the graph as `make serve` does (`serve run serve_config.yaml` with app/serve.env), then
runs wrk's W1 c=64 (one short SST-2 text per request, 64 connections) on /v1/classify, HF
(`POST /models/{name}`), OIP v2 with JSON tensors and v2 with binary tensors (as tritonclient
sends them), interleaved round by round, each round starting at the next route, so drift on the
shared machine hits every route alike.
Prints a Markdown table: per route the best round's texts/s, its ratio to /v1/classify's best and
its p50/p99 latency. Every request must answer 200 (wrk counts others as non2xx; they fail the run).
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--model", help="artifact directory (default: the packaged MiniLM, untrained head, max_length 128)")
    args = p.parse_args()
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
