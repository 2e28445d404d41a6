"""What is fitted on the validation split after training, and the scores that judge it.

Single-label: one temperature T (probabilities are softmax(logits / T)), fitted by minimising the
negative log-likelihood (Guo et al. 2017) with torch's L-BFGS over log T, so T stays positive.
The NLL is convex in 1/T, so there is one minimum for L-BFGS to find. T leaves the argmax, hence
accuracy, unchanged; it moves the scores towards (T > 1) or away from (T < 1) uniform.
Multi-label: one decision threshold per label on its sigmoid score, the one that maximises that
label's F1 on the validation rows.
Free of Ray (and of torch until a temperature is fitted): the training workers and `train.evaluate`
share it; the scores themselves come from serving's own functions (app/compute.py).
"""
from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger("train.calibration")

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al.; ECE is reported, never tuned on
DEFAULT_THRESHOLD = 0.5  # a label without positive validation rows has no F1 to maximise
# Where the validation split is separable (every row right, or every row wrong) the NLL has no
# minimum: it falls for ever as T goes to 0 (or infinity), and L-BFGS returned T = 0.056, which
# makes every served score 1.000. Past these bounds T says nothing the split can support.
TEMPERATURE_BOUNDS = (0.25, 10.0)


def fit_temperature(logits: np.ndarray, targets: np.ndarray, max_iter: int = 100) -> float:
    """The T in TEMPERATURE_BOUNDS minimising the mean NLL of softmax(logits / T) against
    integer targets; a warning says when it stopped at a bound."""
    import torch

    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    # The training loop validates under torch.inference_mode(); the fit needs autograd back on.
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.tensor(np.asarray(logits, dtype=np.float64))  # a copy: the input may be read-only
        y = torch.tensor(np.asarray(targets, dtype=np.int64))
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x / log_t.clamp(low, high).exp(), y)
            loss.backward()
            return loss

        if len(y):
            opt.step(closure)
    t = float(np.clip(math.exp(float(log_t.detach())), *TEMPERATURE_BOUNDS))
    if t in TEMPERATURE_BOUNDS:
        log.warning("temperature stopped at its bound %.2f: the validation split (%d rows) is "
                    "separable or too small to calibrate on", t, len(y))
    return t


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per equal-width bin of the top score: rows, mean confidence and accuracy (None where empty)."""
    confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == np.asarray(targets))
    # Bin i holds (i/bins, (i+1)/bins]; a confidence of exactly 0 cannot occur for a top score.
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    hit_sum = np.bincount(which, weights=correct.astype(float), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, accuracy = conf_sum / counts, hit_sum / counts
    return {"edges": np.linspace(0, 1, bins + 1).tolist(), "counts": counts.tolist(),
            "confidence": [None if n == 0 else float(c) for n, c in zip(counts, mean_conf)],
            "accuracy": [None if n == 0 else float(a) for n, a in zip(counts, accuracy)]}


def ece(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the row-weighted mean |accuracy - confidence| over the bins."""
    table = reliability(probs, targets, bins)
    total = sum(table["counts"])
    if not total:
        return 0.0
    gaps = (n * abs(a - c) for n, a, c in zip(table["counts"], table["accuracy"], table["confidence"]) if n)
    return float(sum(gaps) / total)


def best_threshold(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) of one label: predicting `score >= threshold` gives the highest F1 there is.

    Every cut between two distinct scores is tried; the threshold is the midpoint of the gap it
    falls in (the lowest score when every row is predicted), so a score a little off the
    validation values is decided as its neighbours were. Ties in F1 go to the higher threshold
    (fewer positives). Without a positive row, F1 is 0 everywhere: DEFAULT_THRESHOLD."""
    scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth).astype(bool)
    positives = int(truth.sum())
    if positives == 0 or len(scores) == 0:
        return DEFAULT_THRESHOLD, 0.0
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order]
    tp = np.cumsum(hits)
    predicted = np.arange(1, len(ranked) + 1)
    f1 = 2 * tp / (predicted + positives)
    # A cut can only fall where the next score is lower: tied scores are predicted together.
    last = np.append(ranked[1:] < ranked[:-1], True)
    f1 = np.where(last, f1, -1.0)
    k = int(np.argmax(f1))  # the first maximum: the fewest rows predicted positive
    threshold = ranked[k] if k == len(ranked) - 1 else (ranked[k] + ranked[k + 1]) / 2
    return float(threshold), float(f1[k])


def tune_thresholds(probs: np.ndarray, truth: np.ndarray) -> list[float]:
    """best_threshold for every label (column) of a multi-label validation split."""
    return [best_threshold(probs[:, j], truth[:, j])[0] for j in range(probs.shape[1])]
