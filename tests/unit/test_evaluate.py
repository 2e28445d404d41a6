import json

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
