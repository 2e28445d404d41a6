"""Explainer stage: one text -> per-word attributions for one label (app/attribution.py).

A deployment of its own, with its own copy of the model, so an explanation (a forward and backward
pass per step: ~1 CPU-s where a classify costs ~4 CPU-ms) never waits behind, or delays, the
Classifier's batches. It runs one explanation at a time (`max_ongoing_requests: 1` in
serve_config.yaml) off the event loop, with a bounded queue in front (Serve answers
BackPressureError past `max_queued_requests`; the ingress turns it into 503). The ingress has
already checked the label, the steps and steps x tokens before the request was queued.
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import ray
import torch
from ray import serve

from app import attribution
from app.artifact_source import load_info
from app.config import ExplainerConfig
from train.artifact import load_model, load_tokenizer


@serve.deployment  # resources, scaling and queues: serve_config.yaml
class Explainer:
    def __init__(self, model: str, verify_key_file: str | None = None, model_key_file: str | None = None):
        info = load_info(model, verify_key_file)
        self.info = info
        # fp32 on CPU or GPU, no autocast: half-precision gradients raise the completeness delta.
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(info, model_key_file).to(self.device)  # decrypted in memory only
        for parameter in self.model.parameters():  # gradients are taken for the path only
            parameter.requires_grad_(False)
        self.tokenizer = load_tokenizer(info)
        self._apply(ExplainerConfig())
        # Before the replica reports ready, so the first request pays no one-off costs.
        self._explain("warm up", 0, "integrated_gradients", 2, None)

    def reconfigure(self, user_config: dict) -> None:
        self._apply(ExplainerConfig.read(user_config, "Explainer user_config"))

    def _apply(self, config: ExplainerConfig) -> None:
        self.config = config
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(config.torch_threads or max(1, round(cpus)))

    def _lower_priority(self) -> None:
        """Renice every thread of this process (on Linux a nice value is per thread, and torch's and
        asyncio's worker threads appear lazily), so the classify stages win a contended core."""
        tasks = Path("/proc/self/task")
        for tid in (int(t) for t in os.listdir(tasks)) if tasks.is_dir() else [0]:
            try:
                if os.getpriority(os.PRIO_PROCESS, tid) < self.config.nice:
                    os.setpriority(os.PRIO_PROCESS, tid, self.config.nice)  # raising it needs no privilege
            except OSError:  # a thread that ended meanwhile
                pass

    def _explain(self, text: str, target: int | None, method: str, steps: int, deadline: float | None) -> dict:
        self._lower_priority()
        started = time.process_time()
        out = attribution.explain(self.model, self.tokenizer, text, self.info.max_length, target,
                                  self.info.multi_label, method, steps, self.config.batch_tokens, deadline)
        return out | {"cpu_ms": round((time.process_time() - started) * 1000, 1)}

    async def explain(self, text: str, target: int | None, method: str, steps: int, deadline: float) -> dict:
        """The explanation, or DeadlineExceeded once `deadline` (time.time()) passes between chunks."""
        if time.time() > deadline:  # it waited out its deadline in the queue: no work at all
            raise attribution.DeadlineExceeded("the explanation passed its deadline in the queue")
        # A worker thread keeps the event loop free for health checks meanwhile.
        return await asyncio.to_thread(self._explain, text, target, method, steps, deadline)

    def ping(self) -> bool:
        return True
