"""Tokenizer stage: texts -> token ids (flat int32), lengths and truncation flags, as numpy arrays."""
from __future__ import annotations

import numpy as np
from ray import serve

from app.artifact_source import local_artifact
from app.compute import encode
from train.artifact import load_tokenizer, read_info


@serve.deployment  # resources, scaling and queues: serve_config.yaml
class Tokenizer:
    def __init__(self, model: str):
        info = read_info(local_artifact(model))
        self.tokenizer = load_tokenizer(info)
        self.max_length = info.max_length

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        return encode(self.tokenizer, texts, self.max_length)

    def ping(self) -> bool:
        return True
