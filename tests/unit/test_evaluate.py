import json
import subprocess
import sys
from contextlib import nullcontext

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
