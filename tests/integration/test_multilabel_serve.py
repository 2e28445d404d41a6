"""A multi-label artifact served by the shipped graph: labels over their tuned thresholds, over HTTP."""
import json
from contextlib import nullcontext

import numpy as np
import pytest
import ray
import requests
import torch
from ray import serve

from app import compute
from app.config import AppArgs
from tests.conftest import TINY, free_port, shipped_graph
from train.artifact import export
from train.model import build

pytestmark = pytest.mark.slow
LABELS = ["business", "sports", "tech"]
TEXTS = ["shares fell as the market closed", "the striker scored a late goal"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, thresholds, sigmoid scores of TEXTS). The thresholds are set from the scores so that
    the outcome is known: business passes for the text that scores it higher, sports and tech
    for neither; so one text gets one label and the other none."""
    torch.manual_seed(0)
    # Large initial weights make the scores depend on the text (small ones give ~0.5 everywhere).
    model, tokenizer = build("all-MiniLM-L6-v2", LABELS, {**TINY, "initializer_range": 0.5}, multi_label=True)
    enc = compute.encode(tokenizer, TEXTS, 32)
    logits, _ = compute.logits(model.eval(), enc, tokenizer.pad_token_id, torch.device("cpu"), nullcontext, 8, 4096)
    probs = compute.sigmoid(logits)
    assert abs(probs[0, 0] - probs[1, 0]) > 0.01, "the two texts must score business apart"
    thresholds = {"business": float(probs[:, 0].mean()),
                  "sports": float(min(1.0, probs[:, 1].max() + 0.01)), "tech": float(min(1.0, probs[:, 2].max() + 0.01))}
    path = tmp_path_factory.mktemp("multi") / "model"
    export(model, tokenizer, path, {"base_model": "all-MiniLM-L6-v2", "max_length": 32, "labels": LABELS},
           {"note": "untrained multi-label test artifact"}, calibration={"thresholds": thresholds})

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False,
             log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(shipped_graph(AppArgs(model=str(path), name="topics")), name="classifier", route_prefix="/")
    yield f"http://127.0.0.1:{port}", thresholds, probs
    serve.shutdown()
    ray.shutdown()


def classify(url, body):
    response = requests.post(f"{url}/v1/classify", data=json.dumps(body),
                             headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_labels_over_their_thresholds_or_none(served):
    url, thresholds, probs = served
    winner = int(np.argmax(probs[:, 0]))
    preds = classify(url, {"texts": TEXTS})
    hit, miss = preds[winner], preds[1 - winner]
    assert [s["label"] for s in hit["labels"]] == ["business"]
    assert hit["label"] == "business" and hit["score"] == pytest.approx(float(probs[winner, 0]), abs=1e-4)
    assert hit["score"] >= thresholds["business"]
    # No label reaches its threshold: no decision, but the scores are still there.
    assert miss["labels"] == [] and miss["label"] is None and miss["score"] is None
    assert len(miss["scores"]) == 1  # top_k defaults to 1


def test_every_score_when_asked(served):
    url, _, probs = served
    (pred,) = classify(url, {"text": TEXTS[0], "top_k": None})
    assert {s["label"]: round(s["score"], 4) for s in pred["scores"]} == {
        label: round(float(p), 4) for label, p in zip(LABELS, probs[0])}
    scores = [s["score"] for s in pred["scores"]]
    assert scores == sorted(scores, reverse=True) and sum(scores) != pytest.approx(1.0)  # sigmoid, not softmax


def test_model_info_shows_the_thresholds(served):
    url, thresholds, _ = served
    info = requests.get(f"{url}/v1/model", timeout=10).json()
    assert info["multi_label"] is True and info["temperature"] is None
    assert info["thresholds"] == pytest.approx(thresholds)
