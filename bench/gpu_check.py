"""The GPU path, checked without Ray (the GPU machine has torch and transformers only):

1. the model stage (app.compute.logits, as the Classifier replica runs it) on CUDA with bf16
   autocast against fp32 on the CPU, for mixed-length rows: probabilities within --tolerance and
   the same top label;
2. model-stage throughput at batch 1-1024, short (16 tokens) and long (128 tokens) rows;
3. one training epoch through train.model.train_step (the Ray Train loop's step) with bf16 autocast.

    bench/gpu_check.sh [--device cuda] [--quick] [--out DIR]

The model has all-MiniLM-L6-v2's shape (6 layers, 384 wide) with seeded random weights, so the
check needs no files; token ids are random with the lengths of review-like texts. It writes
gpu_check.json to --out (default $OUT or bench/results) and exits 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from app.compute import logits, pad, predictions
from train.model import grad_scaler, mixed_precision, optimizer, train_step

MINILM = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536}
QUICK = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
VOCAB, PAD = 30522, 0


def build(shape: dict, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, num_labels=2, **shape)
    return BertForSequenceClassification(config).eval()


def rows(n: int, lengths: tuple[int, int], rng) -> dict:
    """A tokenizer-stage output: flat int32 ids ([CLS] ... [SEP]) and their lengths."""
    sizes = rng.integers(lengths[0], lengths[1] + 1, n).astype(np.int32)
    ids = [np.concatenate([[101], rng.integers(1000, VOCAB, s - 2), [102]]).astype(np.int32) for s in sizes]
    return {"ids": np.concatenate(ids), "lengths": sizes}


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def check_outputs(model, device, tolerance: float, rng) -> dict:
    enc = rows(96, (6, 128), rng)
    ref, _ = logits(model.to("cpu").float(), enc, PAD, torch.device("cpu"), nullcontext, 64, 8192)
    model.to(device)
    autocast, dtype = mixed_precision(device)
    got, passes = logits(model, enc, PAD, device, autocast, 64, 8192)
    labels = ["a", "b"]
    p_ref = np.array([[s["score"] for s in p["scores"]] for p in predictions(ref, labels, [None] * len(ref), False)])
    p_got = np.array([[s["score"] for s in p["scores"]] for p in predictions(got, labels, [None] * len(got), False)])
    top_ref, top_got = ref.argmax(1), got.argmax(1)
    # A top label may flip only where the fp32 probabilities are within the tolerance of a tie.
    flips = int(((top_ref != top_got) & (np.abs(p_ref.max(1) - 0.5) > tolerance)).sum())
    diff = float(np.abs(np.sort(p_ref, 1) - np.sort(p_got, 1)).max())
    return {"dtype": str(dtype or torch.float32), "rows": len(ref), "forward_passes": len(passes),
            "max_prob_diff": diff, "max_logit_diff": float(np.abs(ref - got).max()),
            "top_label_flips": flips, "ok": diff <= tolerance and flips == 0}


def throughput(model, device, batches: list[int], length: int, seconds: float, rng) -> dict:
    autocast, _ = mixed_precision(device)
    out = {}
    for batch in batches:
        enc = rows(batch, (length, length), rng)
        logits(model, enc, PAD, device, autocast, batch, batch * length)  # warm-up (kernels, allocator)
        sync(device)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            logits(model, enc, PAD, device, autocast, batch, batch * length)
            done += batch
        sync(device)
        out[batch] = done / (time.perf_counter() - started)
    return out


def train_epoch(model, device, n: int, batch: int, rng) -> dict:
    from transformers import get_linear_schedule_with_warmup

    model.to(device).train()
    autocast, dtype = mixed_precision(device)
    scaler = grad_scaler(dtype)
    opt = optimizer(model, 5e-5, 0.01)
    steps = n // batch
    scheduler = get_linear_schedule_with_warmup(opt, steps // 10, steps)
    enc = rows(n, (8, 64), rng)
    split = np.split(enc["ids"], np.cumsum(enc["lengths"])[:-1])
    labels = torch.from_numpy(rng.integers(0, 2, n))
    losses, started = [], time.perf_counter()
    for step in range(steps):
        ids, mask = pad(split[step * batch:(step + 1) * batch], PAD)
        inputs = {"input_ids": torch.from_numpy(ids).to(device), "attention_mask": torch.from_numpy(mask).to(device)}
        loss = train_step(model, inputs, labels[step * batch:(step + 1) * batch].to(device), opt, scheduler,
                          autocast, scaler, 1.0)
        losses.append(loss.item())
    sync(device)
    seconds = time.perf_counter() - started
    model.eval()
    finite = bool(np.isfinite(losses).all())
    return {"dtype": str(dtype or torch.float32), "steps": steps, "batch": batch, "samples_per_s": steps * batch / seconds,
            "first_loss": losses[0], "last_loss": losses[-1], "ok": finite}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a smoke run of the script)")
    p.add_argument("--quick", action="store_true", help="a tiny model and few batches: the script's own test")
    p.add_argument("--tolerance", type=float, default=0.02, help="max probability difference against fp32 CPU")
    p.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu for a smoke run")
    rng = np.random.default_rng(0)
    model = build(QUICK if args.quick else MINILM)
    batches = [1, 8] if args.quick else [1, 8, 32, 128, 256, 512, 1024]
    seconds = 0.2 if args.quick else 2.0
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "outputs": check_outputs(model, device, args.tolerance, rng),
        "throughput_short": throughput(model, device, batches, 16, seconds, rng),
        "throughput_long": throughput(model, device, batches, 128, seconds, rng),
        "train": train_epoch(build(QUICK if args.quick else MINILM), device, 256 if args.quick else 4096, 32, rng),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_check.json").write_text(json.dumps(result, indent=2))
    print(f"{result['device']}, torch {result['torch']}")  # noqa: T201
    print(f"outputs vs fp32 CPU: {result['outputs']}")  # noqa: T201
    print("| batch | short (16 tok) texts/s | long (128 tok) texts/s |\n|---|---|---|")  # noqa: T201
    for batch in batches:
        print(f"| {batch} | {result['throughput_short'][batch]:.0f} | {result['throughput_long'][batch]:.0f} |")  # noqa: T201
    print(f"training epoch: {result['train']}")  # noqa: T201
    return 0 if result["outputs"]["ok"] and result["train"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
