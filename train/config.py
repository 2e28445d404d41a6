"""The training configuration: one typed reader for presets, files and CLI overrides."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PRESET_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field and the value."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Data
    data: str | None = Field(None, description="Training data: file (csv/tsv/jsonl/parquet), directory or URI")
    val_data: str | None = Field(None, description="Validation data; default: a seeded stratified split")
    text_column: str = "text"
    label_column: str = "label"
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    drop_blank: bool = Field(True, description="Drop rows with blank texts (counted) instead of failing")
    max_train_rows: int | None = Field(None, ge=2, description="Seeded sample of the training rows")

    # Model
    base_model: str = Field("all-MiniLM-L6-v2", description="Hugging Face name or local path")
    random_init: dict[str, Any] | None = Field(
        None, description="Build the base model's architecture with these overrides and random weights"
    )
    max_length: int = Field(128, ge=8, le=8192)

    # Optimisation
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=1, description="Per worker")
    eval_batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 42
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = "auto"

    # Ray Train
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    torch_threads: int | None = Field(None, ge=1, description="Per worker; default: its CPU share")
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(1, ge=0)
    log_every_steps: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _columns_differ(self) -> "TrainConfig":
        if self.text_column == self.label_column:
            raise ValueError(f"text_column and label_column must differ; both are {self.text_column!r}")
        return self


def _preset_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if not preset.exists():
        names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name_or_path!r}; presets: {', '.join(names)} (or a .yaml path)")
    return preset


def load_config(preset: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a preset (name or YAML path), apply non-None overrides, validate the result."""
    path = _preset_path(preset)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(values).__name__}")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return parse_config(values, source=str(path))


def parse_config(values: dict[str, Any], source: str = "config") -> TrainConfig:
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']} (got {e.get('input')!r})"
            for e in err.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None
