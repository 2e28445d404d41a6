"""The training configuration: one typed reader for presets, files and CLI overrides."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PRESET_DIR = Path(__file__).parent / "configs"
DEFAULT_LABEL_SEPARATOR = "|"


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
    # Multi-label: a row holds zero or more labels, either joined in label_column or as 0/1 columns.
    multi_label: bool = Field(False, description="Sigmoid outputs, BCE-with-logits loss, per-label thresholds")
    label_separator: str | None = Field(
        None, min_length=1, description=f"Multi-label: what joins a row's labels in label_column "
                                        f"(default {DEFAULT_LABEL_SEPARATOR!r})")
    label_columns: list[str] | None = Field(
        None, min_length=2, description="Multi-label: one 0/1 column per label, in label order (instead of label_column)")

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

    # After training (on the validation split; multi-label thresholds are always tuned)
    calibrate: bool = Field(True, description="Single-label: fit a softmax temperature, stored in the artifact")

    @model_validator(mode="before")
    @classmethod
    def _columns_imply_multi_label(cls, values: Any) -> Any:
        # 0/1 label columns only exist for multi-label data: giving them says so.
        if isinstance(values, dict) and values.get("label_columns") and values.get("multi_label") is None:
            values = {**values, "multi_label": True}
        return values

    @model_validator(mode="after")
    def _columns_differ(self) -> "TrainConfig":
        if self.label_columns is None and self.text_column == self.label_column:
            raise ValueError(f"text_column and label_column must differ; both are {self.text_column!r}")
        return self

    @model_validator(mode="after")
    def _one_label_format(self) -> "TrainConfig":
        if not self.multi_label and (self.label_separator is not None or self.label_columns is not None):
            given = "label_separator" if self.label_separator is not None else "label_columns"
            raise ValueError(f"{given} describes multi-label data; it needs multi_label: true (got false)")
        if self.label_separator is not None and self.label_columns is not None:
            raise ValueError("give one multi-label format: label_separator (labels joined in label_column) "
                             "or label_columns (one 0/1 column each), not both")
        columns = self.label_columns or []
        if len(set(columns)) != len(columns):
            raise ValueError(f"label_columns names a column twice: {columns}")
        if self.text_column in columns:
            raise ValueError(f"label_columns holds the text column {self.text_column!r}")
        return self

    @property
    def separator(self) -> str:
        return self.label_separator or DEFAULT_LABEL_SEPARATOR


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
