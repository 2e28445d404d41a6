"""Classification metrics: single-label from a confusion matrix, multi-label from multi-hot rows;
`validation` adds what is fitted on the validation split (train/calibration.py)."""
from __future__ import annotations

import numpy as np

from app.compute import sigmoid, softmax  # the scores serving answers with
from train.calibration import ece, fit_temperature, tune_thresholds


def confusion(y_true, y_pred, num_labels: int) -> np.ndarray:
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def scores(matrix: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro precision/recall/F1 and per-class scores; 0 where a ratio is undefined."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    total = matrix.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "support": int(total),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion_matrix": matrix.astype(np.int64).tolist(),
    }


def _ratios(tp, predicted, actual):
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(actual > 0, tp / np.maximum(actual, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    return precision, recall, f1


def multilabel_scores(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict:
    """Exact-match accuracy, micro and macro precision/recall/F1 and per-label scores of multi-hot
    truth and predictions (rows x labels); 0 where a ratio is undefined."""
    truth, predicted = np.asarray(truth).astype(bool), np.asarray(predicted).astype(bool)
    tp = (truth & predicted).sum(axis=0).astype(np.float64)
    n_pred, n_true = predicted.sum(axis=0).astype(np.float64), truth.sum(axis=0).astype(np.float64)
    precision, recall, f1 = _ratios(tp, n_pred, n_true)
    micro_p, micro_r, micro_f1 = _ratios(tp.sum(), n_pred.sum(), n_true.sum())
    return {
        "accuracy": float((truth == predicted).all(axis=1).mean()) if len(truth) else 0.0,
        "micro_precision": float(micro_p), "micro_recall": float(micro_r), "micro_f1": float(micro_f1),
        "macro_precision": float(precision.mean()), "macro_recall": float(recall.mean()), "macro_f1": float(f1.mean()),
        "support": int(len(truth)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, n_true)
        },
    }


def nll(probs: np.ndarray, targets: np.ndarray) -> float:
    picked = probs[np.arange(len(targets)), np.asarray(targets, dtype=np.int64)]
    return float(-np.log(np.clip(picked, 1e-12, 1)).mean()) if len(targets) else 0.0


def validation(logits: np.ndarray, targets: np.ndarray, labels: list[str], multi_label: bool,
               calibrate: bool = True) -> dict:
    """Scores of one validation pass, with what is fitted on it.

    Multi-label: per-label thresholds maximising each label's F1 (`thresholds`), the scores at
    them, and at a flat 0.5 (`at_0.5`) for comparison. Single-label: the confusion-matrix scores,
    the expected calibration error of softmax (`ece`) and, with calibrate, the fitted
    `temperature` and the ECE and NLL after it (accuracy does not move: T keeps the argmax)."""
    logits = np.asarray(logits, dtype=np.float32)
    if multi_label:
        probs = sigmoid(logits)
        thresholds = tune_thresholds(probs, targets)
        result = multilabel_scores(targets, probs >= np.asarray(thresholds), labels)
        flat = multilabel_scores(targets, probs >= 0.5, labels)
        result["at_0.5"] = {k: flat[k] for k in ("accuracy", "micro_f1", "macro_f1")}
        result["thresholds"] = dict(zip(labels, thresholds))
        return result
    targets = np.asarray(targets, dtype=np.int64)
    result = scores(confusion(targets, logits.argmax(axis=1), len(labels)), labels)
    probs = softmax(logits)
    result.update(ece=ece(probs, targets), nll=nll(probs, targets))
    if calibrate:
        temperature = fit_temperature(logits, targets)
        calibrated = softmax(logits / temperature)
        result.update(temperature=temperature, ece_calibrated=ece(calibrated, targets),
                      nll_calibrated=nll(calibrated, targets))
    return result
