"""Tokenizer stage: texts -> token ids (flat int32), lengths and truncation flags, as numpy arrays."""
from __future__ import annotations

from ray import serve

from app.artifact_source import load_info
from app.compute import encode
from train.artifact import load_tokenizer


@serve.deployment  # resources, scaling and queues: serve_config.yaml
class Tokenizer:
    def __init__(self, model: str, verify_key_file: str | None = None):
        info = load_info(model, verify_key_file)
        self.tokenizer = load_tokenizer(info)
        self.max_length, self.version = info.max_length, info.version

    # async: Serve runs a sync method in a thread pool, and the hand-off cost more CPU per call
    # than tokenizing a coalesced batch of short texts (bench/flame, issue #11).
    async def encode(self, texts: list[str]) -> dict:
        # Stamped with the artifact version: the later stages refuse another one (app/rollout.py).
        return encode(self.tokenizer, texts, self.max_length) | {"version": self.version}

    def ping(self) -> bool:
        return True
