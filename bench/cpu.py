"""Where the CPU goes: per-process CPU time per request while wrk drives the graph.

    python -m bench.cpu [--connections 64] [--seconds 10] [--proxy] [--model DIR]

Starts the graph as bench.run does (`serve run` with app/serve.env; --proxy: Serve's Python proxy),
warms it, then reads every process's user+system CPU from /proc before and after one wrk run and
prints each process's share of the machine and its CPU milliseconds per request.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from app.serve_configs import serve_env
from bench.run import bench_model, start_serve_run, stats, stop, texts, wrk
from tests.conftest import wait_ready

HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[int, tuple[str, float]]:
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        out[int(entry.name)] = (command, (int(fields[11]) + int(fields[12])) / HZ)  # utime + stime
    return out


def label(command: str) -> str:
    if command.startswith("ray::"):  # the title names the method running: keep the actor's name
        return command.split()[0].split(".")[0]
    return Path(command.split()[0]).name if command else "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--proxy", action="store_true", help="Serve's Python proxy instead of app/serve.env's HAProxy")
    p.add_argument("--model", help="artifact (default: the packaged MiniLM, untrained head, max_length 128)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = bench_model(args.model, tmp)
        files = texts(tmp)
        proc, url, _ = start_serve_run(model, tmp, {} if args.proxy else serve_env())
        try:
            wait_ready(url, proc)
            stats(url, timeout=120)  # every classifier replica up
            wrk(url, files["short"], 1, args.connections, 3)  # warm-up
            before, started = cpu_seconds(), time.monotonic()
            result = wrk(url, files["short"], 1, args.connections, args.seconds)
            after, elapsed = cpu_seconds(), time.monotonic() - started
        finally:
            stop(proc, url)
    requests_done = result["requests"]
    rows = {}
    for pid, (command, seconds) in after.items():
        used = seconds - before.get(pid, (command, 0.0))[1]
        if used > 0:
            rows[label(command)] = rows.get(label(command), 0.0) + used
    print(f"W1 c={args.connections}, {'proxy' if args.proxy else 'HAProxy'}: {requests_done / elapsed:.0f} req/s, "  # noqa: T201
          f"p50 {result['p50_ms']:.0f} ms (wrk's own CPU is not counted: it exits before the second reading)\n")
    print("| process | share of the machine | CPU ms per request |\n|---|---|---|")  # noqa: T201
    total = 0.0
    for name, used in sorted(rows.items(), key=lambda kv: -kv[1]):
        total += used
        if used / elapsed >= 0.005:
            print(f"| {name} | {used / elapsed / os.cpu_count():.1%} | {used * 1000 / requests_done:.2f} |")  # noqa: T201
    print(f"| all | {total / elapsed / os.cpu_count():.1%} | {total * 1000 / requests_done:.2f} |")  # noqa: T201


if __name__ == "__main__":
    main()
