"""What the tokenizer, model and postprocessor stages compute, free of Ray.

The stage modules wrap these functions in Serve deployments; bench/gpu_check.sh runs them on a
GPU machine that has torch and transformers but no Ray, so the code checked there is the code served.
Only numpy is imported at module level; torch is imported by the function that needs it.
"""
from __future__ import annotations

import numpy as np

# A forward pass stops taking longer rows once more than half of it would be padding: mixed
# short and long texts then run as two passes instead of padding every short one to the longest.
MAX_PADDING = 0.5


# ----- tokenizer stage -----
def encode(tokenizer, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """Tokenize without padding (the model pads per batch) and truncate to max_length.

    Texts are tokenized in full once, so the count reported for an over-long text is exact; the
    truncated form keeps the closing special token ([SEP]/</s>) that the model was trained with.
    """
    rows = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    specials = set(tokenizer.all_special_ids)
    full = np.fromiter((len(r) for r in rows), dtype=np.int32, count=len(rows))
    kept = []
    for ids in rows:
        if len(ids) > max_length:
            ids = ids[: max_length - 1] + ids[-1:] if ids[-1] in specials else ids[:max_length]
        kept.append(ids)
    lengths = np.fromiter((len(r) for r in kept), dtype=np.int32, count=len(kept))
    flat = np.fromiter((i for r in kept for i in r), dtype=np.int32, count=int(lengths.sum()))
    return {"ids": flat, "lengths": lengths, "full_lengths": full, "truncated": full > lengths}


# ----- model stage -----
def split_rows(enc: dict) -> list[np.ndarray]:
    """The tokenizer's flat ids cut back into one array per text."""
    return np.split(enc["ids"], np.cumsum(enc["lengths"])[:-1]) if len(enc["lengths"]) else []


def pad(rows: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask for rows, padded to the longest of them."""
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


def plan_chunks(lengths: np.ndarray, max_rows: int, max_tokens: int) -> list[np.ndarray]:
    """Row indices per forward pass: length-sorted, each within max_rows, max_tokens padded and MAX_PADDING."""
    order = np.argsort(lengths, kind="stable")
    chunks, start = [], 0
    while start < len(order):
        end, real = start + 1, int(lengths[order[start]])
        while end < len(order) and end - start < max_rows:
            width, rows = int(lengths[order[end]]), end - start + 1
            if rows * width > max_tokens or 1 - (real + width) / (rows * width) > MAX_PADDING:
                break
            real += width
            end += 1
        chunks.append(order[start:end])
        start = end
    return chunks


def passes(forward, enc: dict, pad_id: int, max_rows: int, max_tokens: int) -> tuple[np.ndarray, list[int]]:
    """(fp32 logits in input order, padded tokens per forward pass) for every row of enc, where
    forward(input_ids, attention_mask) -> logits is any runtime (app/runtimes.py): the passes and
    their padding are the same whichever runs them."""
    rows, lengths = split_rows(enc), enc["lengths"]
    out, padded = None, []
    for chunk in plan_chunks(lengths, max_rows, max_tokens):
        ids, mask = pad([rows[r] for r in chunk], pad_id)
        result = forward(ids, mask)
        if out is None:
            out = np.empty((len(lengths), result.shape[1]), dtype=np.float32)
        out[chunk] = result
        padded.append(ids.size)
    return out, padded


def torch_forward(model, device, autocast):
    """forward(input_ids, attention_mask) -> fp32 numpy logits for a transformers model."""
    import torch

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), autocast():
            result = model(input_ids=torch.from_numpy(ids).to(device),
                           attention_mask=torch.from_numpy(mask).to(device)).logits
        return result.float().cpu().numpy()

    return forward


def logits(model, enc: dict, pad_id: int, device, autocast, max_rows: int, max_tokens: int) -> tuple[np.ndarray, list[int]]:
    """passes() with a torch model (kept for callers that hold one: bench/gpu_check.py)."""
    return passes(torch_forward(model, device, autocast), enc, pad_id, max_rows, max_tokens)


# ----- postprocessor stage -----
def softmax(values: np.ndarray) -> np.ndarray:
    shifted = values - values.max(axis=1, keepdims=True)  # no overflow for large logits
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def sigmoid(values: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only, whatever the sign of the logit.
    neg = np.exp(-np.abs(values))
    return np.where(values >= 0, 1 / (1 + neg), neg / (1 + neg))


# Score functions a request may ask for instead of the model's own (HF's `function_to_apply`,
# TEI's `raw_scores`); "none" is the raw logits.
ACTIVATIONS = {"softmax": softmax, "sigmoid": sigmoid, "none": lambda values: values}


def predictions(values: np.ndarray, labels: list[str], top_k: list[int | None], multi_label: bool,
                activation: list[str | None] | None = None, *,
                temperature: float = 1.0, thresholds: tuple[float, ...] | None = None) -> list[dict]:
    """Per row: `scores`, the top_k labels by score (every label for None), and the decision.

    Single-label: scores are softmax(logits / temperature) (the artifact's calibration; 1 leaves
    them as trained) and the decision is the top label. Multi-label: scores are sigmoid(logits),
    `labels` holds every label whose score reaches its threshold (0.5 without tuned ones), by
    score, and `label`/`score` are the first of them, or None when no label reaches its threshold.
    activation, per row, names another score function of ACTIVATIONS, applied to the raw logits
    (a protocol's own option); None, or the model's own function, keeps the calibrated scores.
    The multi-label decision is always taken on the model's own scores.
    """
    own = "sigmoid" if multi_label else "softmax"
    decided = sigmoid(values) if multi_label else softmax(values / temperature)
    probs = decided
    asked = set(activation or ()) - {None, own}
    if asked:
        probs = decided.copy()
        for name in asked:  # one vectorised pass per function asked for
            rows = [i for i, a in enumerate(activation) if a == name]
            probs[rows] = ACTIVATIONS[name](values[rows])
    if multi_label:
        cut = np.asarray(thresholds if thresholds is not None else [0.5] * len(labels), dtype=np.float32)
    order = np.argsort(-probs, axis=1, kind="stable")
    out = []
    for row, k in zip(range(len(probs)), top_k):
        ranked = order[row][: k or len(labels)]
        scores = [{"label": labels[i], "score": float(probs[row, i])} for i in ranked]
        if not multi_label:
            out.append({"label": scores[0]["label"], "score": scores[0]["score"], "scores": scores})
            continue
        passed = [{"label": labels[i], "score": float(probs[row, i])} for i in order[row] if decided[row, i] >= cut[i]]
        top = passed[0] if passed else {"label": None, "score": None}
        out.append({"label": top["label"], "score": top["score"], "labels": passed, "scores": scores})
    return out
