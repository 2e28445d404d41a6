"""What an explanation costs, and what it does to classification beside it.

    python -m bench.explain [--model models/demo/model] [--duration 10] [--rounds 2]

1. In this process, one torch thread (as the Explainer replica runs): CPU seconds per explanation
   of a 20-token text at 16, 32 and 64 integrated-gradients steps, and for occlusion, with the
   completeness delta.
2. `serve run serve_config.yaml` with app/serve.env (as `make serve`): the first explanation's
   wait while the Explainer scales up from zero, then W1 c=16 (wrk: 16 connections of one short
   text each) without and with one client explaining back to back beside it, in interleaved rounds.

Writes bench/results/explain.json and prints a Markdown summary. Needs `wrk`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests

from app.serve_configs import serve_env
from bench.run import OUT, ROOT, start_serve_run, stop, texts, wrk
from tests.conftest import wait_ready

# Exactly 20 tokens with [CLS] and [SEP] for the MiniLM tokenizer (checked below).
TEXT = "A triumph of style and feeling, though the second half drags and the ending feels far too neat."


def twenty_tokens(tokenizer) -> str:
    words = TEXT.split()
    while len(tokenizer(" ".join(words))["input_ids"]) > 20:
        words.pop()
    text = " ".join(words)
    assert len(tokenizer(text)["input_ids"]) == 20, text
    return text


def cpu_per_explanation(model_dir: str, reps: int = 3) -> dict:
    import torch

    from app import attribution
    from train.artifact import load_model, load_tokenizer, read_info

    torch.set_num_threads(1)
    info = read_info(model_dir)
    model, tokenizer = load_model(info), load_tokenizer(info)
    text = twenty_tokens(tokenizer)
    out = {"text": text}
    for method, steps in [("integrated_gradients", 16), ("integrated_gradients", 32),
                          ("integrated_gradients", 64), ("occlusion", 0)]:
        attribution.explain(model, tokenizer, text, info.max_length, None, info.multi_label, method, steps)  # warm
        seconds, deltas = [], []
        for _ in range(reps):
            started = time.process_time()
            result = attribution.explain(model, tokenizer, text, info.max_length, None, info.multi_label, method, steps)
            seconds.append(time.process_time() - started)
            deltas.append(abs(result["completeness"]["delta"]) if result["completeness"] else None)
        name = f"ig{steps}" if steps else method
        out[name] = {"cpu_s_median": statistics.median(seconds), "cpu_s": seconds, "abs_delta": deltas[0],
                     "expected": result["completeness"]["expected"] if result["completeness"] else None}
    return out


def explain_loop(url: str, text: str, stop_at: threading.Event, log: list) -> None:
    while not stop_at.is_set():
        started = time.perf_counter()
        response = requests.post(f"{url}/v1/explain", json={"text": text}, timeout=60)
        log.append((response.status_code, time.perf_counter() - started))


def beside(model: str, seconds: float, rounds: int, text: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    files = texts(tmp)
    proc, url, _ = start_serve_run(model, tmp, serve_env())
    try:
        result = {"ready_s": wait_ready(url, proc)}
        started = time.perf_counter()
        first = requests.post(f"{url}/v1/explain", json={"text": text}, timeout=120)
        result["first_explain_s"] = time.perf_counter() - started  # the Explainer scales up from zero
        assert first.status_code == 200, first.text
        result["first_answer"] = first.json()  # the README's example answer
        started = time.perf_counter()
        requests.post(f"{url}/v1/explain", json={"text": text}, timeout=60)
        result["warm_explain_s"] = time.perf_counter() - started
        wrk(url, files["short"], 1, 4, 2)  # warm the classify path
        result["without"], result["with"] = [], []
        for _ in range(rounds):
            result["without"].append(wrk(url, files["short"], 1, 16, seconds)["texts_per_s"])
            stop_at, log = threading.Event(), []
            explainer = threading.Thread(target=explain_loop, args=(url, text, stop_at, log))
            explainer.start()
            result["with"].append(wrk(url, files["short"], 1, 16, seconds)["texts_per_s"])
            stop_at.set()
            explainer.join()
            ok = [s for status, s in log if status == 200]
            result.setdefault("explains", []).append({"done": len(ok), "statuses": sorted({s for s, _ in log}),
                                                      "median_s": statistics.median(ok) if ok else None})
        return result
    finally:
        stop(proc, url)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "models" / "demo" / "model"))
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--skip-serve", action="store_true", help="only the in-process CPU figures")
    args = p.parse_args(argv)
    cpu = cpu_per_explanation(args.model)
    result = {"cpu": cpu}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "explain.json").write_text(json.dumps(result, indent=2) + "\n")
    if not args.skip_serve:
        result["serve"] = beside(args.model, args.duration, args.rounds, cpu["text"])
        (OUT / "explain.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| method | CPU s (median of 3) | abs completeness delta |\n|---|---|---|")  # noqa: T201
    for name in ("ig16", "ig32", "ig64", "occlusion"):
        row = cpu[name]
        delta = f"{row['abs_delta']:.1e}" if row["abs_delta"] is not None else "n/a"
        print(f"| {name} | {row['cpu_s_median']:.3f} | {delta} |")  # noqa: T201
    if "serve" in result:
        s = result["serve"]
        print(f"\nfirst explanation (scale from zero) {s['first_explain_s']:.1f} s, warm {s['warm_explain_s']:.2f} s")  # noqa: T201
        print(f"W1 c=16 texts/s without: {s['without']}, with: {s['with']}; explains: {s['explains']}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
