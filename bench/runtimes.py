"""The model runtimes side by side, in process (no server): accuracy, speed per core, cold start.

    python -m bench.runtimes --model models/demo/model --data dev.csv [--seconds 10]

For torch, onnx and onnx-int8 (app/runtimes.py): accuracy on the labelled file and the rows whose
label differs from torch's (train.evaluate.predict, as the deploy gate scores); texts/s on one
thread for short texts (the file's first rows, ~25 tokens) and long ones (max_length tokens), in
forward passes of 64 texts as a replica runs them; and the cold start of a replica's runtime (the
load plus the warm-up) from a warm cache, median of 3 in fresh processes. Labels in the file are
the artifact's label names: SST-2 dev for the demo model (fresh/rotten) is its 1/0 labels renamed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

COLD = """
import time, numpy as np, torch
started = time.perf_counter()
from app import compute, runtimes
from app.artifact_source import cache_root
from train.artifact import read_info
info = read_info({model!r})
rt = runtimes.load(info, {runtime!r}, torch.device("cpu"), 1, cache_root())
for length in (8, 64):
    ids = np.full(length * 2, info.pad_token_id + 1, dtype=np.int32)
    compute.passes(rt.forward, {{"ids": ids, "lengths": np.array([length, length], dtype=np.int32)}}, info.pad_token_id, 64, 8192)
print(time.perf_counter() - started)
"""


def speed(rt, enc, pad_id, seconds: float) -> float:
    from app import compute

    compute.passes(rt.forward, enc, pad_id, 64, 8192)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        compute.passes(rt.forward, enc, pad_id, 64, 8192)
        done += len(enc["lengths"])
    return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.runtimes", description=__doc__)
    p.add_argument("--model", default="models/demo/model")
    p.add_argument("--data", required=True, help="CSV with text and label columns (first two)")
    p.add_argument("--seconds", type=float, default=10)
    args = p.parse_args(argv)
    import pandas as pd
    import torch

    from app import compute, runtimes
    from app.artifact_source import cache_root
    from train.artifact import load_tokenizer, read_info
    from train.evaluate import predict

    info = read_info(args.model)
    frame = pd.read_csv(args.data)
    texts, truth = frame.iloc[:, 0].str.strip().tolist(), frame.iloc[:, 1].tolist()
    tokenizer = load_tokenizer(info)
    short = compute.encode(tokenizer, texts[:64], info.max_length)
    long = compute.encode(tokenizer, [" ".join(texts[i: i + 4]) for i in range(64)], info.max_length)
    rows, reference = {}, None
    for name in runtimes.NAMES:
        labels = predict(info, texts, runtime=name)
        reference = reference or labels
        torch.set_num_threads(1)
        rt = runtimes.load(info, name, torch.device("cpu"), 1, cache_root())
        colds = sorted(float(subprocess.run([sys.executable, "-c", COLD.format(model=args.model, runtime=name)],
                                            check=True, capture_output=True, text=True).stdout.split()[-1])
                       for _ in range(3))
        rows[name] = {
            "accuracy": float(np.mean([a == b for a, b in zip(labels, truth)])),
            "differs_from_torch": sum(a != b for a, b in zip(labels, reference)),
            "short_texts_per_s": speed(rt, short, info.pad_token_id, args.seconds),
            "short_tokens": float(short["lengths"].mean()),
            "long_texts_per_s": speed(rt, long, info.pad_token_id, args.seconds),
            "long_tokens": float(long["lengths"].mean()),
            "cold_start_s": colds[1],
        }
        print(name, json.dumps(rows[name]), flush=True)  # noqa: T201 - the command's output
    print(json.dumps({"rows": len(texts), "model_version": info.version, "runtimes": rows}, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
