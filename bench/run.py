"""The benchmark suite: the in-process limit, the project's graph (started with `serve run` from
serve_config.yaml with app/serve.env, as `make serve` starts it), the same graph behind Serve's
default Python proxy, and a naive one-process FastAPI app, under the same wrk workloads, in
interleaved rounds, side by side in one run.

    python -m bench.run [--rounds 2] [--duration 10] [--model DIR]

Writes bench/results/latest.{json,md,png} and the table into bench/README.md. Needs `wrk`
(Debian: apt-get install wrk). Every server listens on 127.0.0.1 only.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
import yaml

from app.haproxy import wait_port_closed
from app.serve_configs import serve_env
from bench.common import SST2
from tests.conftest import wait_ready

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "classify.lua"
# (name, text file, texts per request, connections)
WORKLOADS = [
    ("W1 c=1", "short", 1, 1), ("W1 c=16", "short", 1, 16), ("W1 c=64", "short", 1, 64),
    ("W2 32/req c=4", "short", 32, 4), ("W3 long c=16", "long", 1, 16), ("W4 mixed c=16", "mixed", 1, 16),
]


def texts(tmp: Path) -> dict[str, Path]:
    """Varied texts: SST-2 phrases (~12 tokens) and dev sentences joined to ~128 tokens."""
    if SST2.exists():
        train = [l.split("\t")[0].strip() for l in (SST2 / "train.tsv").read_text().splitlines()[1:]]
        dev = [l.split("\t")[0].strip() for l in (SST2 / "dev.tsv").read_text().splitlines()[1:]]
    else:  # the demo data, when the SST-2 copy is not beside the project
        import pandas as pd

        rows = pd.read_csv(ROOT / "data" / "rotten_tomatoes.csv")["text"].tolist()
        train, dev = rows, rows
    short = [t for t in train if 8 <= len(t.split()) <= 12][:5000]
    long, current = [], []
    for sentence in dev:
        current.append(sentence)
        if sum(len(s.split()) for s in current) >= 100:
            long.append(" ".join(current))
            current = []
    mixed = [t for pair in zip(short, long * (len(short) // max(1, len(long)) + 1)) for t in pair]
    files = {}
    for name, rows in (("short", short), ("long", long), ("mixed", mixed)):
        files[name] = tmp / f"{name}.txt"
        files[name].write_text("\n".join(rows) + "\n")
    return files


def bench_model(model: str | None, tmp: Path) -> str:
    """The given artifact, or the packaged MiniLM with an untrained head and max_length 128."""
    if model:
        return model
    from tests.conftest import make_artifact

    return str(make_artifact(tmp / "minilm", max_length=128))


def wrk(url: str, text_file: Path, batch: int, connections: int, seconds: float) -> dict:
    env = dict(os.environ, TEXTS=str(text_file), BATCH=str(batch))
    run = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(LUA), url],
                         capture_output=True, text=True, env=env, timeout=seconds + 60)
    found = re.search(r"^JSON (.*)$", run.stdout, re.M)
    if not found:
        raise RuntimeError(f"wrk gave no result for {url}: {run.stdout[-500:]} {run.stderr[-500:]}")
    stats = json.loads(found.group(1))
    stats["requests_per_s"] = stats["requests"] / stats["duration_s"]
    stats["texts_per_s"] = (stats["requests"] - stats["non2xx"]) * batch / stats["duration_s"]
    return stats


def stop(proc: subprocess.Popen, url: str) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    # An HAProxy that Ray's shutdown missed would hold the port for the next system.
    if not wait_port_closed(urlsplit(url).port):
        print(f"{url} still answers after its server stopped", file=sys.stderr)  # noqa: T201


def start_serve_run(model: str, tmp: Path, mode_env: dict[str, str]) -> tuple[subprocess.Popen, str, Path]:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["applications"][0]["args"]["model"] = model
    config["applications"][0]["args"]["max_items"] = 1024
    path = tmp / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / "serve.log"
    mode_keys = serve_env().keys()  # the other mode's variables must not leak in from the shell
    env = {k: v for k, v in os.environ.items() if k not in mode_keys}
    env.update(mode_env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "serve"), "run", str(path)], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{config['http_options']['port']}", log


def start_naive(model: str, tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    log = tmp / "naive.log"
    proc = subprocess.Popen([sys.executable, "-m", "bench.naive_server", "--model", model, "--port", "8100"],
                            cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, "http://127.0.0.1:8100", log


def in_process_limit(model: str, files: dict[str, Path]) -> dict:
    """tokenize + forward + softmax in this process: the ceiling any server can reach here."""
    import torch

    from app.compute import encode, pad, softmax, split_rows
    from train.artifact import load_model, load_tokenizer, read_info

    info = read_info(model)
    net, tok = load_model(info), load_tokenizer(info)
    result = {}
    for kind in ("short", "long"):
        rows = files[kind].read_text().splitlines()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch in (1, 8, 32, 128):
                done, started = 0, time.perf_counter()
                while time.perf_counter() - started < 3:
                    chunk = rows[done % len(rows):][:batch] or rows[:batch]
                    ids, mask = pad(split_rows(encode(tok, chunk, info.max_length)), info.pad_token_id)
                    with torch.inference_mode():
                        softmax(net(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy())
                    done += len(chunk)
                result[f"{kind} threads={threads} batch={batch}"] = done / (time.perf_counter() - started)
    return result


@functools.cache
def classifier_replicas() -> int:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (classifier,) = [d for d in config["applications"][0]["deployments"] if d["name"] == "Classifier"]
    return classifier.get("autoscaling_config", {}).get("min_replicas") or classifier.get("num_replicas", 1)


def stats(url: str, timeout: float = 60) -> dict:
    """The classifier counters summed over every replica. Right after a load a replica may still
    work off its queue and the router then sends every stats call to the idle one: ask again."""
    wanted, deadline = classifier_replicas(), time.monotonic() + timeout
    while True:
        found = requests.get(f"{url}/v1/stats", timeout=10).json()["classifier"]
        if found["replicas"] >= wanted:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"/v1/stats reached {found['replicas']} of {wanted} classifier replicas in {timeout} s")
        time.sleep(1)


# name -> how it starts. "graph" is what users run (make serve); "graph-proxy" is the same graph
# behind Serve's default Python proxy, kept to show what app/serve.env buys.
SYSTEMS = {
    "graph": lambda model, tmp: start_serve_run(model, tmp, serve_env()),
    "graph-proxy": lambda model, tmp: start_serve_run(model, tmp, {}),
    "naive": start_naive,
}


def run_system(name: str, model: str, files, tmp: Path, seconds: float) -> dict:
    proc, url, log = SYSTEMS[name](model, tmp)
    try:
        cold = wait_ready(url, proc)
        if name.startswith("graph"):
            stats(url, timeout=120)  # /readyz needs one replica per stage: wait for all of them
        wrk(url, files["short"], 1, 4, 2)  # warm the request path
        rows = {"cold_start_s": cold}
        for wname, kind, batch, conns in WORKLOADS:
            before = stats(url) if name.startswith("graph") else None
            rows[wname] = wrk(url, files[kind], batch, conns, seconds)
            if before:
                after = stats(url)
                forwards = max(1, after["forwards"] - before["forwards"])
                rows[wname]["mean_forward_batch"] = (after["texts"] - before["texts"]) / forwards
                real = after["tokens"] - before["tokens"]
                rows[wname]["padding_waste"] = 1 - real / max(1, after["padded_tokens"] - before["padded_tokens"])
        return rows
    finally:
        stop(proc, url)


def best(values: list[float]) -> float:
    return max(values) if values else 0.0


def table(results: dict) -> str:
    limit = results["limit"]
    short_limit = best([v for k, v in limit.items() if k.startswith("short")])
    long_limit = best([v for k, v in limit.items() if k.startswith("long")])
    batch1 = limit["short threads=2 batch=1"]
    lines = [f"In-process limit (texts/s): short {short_limit:.0f} (batch 1: {batch1:.0f}), long {long_limit:.0f}.", "",
             "| system | " + " | ".join(w[0] for w in WORKLOADS) + " | cold start |",
             "|---" * (len(WORKLOADS) + 2) + "|"]
    for system in SYSTEMS:
        rounds = results[system]
        cells = []
        for wname, kind, _, _ in WORKLOADS:
            tps = best([r[wname]["texts_per_s"] for r in rounds])
            quietest = max(rounds, key=lambda r: r[wname]["texts_per_s"])[wname]
            ref = long_limit if kind == "long" else short_limit
            cell = f"{tps:.0f} ({tps / ref:.0%}) p50 {quietest['p50_ms']:.0f} p99 {quietest['p99_ms']:.0f} ms"
            if quietest["non2xx"] or quietest["socket_errors"]:
                cell += f" err {quietest['non2xx'] + quietest['socket_errors']}"
            if "mean_forward_batch" in quietest:
                cell += f" batch {quietest['mean_forward_batch']:.1f}"
            if "padding_waste" in quietest and kind == "mixed":
                cell += f" pad {quietest['padding_waste']:.0%}"
            cells.append(cell)
        cold = min(r["cold_start_s"] for r in rounds)
        lines.append(f"| {system} | " + " | ".join(cells) + f" | {cold:.1f} s |")
    lines += ["", "Cells: texts/s of the quietest round (share of the in-process limit), its p50/p99 latency, "
              "non-2xx or socket errors, mean texts per forward pass and padding waste (graph)."]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    conns = [1, 16, 64]
    for system in SYSTEMS:
        tps = [best([r[f"W1 c={c}"]["texts_per_s"] for r in results[system]]) for c in conns]
        ax1.plot(conns, tps, marker="o", label=system)
        quiet = [max(results[system], key=lambda r: r[f"W1 c={c}"]["texts_per_s"])[f"W1 c={c}"] for c in conns]
        for pct, style in (("p50_ms", "-"), ("p99_ms", "--")):
            ax2.plot(conns, [q[pct] for q in quiet], style, marker="o", label=f"{system} {pct[:3]}")
    limit = best([v for k, v in results["limit"].items() if k.startswith("short")])
    ax1.axhline(limit, color="grey", linestyle=":", label="in-process limit")
    ax1.set(xscale="log", xlabel="connections (W1)", ylabel="texts/s", title="Throughput")
    ax2.set(xscale="log", yscale="log", xlabel="connections (W1)", ylabel="ms", title="Latency")
    ax1.legend()
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_readme(md: str) -> None:
    readme = ROOT / "bench" / "README.md"
    text = readme.read_text()
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{begin}\n{md}\n{end}{tail}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    p.add_argument("--model", help="artifact (default: the packaged MiniLM with an untrained head, max_length 128)")
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = bench_model(args.model, tmp)
        files = texts(tmp)
        results = {"limit": in_process_limit(model, files), **{name: [] for name in SYSTEMS}}
        for _ in range(args.rounds):  # interleaved: each round measures every system once
            for name in SYSTEMS:
                results[name].append(run_system(name, model, files, tmp, args.duration))
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    (OUT / "latest.json").write_text(json.dumps(results, indent=2))
    md = f"Run {results['machine']}, `python -m bench.run --rounds {args.rounds} --duration {args.duration:g}`.\n\n"
    md += table(results)
    (OUT / "latest.md").write_text(md + "\n")
    plot(results, OUT / "latest.png")
    write_readme(md)
    print(md)  # noqa: T201


if __name__ == "__main__":
    main()
