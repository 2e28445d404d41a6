"""Postprocessor stage: logits -> probabilities -> labels, top-k sorted by score; the artifact's
calibration (temperature or per-label thresholds, calibration.json) applied here."""
from __future__ import annotations

import numpy as np
from ray import serve

from app.artifact_source import load_info
from app.compute import predictions
from app.rollout import check


@serve.deployment  # resources, scaling and queues: serve_config.yaml
class Postprocessor:
    def __init__(self, model: str, verify_key_file: str | None = None):
        info = load_info(model, verify_key_file)
        self.labels, self.multi_label, self.version = info.labels, info.multi_label, info.version
        self.temperature, self.thresholds = info.temperature, info.thresholds

    # async: a softmax over a batch takes microseconds; Serve's thread-pool hand-off for a sync
    # method took far longer (bench/flame, issue #11).
    async def run(self, logits: np.ndarray, top_k: list[int | None], version: str,
                  activation: list[str | None] | None = None) -> list[dict]:
        check("Postprocessor", version, self.version)  # labels of another artifact would be wrong
        return predictions(logits, self.labels, top_k, self.multi_label, activation,
                           temperature=self.temperature, thresholds=self.thresholds)

    def ping(self) -> bool:
        return True
