"""Postprocessor stage: logits -> probabilities -> labels, top-k sorted by score."""
from __future__ import annotations

import numpy as np
from ray import serve

from app.artifact_source import local_artifact
from app.compute import predictions
from train.artifact import read_info


@serve.deployment  # resources, scaling and queues: serve_config.yaml
class Postprocessor:
    def __init__(self, model: str):
        info = read_info(local_artifact(model))
        self.labels, self.multi_label = info.labels, info.multi_label

    def run(self, logits: np.ndarray, top_k: list[int | None]) -> list[dict]:
        return predictions(logits, self.labels, top_k, self.multi_label)

    def ping(self) -> bool:
        return True
