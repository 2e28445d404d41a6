"""The driver: load data, launch `train_func` on a Ray Train worker group, export the best checkpoint."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from train.artifact import export
from train.config import TrainConfig, parse_config
from train.data import load_data

log = logging.getLogger("train")
MODEL_DIR, RUNS_DIR = "model", "ray_train"  # inside --output: the artifact, and Ray Train's run storage


def latest_run(output: Path) -> str | None:
    runs = sorted(p.name for p in (output / RUNS_DIR).glob("run-*") if (p / "train_config.json").exists())
    return runs[-1] if runs else None


def resume_config(output: Path) -> tuple[TrainConfig, str]:
    name = latest_run(output)
    if name is None:
        raise FileNotFoundError(f"{output / RUNS_DIR}: no run to resume")
    saved = json.loads((output / RUNS_DIR / name / "train_config.json").read_text())
    return parse_config(saved, source=f"{output / RUNS_DIR / name}/train_config.json"), name


def fit(cfg: TrainConfig, output: str | Path, run_name: str | None = None) -> tuple[Path, str, dict]:
    """Train with Ray Train and export the best checkpoint to OUTPUT/model; return (path, version, metrics).

    A run_name that exists under OUTPUT/ray_train resumes that run from its last checkpoint.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from train.loop import train_func

    output = Path(output).resolve()
    run_name = run_name or time.strftime("run-%Y%m%d-%H%M%S")
    run_dir = output / RUNS_DIR / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_config.json").write_text(cfg.model_dump_json(indent=2))

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
            storage_path=str(output / RUNS_DIR),
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
            "n_train": data.n_train,
            "n_val": data.n_val,
            "dropped_blank": data.dropped_blank,
            # Epoch this invocation started from: > 0 when it resumed a run from a checkpoint.
            "start_epoch": result.metrics["start_epoch"] if result.metrics else cfg.epochs,
        }
        resolved = cfg.model_dump() | {"labels": data.labels, "run": run_name}
        version = export(model, tokenizer, output / MODEL_DIR, resolved, summary)
    return output / MODEL_DIR, version, summary


def _load_checkpoint(directory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(directory, use_safetensors=True)
    return model, AutoTokenizer.from_pretrained(directory)
