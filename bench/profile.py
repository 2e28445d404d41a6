"""Flame graphs of the serving graph under load, and where its CPU goes per request.

    python -m bench.profile [--model DIR] [--texts FILE] [--connections 64] [--seconds 15] [--out bench/flame]

Starts the graph as `make serve` does (`serve run` with app/serve.env), drives it with wrk, and
meanwhile samples every Serve replica and HAProxy-side Ray process with `py-spy record`
(non-blocking, so the sampled processes are not paused). Writes one SVG per role
(`<role>.svg`: Ingress, Tokenizer, Classifier, Postprocessor, ServeController) and `cpu.md`, the
CPU milliseconds per request of every process group in the same window. Needs wrk and py-spy.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from app.serve_configs import serve_env
from bench.cpu import cpu_seconds, label
from bench.run import bench_model, start_serve_run, stats, stop, texts, wrk
from tests.conftest import wait_ready

ROLES = ("Ingress", "Tokenizer", "Classifier", "Postprocessor", "ServeController")


def descendants(pid: int) -> dict[int, str]:
    """Every process under pid (the serve run it started: GCS, raylet, workers), with its title."""
    parents, titles = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                titles[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:  # gone meanwhile
                continue
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = titles[child]
                frontier.append(child)
    return found


def role_of(title: str) -> str | None:
    # Ray titles a replica's process `ray::ServeReplica:<app>:<Deployment>`.
    return next((role for role in ROLES if title.startswith("ray::") and title.split(".")[0].endswith(role)), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", help="artifact (default: the packaged MiniLM, untrained head, max_length 128)")
    p.add_argument("--texts", type=Path, help="one text per line (default: SST-2 phrases, as bench.run)")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--rate", type=int, default=50, help="py-spy samples per second (each sample costs CPU)")
    p.add_argument("--format", choices=("flamegraph", "raw"), default="flamegraph",
                   help="raw: collapsed stacks (.txt), for reading or diffing")
    p.add_argument("--roles", default=",".join(ROLES), help="comma-separated roles to sample")
    p.add_argument("--out", type=Path, default=Path("bench/flame"))
    args = p.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(os.sys.executable).parent / "py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = bench_model(args.model, tmp)
        text_file = args.texts or texts(tmp)["short"]
        proc, url, log = start_serve_run(model, tmp, serve_env())
        try:
            wait_ready(url, proc)
            stats(url, timeout=120)
            wrk(url, text_file, 1, args.connections, 3)  # warm-up
            targets: dict[str, list[int]] = {}
            for child, title in descendants(proc.pid).items():
                role = role_of(title)
                if role in args.roles.split(","):
                    targets.setdefault(role, []).append(child)
            spies = []
            for role, pids in targets.items():
                for i, pid in enumerate(pids):
                    name = role if len(pids) == 1 else f"{role}-{i + 1}"
                    spies.append(subprocess.Popen(
                        [py_spy, "record", "--pid", str(pid), "--duration", str(round(args.seconds)),
                         "--rate", str(args.rate), "--nonblocking", "--format", args.format,
                         "--output", str(args.out / f"{name}.{'svg' if args.format == 'flamegraph' else 'txt'}")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            before, started = cpu_seconds(), time.monotonic()
            result = wrk(url, text_file, 1, args.connections, args.seconds)
            after, elapsed = cpu_seconds(), time.monotonic() - started
            for spy in spies:
                spy.wait(60)
            counters = stats(url)
        finally:
            stop(proc, url)
    done = result["requests"]
    rows: dict[str, float] = {}
    for pid, (command, seconds) in after.items():
        used = seconds - before.get(pid, (command, 0.0))[1]
        if used > 0:
            rows[label(command)] = rows.get(label(command), 0.0) + used
    lines = [f"W1 c={args.connections}: {done / elapsed:.0f} req/s, p50 {result['p50_ms']:.0f} ms, "
             f"{counters['texts'] / max(1, counters['forwards']):.1f} texts per forward pass "
             f"(py-spy sampling at {args.rate}/s costs a little CPU in every process)", "",
             "| process | cores | CPU ms per request |", "|---|---|---|"]
    total = 0.0
    for name, used in sorted(rows.items(), key=lambda kv: -kv[1]):
        total += used
        if used / elapsed >= 0.005:
            lines.append(f"| {name} | {used / elapsed:.2f} | {used * 1000 / done:.2f} |")
    lines.append(f"| all | {total / elapsed:.2f} | {total * 1000 / done:.2f} |")
    (args.out / "cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
