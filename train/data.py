"""Labelled text data: read, check, clean, split and hand to Ray Data.

Local files are read with pandas so that errors can name the file, column and row. Directories and
URIs (s3://, gs://, file://) go to `ray.data` (train/data_distributed.py), so data larger than
memory is never gathered in one process; both paths apply the rules defined here, so the same rows
give the same labels, counts and errors either way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

READERS = {
    ".csv": lambda p: pd.read_csv(p),
    ".tsv": lambda p: pd.read_csv(p, sep="\t", quoting=3),  # GLUE TSVs hold bare quotes
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".parquet": lambda p: pd.read_parquet(p),
}
COMPRESSIONS = {".bz2", ".gz", ".xz", ".zst", ".zip"}
TEXT, LABEL = "text", "label_id"  # column names inside the Ray datasets


class DataError(ValueError):
    """Data that cannot be trained on; the message names the file, column and row."""


@dataclass(frozen=True)
class LabelledData:
    train: "ray.data.Dataset"  # noqa: F821 - imported lazily
    val: "ray.data.Dataset"  # noqa: F821
    labels: list[str]
    n_train: int
    n_val: int
    dropped_blank: int


def is_remote_or_dir(path: str) -> bool:
    return "://" in path or Path(path).is_dir()


def format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    fmt = format_of(path)
    if fmt not in READERS:
        raise DataError(f"{path}: unknown format {fmt or '(no suffix)'!r}; use one of {', '.join(READERS)}")
    try:
        frame = READERS[fmt](path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot be read as {fmt[1:]}: {err}") from None
    if frame.empty:
        raise DataError(f"{path}: file holds no data rows")
    return frame


def check_columns(columns: list[str], source: str, text_column: str, label_column: str) -> None:
    for name, role in ((text_column, "text"), (label_column, "label")):
        if name not in columns:
            raise DataError(f"{source}: no {role} column {name!r}; columns are: {', '.join(map(str, columns))}")


def is_blank(values: pd.Series) -> pd.Series:
    return values.isna() | (values.astype(str).str.strip() == "")


def fractional(labels: pd.Series) -> bool:
    """Whether a float label column holds a non-integer value (its labels then keep their decimals)."""
    if not pd.api.types.is_float_dtype(labels):
        return False
    return bool(np.any(np.mod(labels.dropna().to_numpy(dtype="float64"), 1) != 0))  # Arrow-backed too


def label_strings(labels: pd.Series, any_fractional: bool) -> pd.Series:
    # Integer labels read through a float column (NaN elsewhere) must not become "1.0"; whether a
    # column is integer is decided over all of it (any_fractional), not row by row.
    if pd.api.types.is_float_dtype(labels) and not any_fractional:
        labels = labels.astype("int64")
    return labels.astype(str).str.strip()


def clean(frame: pd.DataFrame, source: str, text_column: str, label_column: str, drop_blank: bool):
    """Return (frame with columns text/label as str, number of blank-text rows dropped)."""
    check_columns(list(frame.columns), source, text_column, label_column)
    texts, labels = frame[text_column], frame[label_column]
    missing_label = is_blank(labels)
    if missing_label.any():
        rows = (np.flatnonzero(missing_label.to_numpy()) + 1)[:5].tolist()
        raise DataError(f"{source}: column {label_column!r} is empty in data row(s) {rows} (1-based, header excluded)")
    blank = is_blank(texts)
    if blank.any() and not drop_blank:
        rows = (np.flatnonzero(blank.to_numpy()) + 1)[:5].tolist()
        raise DataError(f"{source}: column {text_column!r} is blank in data row(s) {rows} (1-based, header excluded)")
    if blank.all():
        raise DataError(f"{source}: every text in column {text_column!r} is blank")
    kept = frame.loc[~blank]
    out = pd.DataFrame({
        "text": kept[text_column].astype(str),
        "label": label_strings(kept[label_column], fractional(kept[label_column])),
    })
    if blank.any():
        log.warning("%s: dropped %d row(s) with a blank %r", source, int(blank.sum()), text_column)
    return out.reset_index(drop=True), int(blank.sum())


def label_list(labels) -> list[str]:
    """Sorted, stable label list: numeric order when every label is an integer, else text order."""
    unique = sorted(set(labels))
    if all(s.lstrip("-").isdigit() for s in unique):
        unique = sorted(unique, key=int)
    return unique


def check_classes(labels: list[str], source: str, label_column: str) -> None:
    if len(labels) < 2:
        raise DataError(f"{source}: column {label_column!r} holds a single class {labels!r}; need at least 2")


def check_val_labels(val: pd.DataFrame, labels: list[str], source: str, label_column: str) -> None:
    unseen = ~val["label"].isin(labels)
    if unseen.any():
        row = int(np.flatnonzero(unseen.to_numpy())[0]) + 1
        raise DataError(
            f"{source}: label {val['label'].iloc[row - 1]!r} in column {label_column!r} (data row {row}) "
            f"never occurs in the training data; training labels: {labels}"
        )


def val_rows(n: int, fraction: float) -> int:
    """Validation rows held out of a class of n rows: its share, at least one, never all of them."""
    return 0 if n < 2 else min(n - 1, max(1, round(n * fraction)))


def stratified_split(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded split keeping each class's share; every class with 2+ rows gets 1+ validation rows."""
    rng = np.random.default_rng(seed)
    val_idx = []
    for _, idx in frame.groupby("label", sort=True).indices.items():
        if take := val_rows(len(idx), fraction):  # a single-row class draws nothing from rng
            val_idx.extend(rng.choice(idx, size=take, replace=False).tolist())
    is_val = np.zeros(len(frame), dtype=bool)
    is_val[val_idx] = True
    return frame.loc[~is_val].reset_index(drop=True), frame.loc[is_val].reset_index(drop=True)


def encode_labels(frame: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Rows as the workers read them: the text and the label's index in labels."""
    ids = frame["label"].map({label: i for i, label in enumerate(labels)}).astype("int64")
    return pd.DataFrame({TEXT: frame["text"].to_numpy(), LABEL: ids.to_numpy()})


def prepare_local(cfg) -> tuple[pd.DataFrame, pd.DataFrame, list[str], int]:
    """(train rows, validation rows, labels, blank rows dropped) of a local file, in pandas."""
    train, dropped = clean(read_table(cfg.data), cfg.data, cfg.text_column, cfg.label_column, cfg.drop_blank)
    if cfg.max_train_rows and len(train) > cfg.max_train_rows:
        train = train.sample(n=cfg.max_train_rows, random_state=cfg.seed).reset_index(drop=True)
    labels = label_list(train["label"])
    check_classes(labels, cfg.data, cfg.label_column)
    if cfg.val_data:
        val, dropped_val = clean(
            read_table(cfg.val_data), cfg.val_data, cfg.text_column, cfg.label_column, cfg.drop_blank
        )
        check_val_labels(val, labels, cfg.val_data, cfg.label_column)
        dropped += dropped_val
    else:
        train, val = stratified_split(train, cfg.val_fraction, cfg.seed)
    return train, val, labels, dropped


def load_local(cfg) -> LabelledData:
    import ray.data

    train, val, labels, dropped = prepare_local(cfg)
    return LabelledData(ray.data.from_pandas(encode_labels(train, labels)),
                        ray.data.from_pandas(encode_labels(val, labels)), labels, len(train), len(val), dropped)


def load_data(cfg) -> LabelledData:
    if not cfg.data:
        raise DataError("no training data given (--data PATH)")
    if is_remote_or_dir(cfg.data) or (cfg.val_data and is_remote_or_dir(cfg.val_data)):
        from train.data_distributed import load_distributed

        return load_distributed(cfg)
    return load_local(cfg)
