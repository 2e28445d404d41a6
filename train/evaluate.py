"""`python -m train.evaluate`: score an exported artifact on labelled data; a deploy gate.

Writes OUTPUT/metrics.json and OUTPUT/confusion_matrix.png, prints a per-class table, and exits 1
when accuracy is below --min-accuracy. `--explain-errors N` adds OUTPUT/errors.{html,png}: the N
most confident mistakes with their words shaded by attribution (train/explain.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from app import compute  # Ray-free: the stages' functions, not the Serve deployments
from app.config import AppArgs, ModelConfig
from train.artifact import ArtifactError, load_model, load_tokenizer, read_info
from train.data import DataError, check_val_labels, clean, read_table
from train.metrics import confusion, scores
from train.model import mixed_precision

log = logging.getLogger("train.evaluate")


def predict(info, texts: list[str], batch_size: int = 256) -> list[str]:
    """The label serving answers for each text: the Tokenizer, Classifier and Postprocessor stages'
    own functions (app/compute.py, Ray-free), on the device and with the batching a replica uses."""
    return [p["label"] for p in predict_scored(info, texts, batch_size)]


def predict_scored(info, texts: list[str], batch_size: int = 256) -> list[dict]:
    """predict()'s answers with their scores: {"label", "score"} per text."""
    import torch

    replica = ModelConfig()  # the Classifier's forward-pass limits, as a replica starts with them
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model(info).to(device), load_tokenizer(info)
    autocast, _ = mixed_precision(device)
    out = []
    for i in range(0, len(texts), batch_size):
        enc = compute.encode(tokenizer, texts[i: i + batch_size], info.max_length)
        logits, _ = compute.logits(model, enc, info.pad_token_id, device, autocast,
                                   replica.max_batch_size, replica.max_batch_tokens)
        top = compute.predictions(logits, info.labels, [1] * len(logits), info.multi_label)
        out.extend({"label": p["label"], "score": p["score"]} for p in top)
    return out


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.2 * len(labels) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title="Confusion matrix")
    for (r, c), value in np.ndenumerate(matrix):
        ax.text(c, r, str(value), ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(result: dict) -> str:
    lines = [f"{'label':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for label, s in result["per_class"].items():
        lines.append(f"{label:<20} {s['precision']:>9.4f} {s['recall']:>9.4f} {s['f1']:>9.4f} {s['support']:>8}")
    lines.append(f"{'accuracy':<20} {result['accuracy']:>39.4f} {result['support']:>8}")
    lines.append(f"{'macro avg':<20} {result['macro_precision']:>9.4f} {result['macro_recall']:>9.4f} {result['macro_f1']:>9.4f}")
    return "\n".join(lines)


def explain_errors(info, texts: list[str], truth: list[str], answers: list[dict], n: int, out: Path) -> int:
    """errors.html and errors.png in out: the n most confident mistakes, each explained for the
    label the model wrongly chose (what it keyed on). Returns how many were rendered."""
    from train.explain import explain_texts, write_pages

    wrong = sorted((i for i, a in enumerate(answers) if a["label"] != truth[i]), key=lambda i: -answers[i]["score"])[:n]
    steps = AppArgs().explain_default_steps  # as the API explains by default
    items = explain_texts(info, [texts[i] for i in wrong], [answers[i]["label"] for i in wrong],
                          "integrated_gradients", steps)
    for item, i in zip(items, wrong):
        item["truth"] = truth[i]
    write_pages(items, out / "errors.html", f"The {len(items)} most confident mistakes")
    return len(items)


def evaluate(model_dir: str, data: str, text_column: str, label_column: str, output: str,
             explain_n: int = 0) -> dict:
    info = read_info(model_dir)
    frame, _ = clean(read_table(data), data, text_column, label_column, drop_blank=True)
    check_val_labels(frame, info.labels, data, label_column)
    index = {label: i for i, label in enumerate(info.labels)}
    answers = predict_scored(info, frame["text"].tolist())
    preds = [index[a["label"]] for a in answers]
    truth = frame["label"].map(index).to_numpy()
    result = scores(confusion(truth, preds, len(info.labels)), info.labels)
    result["model_version"] = info.version
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_confusion(np.array(result["confusion_matrix"]), info.labels, out / "confusion_matrix.png")
    if explain_n:
        texts, truth = frame["text"].tolist(), [info.labels[t] for t in truth]
        log.info("explained %d mistakes in %s", explain_errors(info, texts, truth, answers, explain_n, out),
                 out / "errors.html")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__)
    p.add_argument("--model", required=True, help="artifact directory (OUTPUT/model of a training run)")
    p.add_argument("--data", required=True)
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--output", required=True, help="directory for metrics.json and confusion_matrix.png")
    p.add_argument("--min-accuracy", type=float, help="exit 1 when accuracy is below this")
    p.add_argument("--explain-errors", type=int, default=0, metavar="N",
                   help="also write errors.html and errors.png: the N most confident mistakes, explained")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = evaluate(args.model, args.data, args.text_column, args.label_column, args.output,
                          args.explain_errors)
    except (ArtifactError, DataError) as err:
        log.error("%s", err)
        return 2
    print(table(result))  # noqa: T201 - the command's output
    if args.min_accuracy is not None and result["accuracy"] < args.min_accuracy:
        log.error("accuracy %.4f is below --min-accuracy %.4f", result["accuracy"], args.min_accuracy)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
