"""`train_func(config)`: what every Ray Train worker runs, in order: data, model, loop, evaluate, save."""
from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import ray.train
import ray.train.torch
from ray.train import Checkpoint

from train.config import TrainConfig
from train.data import LABEL, TEXT
from train.metrics import validation
from train.model import build, grad_scaler, load_weights, mixed_precision, optimizer as adamw, train_step

log = logging.getLogger("train")
STATE = "train_state.pt"  # optimizer, scheduler and epoch; the weights travel as safetensors


def _batches(name: str, batch_size: int, seed: int | None = None):
    shuffle = {"local_shuffle_buffer_size": 4 * batch_size, "local_shuffle_seed": seed} if seed is not None else {}
    shard = ray.train.get_dataset_shard(name)
    return shard.iter_batches(batch_size=batch_size, batch_format="numpy", **shuffle)


def _encode(tokenizer, batch, cfg: TrainConfig, device):
    # Dynamic padding: each batch is padded to its own longest text, not to max_length. Labels are
    # class indices, or float multi-hot rows for multi-label (transformers then takes BCE-with-logits).
    enc = tokenizer(batch[TEXT].tolist(), padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}, torch.as_tensor(batch[LABEL], device=device)


def _gather(value):
    """Every rank's value, in rank order (the value itself outside DDP)."""
    if not torch.distributed.is_initialized():
        return [value]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, value)
    return out


@torch.inference_mode()
def evaluate(model, tokenizer, cfg: TrainConfig, labels: list[str], device, autocast) -> dict:
    """Validation scores, the same on every rank. The logits of every rank's shard are gathered
    (texts x labels floats: small) because the thresholds and the temperature are fitted on the
    whole validation split, not summed from shards as a confusion matrix can be."""
    model.eval()
    logits, targets, loss_sum = [], [], 0.0
    for batch in _batches("val", cfg.eval_batch_size):
        inputs, y = _encode(tokenizer, batch, cfg, device)
        with autocast():
            out = model(**inputs, labels=y)
        loss_sum += float(out.loss) * len(y)
        logits.append(out.logits.float().cpu().numpy())
        targets.append(y.cpu().numpy())
    empty = (np.zeros((0, len(labels)), np.float32),
             np.zeros((0, len(labels)) if cfg.multi_label else 0, np.float32 if cfg.multi_label else np.int64))
    shards = _gather((np.concatenate(logits) if logits else empty[0], np.concatenate(targets) if targets else empty[1],
                      loss_sum))
    all_logits = np.concatenate([s[0] for s in shards])
    all_targets = np.concatenate([s[1] for s in shards])
    result = validation(all_logits, all_targets, labels, cfg.multi_label, cfg.calibrate)
    result["loss"] = float(sum(s[2] for s in shards) / max(1, len(all_logits)))
    return result


def _save(model, tokenizer, optimizer, scheduler, epoch: int, directory: Path) -> None:
    unwrapped = model.module if hasattr(model, "module") else model
    unwrapped.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch}, directory / STATE)


def _restore(model, optimizer, scheduler) -> int:
    """Load the last reported checkpoint, if any (a retried worker group or a resumed run); return the next epoch."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        load_weights(model.module if hasattr(model, "module") else model, Path(directory) / "model.safetensors")
        state = torch.load(Path(directory) / STATE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log.info("resumed from checkpoint after epoch %d", state["epoch"] + 1)
    return state["epoch"] + 1


def train_func(loop_config: dict) -> None:
    from transformers import get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    cfg = TrainConfig(**loop_config["config"])
    labels: list[str] = loop_config["labels"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    # Ray sets OMP_NUM_THREADS=1 for fractional CPUs; follow the worker's CPU share explicitly.
    torch.set_num_threads(cfg.torch_threads or max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)

    # Model: every rank builds the same initial weights from the same seed; DDP syncs them anyway.
    model, tokenizer = build(cfg.base_model, labels, cfg.random_init, cfg.multi_label)
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    optimizer = adamw(model, cfg.learning_rate, cfg.weight_decay)
    # Train's equal split gives every worker the same rows, hence the same step count (DDP needs it).
    steps_per_epoch = max(1, math.ceil((loop_config["n_train"] // world) / cfg.batch_size))
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    start_epoch = _restore(model, optimizer, scheduler)
    autocast, dtype = mixed_precision(device, cfg.mixed_precision)
    scaler = grad_scaler(dtype)

    started, done_steps = time.monotonic(), 0
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        loss_sum, seen, epoch_started = 0.0, 0, time.monotonic()
        for step, batch in enumerate(_batches("train", cfg.batch_size, seed=cfg.seed + epoch), start=1):
            inputs, targets = _encode(tokenizer, batch, cfg, device)
            loss = train_step(model, inputs, targets, optimizer, scheduler, autocast, scaler, cfg.max_grad_norm)
            loss_sum, seen, done_steps = loss_sum + loss.item() * len(targets), seen + len(targets), done_steps + 1
            if rank == 0 and (step % cfg.log_every_steps == 0 or step == steps_per_epoch):
                elapsed = time.monotonic() - started
                remaining = (total_steps - (start_epoch * steps_per_epoch) - done_steps) * elapsed / done_steps
                log.info(
                    "epoch %d/%d step %d/%d loss %.4f %.0f samples/s ETA %ds",
                    epoch + 1, cfg.epochs, step, steps_per_epoch, loss_sum / seen,
                    seen * world / max(1e-9, time.monotonic() - epoch_started),
                    remaining,
                )
        train_seconds = time.monotonic() - epoch_started  # before evaluation: the training loop's own rate
        metrics = {f"val_{k}": v for k, v in evaluate(model, tokenizer, cfg, labels, device, autocast).items()}
        metrics.update(epoch=epoch + 1, train_loss=loss_sum / max(1, seen), start_epoch=start_epoch,
                       train_samples_per_s=seen * world / max(1e-9, train_seconds))
        if rank == 0:
            log.info(
                "epoch %d/%d val_loss %.4f val_accuracy %.4f val_macro_f1 %.4f",
                epoch + 1, cfg.epochs, metrics["val_loss"], metrics["val_accuracy"], metrics["val_macro_f1"],
            )
            with tempfile.TemporaryDirectory() as tmp:
                _save(model, tokenizer, optimizer, scheduler, epoch, Path(tmp))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
