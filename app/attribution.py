"""Which words drove a prediction: integrated gradients and occlusion, free of Ray.

The Explainer deployment (app/explainer.py) and the CLIs (`python -m train.explain`,
`train.evaluate --explain-errors`) call these functions, so what a person sees offline is what the
API answers. Captum's LayerIntegratedGradients is the test oracle (tests/unit/test_attribution.py),
not a runtime dependency: the hand-written loop below cuts steps into chunks by tokens and checks a
deadline between them, which Captum's row-based `internal_batch_size` cannot.

The contract the tests pin:
- Output F: the target label's probability (softmax; sigmoid for multi-label models).
- Integrated gradients on the word-embedding layer's output: position and token-type embeddings
  stay those of the real input. Baseline: the input with every non-special token replaced by
  [PAD], so [CLS]/[SEP] get exactly 0. Attention mask all ones for input and baseline.
  Gauss-Legendre quadrature (nodes (x+1)/2, weights w/2), as Captum's default.
- Completeness: sum(attributions) - (F(input) - F(baseline)) is reported as `delta`.
- Occlusion: a word's attribution is F(input) - F(input with that word's tokens as [PAD]).
- Words: tokens grouped by the fast tokenizer's word_ids(), attributions summed (sums keep
  completeness), offsets into the original text.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

METHODS = ("integrated_gradients", "occlusion")


class DeadlineExceeded(Exception):
    """The explanation passed its deadline; raised between chunks (a running torch op cannot be
    stopped, so chunks are where the time is checked)."""


@dataclass(frozen=True)
class Tokens:
    """One text as the model sees it: ids after the classify path's truncation, and per token its
    word index (None for special tokens) and character offsets."""

    ids: list[int]
    words: list[int | None]
    offsets: list[tuple[int, int]]
    truncated: bool


def tokenize(tokenizer, text: str, max_length: int) -> Tokens:
    """As app/compute.encode tokenizes (the same ids, the same truncation keeping the final
    special token), plus what grouping into words needs."""
    enc = tokenizer(text, add_special_tokens=True, truncation=False, return_offsets_mapping=True, verbose=False)
    ids, words, offsets = list(enc["input_ids"]), list(enc.word_ids()), [tuple(o) for o in enc["offset_mapping"]]
    truncated = len(ids) > max_length
    if truncated:
        keep = list(range(max_length - 1)) + [len(ids) - 1] if ids[-1] in set(tokenizer.all_special_ids) \
            else list(range(max_length))
        ids, words, offsets = [ids[i] for i in keep], [words[i] for i in keep], [offsets[i] for i in keep]
    return Tokens(ids, words, offsets, truncated)


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in [0, 1] and their weights (summing to 1), as Captum's `gausslegendre` method."""
    x, w = np.polynomial.legendre.leggauss(steps)
    return (x + 1) / 2, w / 2


def score_fn(multi_label: bool, target: int):
    """F: logits (rows x labels) -> the target's probability per row."""
    import torch

    if multi_label:
        return lambda logits: torch.sigmoid(logits[:, target])
    return lambda logits: torch.softmax(logits, dim=-1)[:, target]


def _check(deadline: float | None) -> None:
    if deadline is not None and time.time() > deadline:
        raise DeadlineExceeded("the explanation passed its deadline")


def _rows_per_chunk(batch_tokens: int, length: int) -> int:
    return max(1, batch_tokens // length)


def baseline_ids(ids: list[int], special_ids: set[int], pad_id: int) -> list[int]:
    return [i if i in special_ids else pad_id for i in ids]


def integrated_gradients(model, ids: list[int], base: list[int], target: int, multi_label: bool, steps: int,
                         batch_tokens: int = 2048, deadline: float | None = None) -> dict:
    """Per-token attributions (numpy, summed over the hidden size), F(input), F(baseline)."""
    import torch

    F = score_fn(multi_label, target)
    embed = model.get_input_embeddings()
    device = embed.weight.device
    ids_t = torch.tensor([ids, base], device=device)
    mask = torch.ones((1, len(ids)), dtype=torch.long, device=device)
    with torch.no_grad():
        x, x0 = embed(ids_t).float().unbind(0)
        ends = F(model(inputs_embeds=torch.stack([x, x0]), attention_mask=mask.expand(2, -1)).logits.float())
    diff = x - x0
    alphas, weights = (torch.tensor(v, dtype=torch.float32, device=device) for v in gauss_legendre(steps))
    total = torch.zeros_like(x)
    rows = _rows_per_chunk(batch_tokens, len(ids))
    with torch.enable_grad():
        for start in range(0, steps, rows):
            _check(deadline)
            a, w = alphas[start: start + rows], weights[start: start + rows]
            path = (x0 + a[:, None, None] * diff).requires_grad_(True)
            out = F(model(inputs_embeds=path, attention_mask=mask.expand(len(a), -1)).logits.float())
            (grad,) = torch.autograd.grad(out.sum(), path)
            total += (w[:, None, None] * grad).sum(0)
    attributions = (total * diff).sum(-1)
    return {"tokens": attributions.detach().cpu().numpy().astype(np.float64),
            "score": float(ends[0]), "baseline_score": float(ends[1]), "rows": steps + 2}


def occlusion(model, ids: list[int], words: list[int | None], pad_id: int, target: int, multi_label: bool,
              batch_tokens: int = 2048, deadline: float | None = None) -> dict:
    """Per-word attributions F(input) - F(input with the word as [PAD]), one forward row per word."""
    import torch

    F = score_fn(multi_label, target)
    device = model.get_input_embeddings().weight.device
    word_ids = sorted({w for w in words if w is not None})
    variants = [list(ids)] + [[pad_id if wi == w else i for i, wi in zip(ids, words)] for w in word_ids]
    scores = []
    rows = _rows_per_chunk(batch_tokens, len(ids))
    with torch.inference_mode():
        for start in range(0, len(variants), rows):
            _check(deadline)
            batch = torch.tensor(variants[start: start + rows], device=device)
            logits = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits.float()
            scores.extend(F(logits).cpu().tolist())
    return {"words": {w: scores[0] - s for w, s in zip(word_ids, scores[1:])}, "score": scores[0],
            "rows": len(variants)}


def group_words(text: str, tokens: Tokens, per_token: np.ndarray | None = None,
                per_word: dict[int, float] | None = None) -> list[dict]:
    """One entry per word, in text order: its text, character offsets and attribution (the sum of
    its tokens' attributions, or per_word's value)."""
    spans: dict[int, list[int]] = {}
    for position, word in enumerate(tokens.words):
        if word is not None:
            spans.setdefault(word, []).append(position)
    out = []
    for word, positions in spans.items():
        start, end = tokens.offsets[positions[0]][0], tokens.offsets[positions[-1]][1]
        value = float(per_token[positions].sum()) if per_token is not None else float(per_word[word])
        out.append({"text": text[start:end], "start": start, "end": end, "attribution": value})
    return out


def probabilities(model, ids: list[int], multi_label: bool) -> np.ndarray:
    """Every label's probability for one row, as the Postprocessor computes it."""
    import torch

    device = model.get_input_embeddings().weight.device
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids], device=device)).logits.float()[0]
    return (torch.sigmoid(logits) if multi_label else torch.softmax(logits, -1)).cpu().numpy().astype(np.float64)


def explain(model, tokenizer, text: str, max_length: int, target: int | None, multi_label: bool, method: str,
            steps: int, batch_tokens: int = 2048, deadline: float | None = None) -> dict:
    """The whole explanation of one text for one label index (None: the predicted one), as the API
    answers it less the label names: `probabilities` holds every label's, in label order."""
    tokens = tokenize(tokenizer, text, max_length)
    specials, pad_id = set(tokenizer.all_special_ids), tokenizer.pad_token_id
    probs = probabilities(model, tokens.ids, multi_label)
    target = int(probs.argmax()) if target is None else target
    return {"target": target, "probabilities": probs.tolist()} | _attribute(
        model, text, tokens, specials, pad_id, target, multi_label, method, steps, batch_tokens, deadline)


def _attribute(model, text, tokens, specials, pad_id, target, multi_label, method, steps, batch_tokens, deadline):
    if method == "integrated_gradients":
        base = baseline_ids(tokens.ids, specials, pad_id)
        ig = integrated_gradients(model, tokens.ids, base, target, multi_label, steps, batch_tokens, deadline)
        words = group_words(text, tokens, per_token=ig["tokens"])
        total, expected = float(ig["tokens"].sum()), ig["score"] - ig["baseline_score"]
        return {"score": ig["score"], "attributions": words, "baseline_score": ig["baseline_score"],
                "completeness": {"sum": total, "expected": expected, "delta": total - expected},
                "tokens": len(tokens.ids), "rows": ig["rows"], "truncated": tokens.truncated}
    if method == "occlusion":
        occ = occlusion(model, tokens.ids, tokens.words, pad_id, target, multi_label, batch_tokens, deadline)
        words = group_words(text, tokens, per_word=occ["words"])
        return {"score": occ["score"], "attributions": words, "baseline_score": None, "completeness": None,
                "tokens": len(tokens.ids), "rows": occ["rows"], "truncated": tokens.truncated}
    raise ValueError(f"method must be one of {METHODS}; got {method!r}")


def step_tokens(method: str, steps: int, tokens: int) -> int:
    """The work an explanation asks for, in forward rows x tokens: what max_step_tokens caps.
    Occlusion runs at most one row per token (one per word), so it counts `tokens` rows."""
    return (steps if method == "integrated_gradients" else tokens) * tokens
