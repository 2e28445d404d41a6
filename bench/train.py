"""Training throughput: the Ray Train loop with 1 and 2 workers against a plain single-process torch
loop, same model (the packaged MiniLM), batch size, max length and rows (an SST-2 sample).

    python -m bench.train [--rows 1024]

The plain loop gets as many torch threads as the Ray run has workers (one CPU each), so each pair
compares the same CPU budget. Samples/s count the training loop only (no evaluation, no start-up).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.common import SST2


def plain_loop(cfg, frame: pd.DataFrame, threads: int) -> float:
    import torch
    from transformers import get_linear_schedule_with_warmup

    from train.model import build

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    labels = sorted(frame["label"].astype(str).unique())
    model, tokenizer = build(cfg.base_model, labels, cfg.random_init)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = -(-len(frame) // cfg.batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * steps), steps)
    ids = frame["label"].astype(str).map({l: i for i, l in enumerate(labels)}).to_numpy()
    started = time.monotonic()
    for i in range(0, len(frame), cfg.batch_size):
        enc = tokenizer(frame["sentence"].iloc[i: i + cfg.batch_size].tolist(), padding=True, truncation=True,
                        max_length=cfg.max_length, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor(ids[i: i + cfg.batch_size])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return len(frame) / (time.monotonic() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=1024)
    args = p.parse_args()
    import ray

    from train.config import load_config
    from train.run import fit

    frame = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3).sample(n=args.rows, random_state=0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.csv"
        frame.to_csv(data, index=False)
        for workers in (1, 2):
            cfg = load_config("default", {"data": str(data), "text_column": "sentence", "label_column": "label",
                                          "epochs": 1, "num_workers": workers, "val_fraction": 0.05})
            results[f"plain torch, {workers} thread(s)"] = plain_loop(cfg, frame, workers)
            ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
            _, _, summary = fit(cfg, Path(tmp) / f"ray{workers}")
            ray.shutdown()
            results[f"Ray Train, {workers} worker(s)"] = summary["train_samples_per_s"]
    print(f"| loop ({args.rows} SST-2 rows, MiniLM, batch 32/worker, max_length 64) | samples/s | ratio |")  # noqa: T201
    print("|---|---|---|")  # noqa: T201
    for workers in (1, 2):
        plain, ray_rate = results[f"plain torch, {workers} thread(s)"], results[f"Ray Train, {workers} worker(s)"]
        print(f"| plain torch, {workers} thread(s) | {plain:.1f} | 1.00 |")  # noqa: T201
        print(f"| Ray Train, {workers} worker(s) | {ray_rate:.1f} | {ray_rate / plain:.2f} |")  # noqa: T201


if __name__ == "__main__":
    main()
