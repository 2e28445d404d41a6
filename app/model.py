"""Classifier replica: token ids -> logits, and nothing else.

Batches from every caller are merged by `@serve.batch`, sorted by length and cut into forward
passes capped by `max_batch_tokens` (app/compute.py), so short texts are not padded to the longest
one in the queue.
"""
from __future__ import annotations

import asyncio
import time

import numpy as np
import ray
import torch
from ray import serve
from ray.serve import metrics

from app import compute
from app.artifact_source import load_info
from app.config import ModelConfig
from app.rollout import check
from train.artifact import load_model
from train.model import mixed_precision

# @serve.batch needs values before reconfigure() applies the user_config: the reader's defaults.
DEFAULTS = ModelConfig()


@serve.deployment  # resources, scaling and queues: serve_config.yaml
class Classifier:
    def __init__(self, model: str, verify_key_file: str | None = None, model_key_file: str | None = None):
        info = load_info(model, verify_key_file)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # An encrypted artifact is decrypted here, in this replica's memory: nothing decrypted is
        # written, shared or ray.put (the object store spills to disk).
        self.model = load_model(info, model_key_file).to(self.device)
        self.pad_id, self.version = info.pad_token_id, info.version
        self.autocast, _ = mixed_precision(self.device)
        self.stats = {"batches": 0, "forwards": 0, "texts": 0, "tokens": 0, "padded_tokens": 0}
        self.batch_texts = metrics.Histogram("classifier_batch_texts", "Texts per merged batch",
                                             boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
        self.batch_tokens = metrics.Histogram("classifier_batch_tokens", "Real tokens per merged batch",
                                              boundaries=[16, 64, 256, 1024, 4096, 16384, 65536])
        self.model_ms = metrics.Histogram("classifier_model_ms", "Forward time per merged batch (ms)",
                                          boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000])
        self._apply(DEFAULTS)
        self._warm_up()  # before the replica reports ready: first requests see no one-off costs
        self.stats.update(forwards=0, padded_tokens=0)  # count served traffic only

    def reconfigure(self, user_config: dict) -> None:
        self._apply(ModelConfig.read(user_config, "Classifier user_config"))

    def _apply(self, config: ModelConfig) -> None:
        self.config = config
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        # Ray sets OMP_NUM_THREADS=1 for fractional CPUs; the thread count is ours to choose.
        torch.set_num_threads(self.config.torch_threads or max(1, round(cpus)))
        self.forward_batch.set_max_batch_size(self.config.max_batch_size)
        self.forward_batch.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)

    def _warm_up(self) -> None:
        for length in (8, 64):
            ids = np.full(length * 2, self.pad_id + 1, dtype=np.int32)
            self._logits({"ids": ids, "lengths": np.array([length, length], dtype=np.int32)})

    def _logits(self, enc: dict) -> np.ndarray:
        out, passes = compute.logits(self.model, enc, self.pad_id, self.device, self.autocast,
                                     self.config.max_batch_size, self.config.max_batch_tokens)
        self.stats["forwards"] += len(passes)
        self.stats["padded_tokens"] += sum(passes)
        return out

    @serve.batch(max_batch_size=DEFAULTS.max_batch_size, batch_wait_timeout_s=DEFAULTS.batch_wait_timeout_s,
                 batch_size_fn=lambda encs: sum(len(e["lengths"]) for e in encs))
    async def forward_batch(self, encs: list[dict]) -> list[np.ndarray]:
        merged = {
            "ids": np.concatenate([e["ids"] for e in encs]),
            "lengths": np.concatenate([e["lengths"] for e in encs]),
        }
        started = time.perf_counter()
        # A worker thread keeps the replica's event loop free to queue the next batch meanwhile.
        logits = await asyncio.to_thread(self._logits, merged)
        self.model_ms.observe((time.perf_counter() - started) * 1000)
        self.batch_texts.observe(len(merged["lengths"]))
        self.batch_tokens.observe(int(merged["lengths"].sum()))
        self.stats["batches"] += 1
        self.stats["texts"] += len(merged["lengths"])
        self.stats["tokens"] += int(merged["lengths"].sum())
        return np.split(logits, np.cumsum([len(e["lengths"]) for e in encs])[:-1])

    async def forward(self, enc: dict) -> np.ndarray:
        """Logits for every row of enc; inputs larger than one batch are split to fit it. enc must
        come from this artifact's tokenizer: checked before it can join a merged batch."""
        check("Classifier", enc["version"], self.version)
        size, n = self.config.max_batch_size, len(enc["lengths"])
        if n <= size:
            return await self.forward_batch({"ids": enc["ids"], "lengths": enc["lengths"]})
        offsets = np.concatenate([[0], np.cumsum(enc["lengths"])])
        parts = [
            {"ids": enc["ids"][offsets[i]: offsets[min(i + size, n)]], "lengths": enc["lengths"][i: i + size]}
            for i in range(0, n, size)
        ]
        return np.concatenate(await asyncio.gather(*(self.forward_batch(p) for p in parts)))

    def get_stats(self) -> dict:
        replica = serve.get_replica_context().replica_id.unique_id
        return dict(self.stats, max_batch_size=self.config.max_batch_size, replica=replica)

    def ping(self) -> bool:
        return True
