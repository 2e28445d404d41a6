"""`python -m train.evaluate`: score an exported artifact on labelled data; a deploy gate.

Writes OUTPUT/metrics.json, and for a single-label model OUTPUT/confusion_matrix.png and
OUTPUT/reliability.png (calibration before and after the artifact's temperature), prints a
per-class table, and exits 1 when accuracy (exact match for multi-label) is below --min-accuracy.
A multi-label model reads its labels as it was trained (label_separator or label_columns in its
training_config.json) unless --label-separator or --label-columns say otherwise.
`--explain-errors N` (single-label) adds OUTPUT/errors.{html,png}: the N most confident mistakes
with their words shaded by attribution (train/explain.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from app import compute, runtimes  # Ray-free: the stages' functions, not the Serve deployments
from app.config import AppArgs, ModelConfig
from train.artifact import ArtifactError, load_tokenizer, read_info
from train.calibration import ECE_BINS, ece, reliability
from train.config import DEFAULT_LABEL_SEPARATOR
from train.data import LABEL, DataError, LabelFormat, check_val_labels, clean, encode_labels, read_table
from train.metrics import confusion, multilabel_scores, nll, scores

log = logging.getLogger("train.evaluate")


def logits_of(info, texts: list[str], batch_size: int = 256, runtime: str = "torch") -> np.ndarray:
    """The logits serving computes for each text: the Tokenizer and Classifier stages' own
    functions (app/compute.py, app/runtimes.py; Ray-free), with the runtime, device and batching a
    replica uses. ONNX graphs come from (and go to) the node's cache, as a replica's do."""
    import torch

    from app.artifact_source import cache_root

    replica = ModelConfig()  # the Classifier's forward-pass limits, as a replica starts with them
    device = torch.device("cuda" if torch.cuda.is_available() and runtime == "torch" else "cpu")
    model = runtimes.load(info, runtime, device, torch.get_num_threads(), cache_root())
    tokenizer = load_tokenizer(info)
    out = [np.zeros((0, len(info.labels)), dtype=np.float32)]
    for i in range(0, len(texts), batch_size):
        enc = compute.encode(tokenizer, texts[i: i + batch_size], info.max_length)
        logits, _ = compute.passes(model.forward, enc, info.pad_token_id, replica.max_batch_size,
                                   replica.max_batch_tokens)
        out.append(logits)
    return np.concatenate(out)


def answers(info, logits: np.ndarray) -> list[dict]:
    """The Postprocessor's predictions, with the artifact's temperature or thresholds."""
    return compute.predictions(logits, info.labels, [1] * len(logits), info.multi_label,
                               temperature=info.temperature, thresholds=info.thresholds)


def predict(info, texts: list[str], batch_size: int = 256, runtime: str = "torch") -> list:
    """What serving answers for each text: the label, or for a multi-label model the list of labels."""
    preds = answers(info, logits_of(info, texts, batch_size, runtime))
    if info.multi_label:
        return [[s["label"] for s in p["labels"]] for p in preds]
    return [p["label"] for p in preds]


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


def plot_reliability(probs: dict[str, np.ndarray], truth: np.ndarray, path: Path) -> None:
    """Accuracy against confidence per bin, one line per scoring (before/after the temperature)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, p in probs.items():
        table = reliability(p, truth)
        points = [(c, a) for c, a in zip(table["confidence"], table["accuracy"]) if c is not None]
        ax.plot(*zip(*points), marker="o", label=f"{name} (ECE {ece(p, truth):.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top score)", ylabel="accuracy",
           title=f"Reliability ({ECE_BINS} bins, {len(truth)} texts)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(result: dict) -> str:
    lines = [f"{'label':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"]
    for label, s in result["per_class"].items():
        lines.append(f"{label:<20} {s['precision']:>9.4f} {s['recall']:>9.4f} {s['f1']:>9.4f} {s['support']:>8}")
    if "micro_f1" in result:
        lines.append(f"{'exact match':<20} {result['accuracy']:>39.4f} {result['support']:>8}")
        lines.append(f"{'micro avg':<20} {result['micro_precision']:>9.4f} {result['micro_recall']:>9.4f} "
                     f"{result['micro_f1']:>9.4f}")
    else:
        lines.append(f"{'accuracy':<20} {result['accuracy']:>39.4f} {result['support']:>8}")
    lines.append(f"{'macro avg':<20} {result['macro_precision']:>9.4f} {result['macro_recall']:>9.4f} {result['macro_f1']:>9.4f}")
    if "ece" in result:
        lines.append(f"ECE {result['ece']:.4f} as trained, {result['ece_calibrated']:.4f} at temperature "
                     f"{result['temperature']:.3f} (NLL {result['nll']:.4f} -> {result['nll_calibrated']:.4f})")
    return "\n".join(lines)


def label_format(info, label_column: str, separator: str | None, columns: list[str] | None) -> LabelFormat:
    """How the file writes its labels: single-label in label_column; multi-label as the artifact was
    trained (its training_config.json), unless a separator or 0/1 columns are given."""
    if not info.multi_label:
        if separator or columns:
            raise DataError(f"{info.path}: a single-label model; --label-separator and --label-columns are "
                            f"for multi-label models")
        return LabelFormat(label_column)
    saved = info.training_config
    if separator is None and columns is None:
        separator, columns = saved.get("label_separator"), saved.get("label_columns")
    if columns and set(columns) != set(info.labels):
        raise DataError(f"--label-columns {columns} must name the model's labels {info.labels}")
    return LabelFormat(label_column, True, separator or DEFAULT_LABEL_SEPARATOR, tuple(columns or ()))


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
             label_separator: str | None = None, label_columns: list[str] | None = None, explain_n: int = 0,
             runtime: str = "torch") -> dict:
    info = read_info(model_dir)
    if explain_n and info.multi_label:
        raise DataError("--explain-errors is for single-label models (explain one label with python -m train.explain)")
    fmt = label_format(info, label_column, label_separator, label_columns)
    frame, _ = clean(read_table(data), data, text_column, label_column, drop_blank=True, fmt=fmt)
    check_val_labels(frame, info.labels, data, label_column, info.multi_label)
    logits = logits_of(info, frame["text"].tolist(), runtime=runtime)
    preds = answers(info, logits)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    index = {label: i for i, label in enumerate(info.labels)}
    if info.multi_label:
        truth = np.stack(encode_labels(frame, info.labels, multi=True)[LABEL].to_numpy())  # clean() left rows
        predicted = np.zeros_like(truth)
        for row, p in enumerate(preds):
            predicted[row, [index[s["label"]] for s in p["labels"]]] = 1
        result = multilabel_scores(truth, predicted, info.labels)
        result["thresholds"] = dict(zip(info.labels, info.thresholds or [0.5] * len(info.labels)))
    else:
        truth = frame["label"].map(index).to_numpy()
        result = scores(confusion(truth, [index[p["label"]] for p in preds], len(info.labels)), info.labels)
        raw, calibrated = compute.softmax(logits), compute.softmax(logits / info.temperature)
        result.update(ece=ece(raw, truth), ece_calibrated=ece(calibrated, truth), temperature=info.temperature,
                      nll=nll(raw, truth), nll_calibrated=nll(calibrated, truth))
        plot_confusion(np.array(result["confusion_matrix"]), info.labels, out / "confusion_matrix.png")
        plot_reliability({"as trained": raw, f"temperature {info.temperature:.2f}": calibrated}, truth,
                         out / "reliability.png")
        if explain_n:
            texts, names = frame["text"].tolist(), [info.labels[t] for t in truth]
            log.info("explained %d mistakes in %s", explain_errors(info, texts, names, preds, explain_n, out),
                     out / "errors.html")
    result["model_version"] = info.version
    result["runtime"] = runtime  # the gate measured what this runtime serves
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__)
    p.add_argument("--model", required=True, help="artifact directory (OUTPUT/model of a training run)")
    p.add_argument("--data", required=True)
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--label-separator", help="multi-label: what joins a row's labels (default: as trained)")
    p.add_argument("--label-columns", type=lambda v: [c.strip() for c in v.split(",")],
                   help="multi-label: the 0/1 label columns, comma-separated (default: as trained)")
    p.add_argument("--output", required=True, help="directory for metrics.json and the PNGs")
    p.add_argument("--min-accuracy", type=float, help="exit 1 when accuracy (multi-label: exact match) is below this")
    p.add_argument("--explain-errors", type=int, default=0, metavar="N",
                   help="also write errors.html and errors.png: the N most confident mistakes, explained")
    p.add_argument("--runtime", default="torch", choices=runtimes.NAMES,
                   help="what runs the model, as the Classifier's user_config `runtime` (onnx*: CPU)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = evaluate(args.model, args.data, args.text_column, args.label_column, args.output,
                          args.label_separator, args.label_columns, args.explain_errors,
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
