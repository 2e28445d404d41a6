import json
import subprocess
import sys
from contextlib import nullcontext

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT
from train.evaluate import main


def test_evaluate_writes_metrics_and_plot_and_gates(tiny_artifact, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["--model", str(tiny_artifact), "--data", str(sentiment_csv), "--output", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["support"] == 200 and set(metrics["per_class"]) == {"negative", "positive"}
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "macro avg" in capsys.readouterr().out
    # An untrained model cannot reach 0.99 on a balanced set: the gate must fail.
    assert main(args + ["--min-accuracy", "0.99"]) == 1


def test_evaluate_refuses_unknown_labels(tiny_artifact, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\ngood,positive\nmeh,neutral\n")
    assert main(["--model", str(tiny_artifact), "--data", str(data), "--output", str(tmp_path / "e")]) == 2


@pytest.fixture(scope="module")
def opinionated_artifact(tmp_path_factory):
    # The tiny artifact's small initial weights answer one label for every text; large ones make
    # the answer depend on the text, so comparing answers can tell two implementations apart.
    import torch

    from tests.conftest import TINY
    from train.artifact import export
    from train.model import build

    torch.manual_seed(0)
    model, tokenizer = build("all-MiniLM-L6-v2", ["negative", "neutral", "positive"],
                             {**TINY, "initializer_range": 0.5})
    out = tmp_path_factory.mktemp("opinionated") / "model"
    export(model, tokenizer, out, {"base_model": "all-MiniLM-L6-v2", "max_length": 16}, {"note": "test"})
    return out


def test_the_gate_scores_what_serving_answers(opinionated_artifact):
    # Serving's stages, one after the other, as the replicas call them (app/tokenizer.py,
    # app/model.py, app/postprocess.py): the gate's labels must be these, text for text. The texts
    # mix lengths (several forward passes) and run past max_length (truncation).
    import torch

    from app import compute
    from app.config import ModelConfig
    from train.artifact import load_model, load_tokenizer, read_info
    from train.evaluate import predict

    info = read_info(opinionated_artifact)
    words = "good bad plot film ending boring lovely dreadful script great awful fine".split()
    texts = [" ".join(words[i % 12: i % 12 + 1 + i % 5] * (1 + i % 7)) for i in range(150)]
    enc = compute.encode(load_tokenizer(info), texts, info.max_length)
    assert enc["truncated"].any() and len(set(enc["lengths"].tolist())) > 5
    replica = ModelConfig()
    logits, passes = compute.logits(load_model(info), enc, info.pad_token_id, torch.device("cpu"), nullcontext,
                                    replica.max_batch_size, replica.max_batch_tokens)
    assert len(passes) > 1
    served = [p["label"] for p in compute.predictions(logits, info.labels, [1] * len(texts), info.multi_label)]
    assert len(set(served)) == 3
    assert predict(info, texts) == served


def test_the_gate_runs_without_ray(tiny_artifact, sentiment_csv, tmp_path):
    # train/ stays usable where only torch and transformers are installed (a CI gate, a GPU check).
    code = (
        "import sys\n"
        "from train.evaluate import main\n"
        f"assert main(['--model', {str(tiny_artifact)!r}, '--data', {str(sentiment_csv)!r},"
        f" '--output', {str(tmp_path)!r}]) == 0\n"
        "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "metrics.json").exists()


def test_evaluate_draws_the_reliability_diagram_at_the_artifacts_temperature(tmp_path, sentiment_csv):
    from tests.conftest import TINY, make_artifact

    model = make_artifact(tmp_path / "model", random_init={**TINY, "initializer_range": 0.5},
                          calibration={"temperature": 3.0})
    out = tmp_path / "eval"
    assert main(["--model", str(model), "--data", str(sentiment_csv), "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["temperature"] == 3.0 and 0 <= metrics["ece_calibrated"] <= 1 and 0 <= metrics["ece"] <= 1
    assert metrics["ece_calibrated"] != metrics["ece"]  # the temperature moved the scores
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_scores_a_multi_label_file_at_the_artifacts_thresholds(tmp_path, capsys):
    from app import compute
    from tests.conftest import FIXTURES, TINY, make_artifact
    from train.artifact import read_info
    from train.evaluate import logits_of

    labels = ("business", "sports", "tech")
    model = make_artifact(tmp_path / "model", random_init={**TINY, "initializer_range": 0.5}, multi_label=True,
                          labels=labels, calibration={"thresholds": {"business": 0.3, "sports": 0.5, "tech": 0.7}})
    out = tmp_path / "eval"
    data = FIXTURES / "topics.csv"
    args = ["--model", str(model), "--data", str(data), "--label-column", "labels", "--output", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["support"] == 400 and set(metrics["per_class"]) == set(labels)
    assert metrics["thresholds"] == {"business": 0.3, "sports": 0.5, "tech": 0.7}
    assert "micro avg" in capsys.readouterr().out and not (out / "confusion_matrix.png").exists()
    # The counts behind the scores are serving's: sigmoid(logits) against each label's threshold.
    frame = pd.read_csv(data, keep_default_na=False)
    probs = compute.sigmoid(logits_of(read_info(model), frame["text"].tolist()))
    predicted = probs >= np.array([0.3, 0.5, 0.7])
    sports = predicted[:, 1]
    truth = frame["labels"].str.split("|").map(lambda tags: "sports" in tags).to_numpy()
    precision = (sports & truth).sum() / max(1, sports.sum())
    assert metrics["per_class"]["sports"]["precision"] == pytest.approx(precision)
    assert metrics["per_class"]["sports"]["support"] == truth.sum()
    # A file that names a label the model lacks is refused.
    bad = tmp_path / "bad.csv"
    bad.write_text("text,labels\nhello,sports|weather\n")
    assert main(["--model", str(model), "--data", str(bad), "--label-column", "labels", "--output", str(out)]) == 2
