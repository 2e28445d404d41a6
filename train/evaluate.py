"""`python -m train.evaluate`: score an exported artifact on labelled data; a deploy gate.

Writes OUTPUT/metrics.json and OUTPUT/confusion_matrix.png, prints a per-class table, and exits 1
when accuracy is below --min-accuracy.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from app import compute, runtimes  # Ray-free: the stages' functions, not the Serve deployments
from app.config import ModelConfig
from train.artifact import ArtifactError, load_tokenizer, read_info
from train.data import DataError, check_val_labels, clean, read_table
from train.metrics import confusion, scores

log = logging.getLogger("train.evaluate")


def predict(info, texts: list[str], batch_size: int = 256, runtime: str = "torch") -> list[str]:
    """The label serving answers for each text: the Tokenizer, Classifier and Postprocessor stages'
    own functions (app/compute.py, app/runtimes.py; Ray-free), with the runtime, device and batching
    a replica uses. ONNX graphs come from (and go to) the node's cache, as a replica's do."""
    import torch

    from app.artifact_source import cache_root

    replica = ModelConfig()  # the Classifier's forward-pass limits, as a replica starts with them
    device = torch.device("cuda" if torch.cuda.is_available() and runtime == "torch" else "cpu")
    model = runtimes.load(info, runtime, device, torch.get_num_threads(), cache_root())
    tokenizer = load_tokenizer(info)
    out = []
    for i in range(0, len(texts), batch_size):
        enc = compute.encode(tokenizer, texts[i: i + batch_size], info.max_length)
        logits, _ = compute.passes(model.forward, enc, info.pad_token_id, replica.max_batch_size,
                                   replica.max_batch_tokens)
        top = compute.predictions(logits, info.labels, [1] * len(logits), info.multi_label)
        out.extend(p["label"] for p in top)
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


def evaluate(model_dir: str, data: str, text_column: str, label_column: str, output: str,
             runtime: str = "torch") -> dict:
    info = read_info(model_dir)
    frame, _ = clean(read_table(data), data, text_column, label_column, drop_blank=True)
    check_val_labels(frame, info.labels, data, label_column)
    index = {label: i for i, label in enumerate(info.labels)}
    preds = [index[label] for label in predict(info, frame["text"].tolist(), runtime=runtime)]
    truth = frame["label"].map(index).to_numpy()
    result = scores(confusion(truth, preds, len(info.labels)), info.labels)
    result["model_version"] = info.version
    result["runtime"] = runtime  # the gate measured what this runtime serves
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_confusion(np.array(result["confusion_matrix"]), info.labels, out / "confusion_matrix.png")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__)
    p.add_argument("--model", required=True, help="artifact directory (OUTPUT/model of a training run)")
    p.add_argument("--data", required=True)
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--output", required=True, help="directory for metrics.json and confusion_matrix.png")
    p.add_argument("--runtime", default="torch", choices=runtimes.NAMES,
                   help="what runs the model, as the Classifier's user_config `runtime` (onnx*: CPU)")
    p.add_argument("--min-accuracy", type=float, help="exit 1 when accuracy is below this")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = evaluate(args.model, args.data, args.text_column, args.label_column, args.output,
                          args.runtime)
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
