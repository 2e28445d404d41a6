"""The driver: load data, launch `train_func` on a Ray Train worker group, export the best checkpoint."""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from train import storage
from train.artifact import export
from train.config import ConfigError, TrainConfig, parse_config
from train.data import load_data

log = logging.getLogger("train")
MODEL_DIR, RUNS_DIR = "model", "ray_train"  # inside --output: the artifact, and Ray Train's run storage


def saved_config(output: str, run_name: str) -> TrainConfig | None:
    """The config run_name under OUTPUT was started with, or None when there is no such run."""
    saved = storage.join(output, RUNS_DIR, run_name, "train_config.json")
    try:
        raw = storage.read_bytes(saved)
    except FileNotFoundError:
        return None
    return parse_config(json.loads(raw), source=saved)


def resume_config(output: str, run_name: str | None = None) -> tuple[TrainConfig, str]:
    """The saved config and name of run_name, or of the latest run-DATE-TIME under OUTPUT, to continue it."""
    runs = storage.list_dirs(storage.join(output, RUNS_DIR))
    if run_name is None:
        dated = [name for name in runs if name.startswith("run-")]  # their names sort by start time
        if not dated:
            raise FileNotFoundError(f"{storage.join(output, RUNS_DIR)}: no run to resume")
        run_name = dated[-1]
    cfg = saved_config(output, run_name)
    if cfg is None:
        raise FileNotFoundError(
            f"{storage.join(output, RUNS_DIR)}: no run {run_name!r} to resume; runs: {', '.join(runs) or 'none'}")
    return cfg, run_name


def check_rerun(cfg: TrainConfig, output: str, run_name: str) -> None:
    """A named run started again resumes from its checkpoints, which only fit the settings they were
    trained with: refuse other settings, naming each one that changed."""
    saved = saved_config(output, run_name)
    if saved is None or saved == cfg:
        return
    changed = [f"{field}: {getattr(saved, field)!r} -> {getattr(cfg, field)!r}"
               for field in TrainConfig.model_fields if getattr(saved, field) != getattr(cfg, field)]
    raise ConfigError(
        f"run {run_name!r} under {output} was started with other settings ({'; '.join(changed)}); "
        f"started again, a run resumes with its own settings: give the same ones, or another --run-name"
    )


def fit(cfg: TrainConfig, output: str | Path, run_name: str | None = None,
        encrypt_key_file: str | None = None) -> tuple[str, str, dict]:
    """Train with Ray Train and export the best checkpoint to OUTPUT/model; return (location, version, metrics).

    OUTPUT is a local directory or a storage URI (s3://, gs://). A run_name that exists under
    OUTPUT/ray_train resumes that run from its last checkpoint (Ray Train restores it by name).
    With encrypt_key_file (a KEK file on the driver), the artifact's weights are sealed in memory
    before anything is written. The checkpoints are not: each holds the plaintext weights
    (model.safetensors) and the optimizer state (train_state.pt), so OUTPUT/ray_train must be as
    private as the key, or deleted once the artifact is exported.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from train.loop import train_func

    output = str(output) if storage.is_uri(str(output)) else str(Path(output).resolve())
    run_name = run_name or time.strftime("run-%Y%m%d-%H%M%S")
    earlier = set(storage.list_dirs(storage.join(output, RUNS_DIR, run_name)))  # checkpoints of earlier invocations
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
            "start_epoch": _start_epoch(result, earlier),
        }
        resolved = cfg.model_dump() | {"labels": data.labels, "run": run_name}
        calibration = fitted(summary["validation"])
        target = storage.join(output, MODEL_DIR)
        if storage.is_uri(target):
            with tempfile.TemporaryDirectory() as tmp:
                version = export(model, tokenizer, Path(tmp) / MODEL_DIR, resolved, summary,
                                 encrypt_key_file=encrypt_key_file, calibration=calibration)
                storage.upload_dir(Path(tmp) / MODEL_DIR, target)
        else:
            version = export(model, tokenizer, target, resolved, summary, encrypt_key_file=encrypt_key_file,
                             calibration=calibration)
    return target, version, summary


def fitted(validation: dict) -> dict | None:
    """The artifact's calibration.json: what the best epoch's validation pass fitted (train/loop.py),
    the thresholds of a multi-label model or the temperature of a single-label one; None when
    calibration is off."""
    if "thresholds" in validation:
        return {"thresholds": validation["thresholds"]}
    if "temperature" in validation:
        return {"temperature": validation["temperature"]}
    return None


def _start_epoch(result, earlier: set[str]) -> int:
    """The epoch this invocation started from: > 0 when it resumed a run from a checkpoint. Ray Train
    reports the metrics of the run's latest checkpoint; when an earlier invocation wrote that one,
    this invocation found every epoch done."""
    latest = result.checkpoint.path.rstrip("/").rsplit("/", 1)[-1]
    return result.metrics["epoch"] if latest in earlier else result.metrics["start_epoch"]


def _load_checkpoint(directory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(directory, use_safetensors=True)
    return model, AutoTokenizer.from_pretrained(directory)
