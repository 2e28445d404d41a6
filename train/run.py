"""The driver: load data, launch `train_func` on a Ray Train worker group, export the best checkpoint."""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from train import storage
from train.artifact import export
from train.config import TrainConfig, parse_config
from train.data import load_data

log = logging.getLogger("train")
MODEL_DIR, RUNS_DIR = "model", "ray_train"  # inside --output: the artifact, and Ray Train's run storage


def resume_config(output: str) -> tuple[TrainConfig, str]:
    """The saved config and name of the latest run under OUTPUT, to continue it."""
    runs = [name for name in storage.list_dirs(storage.join(output, RUNS_DIR)) if name.startswith("run-")]
    if not runs:
        raise FileNotFoundError(f"{storage.join(output, RUNS_DIR)}: no run to resume")
    saved = storage.join(output, RUNS_DIR, runs[-1], "train_config.json")
    return parse_config(json.loads(storage.read_bytes(saved)), source=saved), runs[-1]


def fit(cfg: TrainConfig, output: str | Path, run_name: str | None = None) -> tuple[str, str, dict]:
    """Train with Ray Train and export the best checkpoint to OUTPUT/model; return (location, version, metrics).

    OUTPUT is a local directory or a storage URI (s3://, gs://). A run_name that exists under
    OUTPUT/ray_train resumes that run from its last checkpoint.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from train.loop import train_func

    output = str(output) if storage.is_uri(str(output)) else str(Path(output).resolve())
    run_name = run_name or time.strftime("run-%Y%m%d-%H%M%S")
    storage.write_text(storage.join(output, RUNS_DIR, run_name, "train_config.json"), cfg.model_dump_json(indent=2))

    from ray.data import DataContext
    from transformers.utils import logging as hf_logging

    DataContext.get_current().enable_progress_bars = False  # bars per split drown the epoch lines
    hf_logging.disable_progress_bar()
    if not ray.is_initialized():
        ray.init()  # joins RAY_ADDRESS when set (a RayJob), else starts a local cluster
    data = load_data(cfg)
    log.info(
        "data: %d train / %d validation rows, labels %s, %d blank row(s) dropped",
        data.n_train, data.n_val, data.labels, data.dropped_blank,
    )
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})}
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"config": cfg.model_dump(), "labels": data.labels, "n_train": data.n_train},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage.join(output, RUNS_DIR),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.keep_checkpoints,
                checkpoint_score_attribute="val_macro_f1",
                checkpoint_score_order="max",
            ),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
        datasets={"train": data.train, "val": data.val},
    )
    result = trainer.fit()
    best, metrics = max(result.best_checkpoints, key=lambda pair: pair[1]["val_macro_f1"])
    with best.as_directory() as directory:
        model, tokenizer = _load_checkpoint(directory)
        summary = {
            "best_epoch": metrics["epoch"],
            "validation": {k[4:]: v for k, v in metrics.items() if k.startswith("val_")},
            "train_loss": metrics["train_loss"],
            "train_samples_per_s": metrics["train_samples_per_s"],
            "n_train": data.n_train,
            "n_val": data.n_val,
            "dropped_blank": data.dropped_blank,
            # Epoch this invocation started from: > 0 when it resumed a run from a checkpoint.
            "start_epoch": result.metrics["start_epoch"] if result.metrics else cfg.epochs,
        }
        resolved = cfg.model_dump() | {"labels": data.labels, "run": run_name}
        target = storage.join(output, MODEL_DIR)
        if storage.is_uri(target):
            with tempfile.TemporaryDirectory() as tmp:
                version = export(model, tokenizer, Path(tmp) / MODEL_DIR, resolved, summary)
                storage.upload_dir(Path(tmp) / MODEL_DIR, target)
        else:
            version = export(model, tokenizer, target, resolved, summary)
    return target, version, summary


def _load_checkpoint(directory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(directory, use_safetensors=True)
    return model, AutoTokenizer.from_pretrained(directory)
