"""Batch scoring throughput: `train.predict` (Ray Data, actor pool) against the in-process limit on
the same texts, side by side in one run.

    python -m bench.predict [--rows 16000] [--model DIR] [--configs 1x2,2x1]

The limit is one process scoring the texts batch by batch with the very code the actors run
(train.evaluate.predict: encode, length-sorted forward passes, softmax; torch with 1 and 2 threads,
the better counts). train.predict then scores the same texts from a Parquet file on a local Ray
cluster of the machine's cores, timed from the call to the last row written, actor start-up and
model loads included (the cluster itself is started before, as the command starts it: the cores
plus one logical CPU for Ray Data's own tasks). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.common import SST2

# shared/ sits beside the checkout, or beside the folder of worktrees.
SST2 = next((p / "shared/data/sst2" for p in Path(__file__).resolve().parents if (p / "shared/data/sst2").is_dir()), SST2)

CONFIGS = "1x2,2x1"  # ACTORSxCPUS (CPUs per actor = its torch threads)


def sst2_texts(rows: int) -> list[str]:
    lines = (SST2 / "train.tsv").read_text().splitlines()[1:]
    texts = [line.split("\t")[0].strip() for line in lines]
    return [t for t in texts if t][:rows]


def in_process(model: str, texts: list[str]) -> dict[int, float]:
    import torch

    from train.artifact import read_info
    from train.evaluate import predict

    info = read_info(model)
    predict(info, texts[:256])  # load and warm up once, outside the clock
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        started = time.perf_counter()
        predict(info, texts)
        out[threads] = len(texts) / (time.perf_counter() - started)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=16000)
    p.add_argument("--model", help="artifact (default: the packaged MiniLM with an untrained head, max_length 128)")
    p.add_argument("--configs", default=CONFIGS, help="pools to time, ACTORSxCPUS comma-separated")
    args = p.parse_args()
    configs = [tuple(int(n) for n in c.split("x")) for c in args.configs.split(",")]
    import pandas as pd
    import ray

    from train.predict import predict, start_local_ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model:
            model = args.model
        else:
            from tests.conftest import make_artifact

            model = str(make_artifact(tmp / "minilm", max_length=128))
        texts = sst2_texts(args.rows)
        pd.DataFrame({"text": texts}).to_parquet(tmp / "in.parquet")
        limit = in_process(model, texts)
        best = max(limit.values())
        start_local_ray()  # as the command starts it, before the clock
        rows = []
        try:
            for actors, cpus in configs:
                out = tmp / f"out-{actors}x{cpus}.parquet"
                started = time.perf_counter()
                predict(model, str(tmp / "in.parquet"), "text", str(out), num_workers=actors, cpus_per_worker=cpus)
                seconds = time.perf_counter() - started
                assert len(pd.read_parquet(out)) == len(texts)
                rows.append((actors, cpus, len(texts) / seconds, seconds))
        finally:
            ray.shutdown()
    print(f"Run {os.uname().machine}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, "  # noqa: T201
          f"`python -m bench.predict --rows {args.rows} --configs {args.configs}` ({len(texts)} SST-2 train texts, MiniLM, max_length 128).\n")
    print("| system | texts/s | share of the limit | wall |")  # noqa: T201
    print("|---|---|---|---|")  # noqa: T201
    for threads, tps in limit.items():
        print(f"| in-process, {threads} torch thread{'s' if threads > 1 else ''} | {tps:.0f} | {tps / best:.2f} | |")  # noqa: T201
    for actors, cpus, tps, seconds in rows:
        print(f"| train.predict, {actors} actor{'s' if actors > 1 else ''} x {cpus} CPU | {tps:.0f} | "  # noqa: T201
              f"{tps / best:.2f} | {seconds:.1f} s |")


if __name__ == "__main__":
    main()
