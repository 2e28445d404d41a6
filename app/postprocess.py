"""Postprocessor stage: logits -> probabilities -> labels, top-k sorted by score."""
from __future__ import annotations

import numpy as np
from ray import serve

from app.artifact_source import local_artifact
from train.artifact import read_info


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # no overflow for large logits
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only, whatever the sign of the logit.
    neg = np.exp(-np.abs(logits))
    return np.where(logits >= 0, 1 / (1 + neg), neg / (1 + neg))


def predictions(logits: np.ndarray, labels: list[str], top_k: list[int | None], multi_label: bool) -> list[dict]:
    probs = sigmoid(logits) if multi_label else softmax(logits)
    order = np.argsort(-probs, axis=1, kind="stable")
    out = []
    for row, k in zip(range(len(probs)), top_k):
        ranked = order[row][: k or len(labels)]
        scores = [{"label": labels[i], "score": float(probs[row, i])} for i in ranked]
        out.append({"label": scores[0]["label"], "score": scores[0]["score"], "scores": scores})
    return out


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Postprocessor:
    def __init__(self, model: str):
        info = read_info(local_artifact(model))
        self.labels, self.multi_label = info.labels, info.multi_label

    def run(self, logits: np.ndarray, top_k: list[int | None]) -> list[dict]:
        return predictions(logits, self.labels, top_k, self.multi_label)

    def ping(self) -> bool:
        return True
