"""Tokenizer stage: texts -> token ids (flat int32), lengths and truncation flags, as numpy arrays."""
from __future__ import annotations

import numpy as np
from ray import serve

from app.artifact_source import local_artifact
from train.artifact import load_tokenizer, read_info


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


@serve.deployment(ray_actor_options={"num_cpus": 0.2})
class Tokenizer:
    def __init__(self, model: str):
        info = read_info(local_artifact(model))
        self.tokenizer = load_tokenizer(info)
        self.max_length = info.max_length

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        return encode(self.tokenizer, texts, self.max_length)

    def ping(self) -> bool:
        return True
