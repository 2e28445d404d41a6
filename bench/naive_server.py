"""The reference point: a one-process FastAPI app, no batching, no Ray, the same model and stages.

    python -m bench.naive_server --model DIR --port 8100 [--threads 2]
"""
from __future__ import annotations

import argparse

import torch
import uvicorn
from fastapi import FastAPI

from app.compute import encode, pad, predictions, split_rows
from train.artifact import load_model, load_tokenizer, read_info


def build(model_dir: str) -> FastAPI:
    info = read_info(model_dir)
    model, tokenizer = load_model(info), load_tokenizer(info)
    api = FastAPI()

    @api.post("/v1/classify")
    def classify(body: dict) -> dict:  # a sync route: FastAPI runs it in its thread pool
        texts = body.get("texts") or [body["text"]]
        ids, mask = pad(split_rows(encode(tokenizer, texts, info.max_length)), info.pad_token_id)
        with torch.inference_mode():
            logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
        return {"predictions": predictions(logits, info.labels, [1] * len(texts), info.multi_label)}

    @api.get("/readyz")
    def readyz() -> dict:
        return {"status": "ready"}

    return api


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    uvicorn.run(build(args.model), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
