"""Classifier replica: token ids -> logits, and nothing else.

Batches from every caller are merged by `@serve.batch`, sorted by length and cut into forward
passes capped by `max_batch_tokens` (app/compute.py), so short texts are not padded to the longest
one in the queue. What runs a pass is the user_config's `runtime` (app/runtimes.py): torch, or
ONNX Runtime on CPU (fp32 or int8); a live change builds and warms the new one, then swaps.
"""
from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import ray
import torch
from ray import serve
from ray.serve import metrics

from app import compute, runtimes
from app.artifact_source import cache_root, load_info
from app.config import ModelConfig
from app.rollout import check

log = logging.getLogger("ray.serve")
# @serve.batch needs values before reconfigure() applies the user_config: the reader's defaults.
DEFAULTS = ModelConfig()


@serve.deployment  # resources, scaling and queues: serve_config.yaml
class Classifier:
    def __init__(self, model: str, verify_key_file: str | None = None, model_key_file: str | None = None):
        self.info = load_info(model, verify_key_file)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.pad_id, self.version = self.info.pad_token_id, self.info.version
        # An encrypted artifact is decrypted in this replica's memory (app/runtimes.py): nothing
        # decrypted is written, shared or ray.put (the object store spills to disk).
        self.key_file = model_key_file
        # Where ONNX graphs built from the artifact are kept on this node; None keeps them in
        # memory only (the cached graph holds the weights in the clear; runtimes.load turns the
        # cache off for an encrypted artifact).
        self.onnx_cache = cache_root()
        self.stats = {"batches": 0, "forwards": 0, "texts": 0, "tokens": 0, "padded_tokens": 0}
        self.batch_texts = metrics.Histogram("classifier_batch_texts", "Texts per merged batch",
                                             boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
        self.batch_tokens = metrics.Histogram("classifier_batch_tokens", "Real tokens per merged batch",
                                              boundaries=[16, 64, 256, 1024, 4096, 16384, 65536])
        self.model_ms = metrics.Histogram("classifier_model_ms", "Forward time per merged batch (ms)",
                                          boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000])
        # Warm before the replica reports ready: first requests see no one-off costs.
        self.runtime, self.threads = self._load(DEFAULTS), self._threads(DEFAULTS)
        self._apply(DEFAULTS)

    async def reconfigure(self, user_config: dict) -> None:
        config = ModelConfig.read(user_config, "Classifier user_config")
        if (config.runtime, self._threads(config)) != (self.runtime.name, self.threads):
            # Built and warmed in a thread while the current runtime keeps serving; batches pick
            # up the new one once it is swapped in, so no request waits for the build or fails.
            runtime = await asyncio.to_thread(self._load, config)
            self.runtime, self.threads = runtime, self._threads(config)
        self._apply(config)

    def _threads(self, config: ModelConfig) -> int:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        # Ray sets OMP_NUM_THREADS=1 for fractional CPUs; the thread count is ours to choose.
        return config.torch_threads or max(1, round(cpus))

    def _load(self, config: ModelConfig) -> runtimes.Runtime:
        started = time.perf_counter()
        runtime = runtimes.load(self.info, config.runtime, self.device, self._threads(config), self.onnx_cache,
                                self.key_file)
        for length in (8, 64):
            ids = np.full(length * 2, self.pad_id + 1, dtype=np.int32)
            compute.passes(runtime.forward, {"ids": ids, "lengths": np.array([length, length], dtype=np.int32)},
                           self.pad_id, config.max_batch_size, config.max_batch_tokens)
        log.info("runtime %s ready in %.1f s (%d threads)", runtime.name, time.perf_counter() - started,
                 self._threads(config))
        return runtime

    def _apply(self, config: ModelConfig) -> None:
        self.config = config
        self.forward_batch.set_max_batch_size(self.config.max_batch_size)
        self.forward_batch.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)

    def _logits(self, enc: dict) -> np.ndarray:
        runtime = self.runtime  # one runtime for the whole batch, even if a swap lands meanwhile
        out, passes = compute.passes(runtime.forward, enc, self.pad_id,
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
        # One 0/1 count per runtime (numbers, so the ingress's sum over replicas says how many run each).
        on = {f"runtime_{name}": int(name == self.runtime.name) for name in runtimes.NAMES}
        return dict(self.stats, **on, max_batch_size=self.config.max_batch_size, replica=replica)

    def ping(self) -> bool:
        return True
