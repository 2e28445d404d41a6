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
# Multi-label rows carry their labels as one string, sorted and joined by this (never typed in a
# label), so splitting, counting and stratifying treat a row's label set as single-label code
# treats a label; encode_labels turns it into the multi-hot vector the loss takes.
LABEL_SET_SEP = "\x1f"
ONE_HOT = {0: False, 1: True, "0": False, "1": True}  # 1.0 and True hash as 1: floats and bools pass


class DataError(ValueError):
    """Data that cannot be trained on; the message names the file, column and row."""


@dataclass(frozen=True)
class LabelFormat:
    """Where a row's labels are: one label in `column` (single-label), zero or more joined by
    `separator` in `column`, or one 0/1 column each in `columns` (multi-label)."""
    column: str = "label"
    multi: bool = False
    separator: str = "|"
    columns: tuple[str, ...] = ()

    @classmethod
    def of(cls, cfg) -> "LabelFormat":
        return cls(cfg.label_column, cfg.multi_label, cfg.separator, tuple(cfg.label_columns or ()))

    @property
    def source(self) -> list[str]:
        """The columns a reader needs besides the text."""
        return list(self.columns) or [self.column]


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


def check_columns(columns: list[str], source: str, text_column: str, label_columns: str | list[str]) -> None:
    labels = [label_columns] if isinstance(label_columns, str) else label_columns
    for name, role in ((text_column, "text"), *((name, "label") for name in labels)):
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


def bad_one_hot(frame: pd.DataFrame, fmt: LabelFormat) -> pd.Series:
    """Rows where a 0/1 label column holds anything else (blank included)."""
    bad = pd.Series(False, index=frame.index)
    for name in fmt.columns:
        bad |= frame[name].map(lambda v: ONE_HOT.get(v) is None).astype(bool)  # NaN equals no key
    return bad


def label_sets(frame: pd.DataFrame, fmt: LabelFormat) -> pd.Series:
    """Each row's labels as one string, sorted and joined by LABEL_SET_SEP ("" for none). 0/1
    columns must have passed bad_one_hot; a blank cell in label_column means no label."""
    if fmt.columns:
        hot = np.column_stack([frame[name].map(ONE_HOT.get).astype(bool).to_numpy() for name in fmt.columns])
        names = sorted(range(len(fmt.columns)), key=lambda j: fmt.columns[j])
        return pd.Series([LABEL_SET_SEP.join(fmt.columns[j] for j in names if row[j]) for row in hot],
                         index=frame.index, dtype=object)
    cells = frame[fmt.column]
    blank = is_blank(cells)
    text = label_strings(cells[~blank], fractional(cells[~blank]))
    out = pd.Series("", index=frame.index, dtype=object)
    out[~blank] = [LABEL_SET_SEP.join(sorted({p.strip() for p in cell.split(fmt.separator)} - {""}))
                   for cell in text]
    return out


def labels_in(sets) -> set[str]:
    """The labels named in label-set strings."""
    return {label for s in sets if s for label in s.split(LABEL_SET_SEP)}


def _blank_texts(texts: pd.Series, source: str, text_column: str, drop_blank: bool) -> pd.Series:
    """The rows whose text is blank: refused unless drop_blank, and refused when all are."""
    blank = is_blank(texts)
    if blank.any() and not drop_blank:
        rows = (np.flatnonzero(blank.to_numpy()) + 1)[:5].tolist()
        raise DataError(f"{source}: column {text_column!r} is blank in data row(s) {rows} (1-based, header excluded)")
    if blank.all():
        raise DataError(f"{source}: every text in column {text_column!r} is blank")
    return blank


def _dropped(out: pd.DataFrame, blank: pd.Series, source: str, text_column: str) -> tuple[pd.DataFrame, int]:
    if blank.any():
        log.warning("%s: dropped %d row(s) with a blank %r", source, int(blank.sum()), text_column)
    return out.reset_index(drop=True), int(blank.sum())


def clean_multi(frame: pd.DataFrame, source: str, text_column: str, fmt: LabelFormat, drop_blank: bool):
    """clean() for multi-label data: the label column becomes label-set strings."""
    check_columns(list(frame.columns), source, text_column, fmt.source)
    bad = bad_one_hot(frame, fmt)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        name = next(n for n in fmt.columns if ONE_HOT.get(frame[n].iloc[row]) is None)
        value = frame[name].iloc[row]
        raise DataError(f"{source}: label column {name!r} must hold 0 or 1; data row {row + 1} holds "
                        f"{getattr(value, 'item', lambda: value)()!r} (1-based, header excluded)")
    if not fmt.columns and frame[fmt.column].astype(str).str.contains(LABEL_SET_SEP, regex=False).any():
        raise DataError(f"{source}: column {fmt.column!r} holds the control character U+001F")
    texts = frame[text_column]
    blank = _blank_texts(texts, source, text_column, drop_blank)
    kept = frame.loc[~blank]
    out = pd.DataFrame({"text": kept[text_column].astype(str), "label": label_sets(kept, fmt)})
    return _dropped(out, blank, source, text_column)


def clean(frame: pd.DataFrame, source: str, text_column: str, label_column: str, drop_blank: bool,
          fmt: LabelFormat | None = None):
    """Return (frame with columns text/label as str, number of blank-text rows dropped). With a
    multi-label fmt, label holds each row's label set (label_sets)."""
    if fmt is not None and fmt.multi:
        return clean_multi(frame, source, text_column, fmt, drop_blank)
    check_columns(list(frame.columns), source, text_column, label_column)
    texts, labels = frame[text_column], frame[label_column]
    missing_label = is_blank(labels)
    if missing_label.any():
        rows = (np.flatnonzero(missing_label.to_numpy()) + 1)[:5].tolist()
        raise DataError(f"{source}: column {label_column!r} is empty in data row(s) {rows} (1-based, header excluded)")
    blank = _blank_texts(texts, source, text_column, drop_blank)
    kept = frame.loc[~blank]
    out = pd.DataFrame({
        "text": kept[text_column].astype(str),
        "label": label_strings(kept[label_column], fractional(kept[label_column])),
    })
    return _dropped(out, blank, source, text_column)


def label_list(labels) -> list[str]:
    """Sorted, stable label list: numeric order when every label is an integer, else text order."""
    unique = sorted(set(labels))
    if all(s.lstrip("-").isdigit() for s in unique):
        unique = sorted(unique, key=int)
    return unique


def check_classes(labels: list[str], source: str, label_column: str) -> None:
    if len(labels) < 2:
        raise DataError(f"{source}: column {label_column!r} holds a single class {labels!r}; need at least 2")


def multi_label_list(sets, fmt: LabelFormat) -> list[str]:
    """Multi-label: the 0/1 columns in the order given, else every label named, sorted as label_list."""
    return list(fmt.columns) if fmt.columns else label_list(labels_in(sets))


def check_val_labels(val: pd.DataFrame, labels: list[str], source: str, label_column: str, multi: bool = False) -> None:
    if multi:
        known = set(labels)
        for row, s in enumerate(val["label"], start=1):
            if unseen := sorted(labels_in([s]) - known):
                raise DataError(f"{source}: label(s) {unseen} in column {label_column!r} (data row {row}) never "
                                f"occur in the training data; training labels: {labels}")
        return
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


def encode_labels(frame: pd.DataFrame, labels: list[str], multi: bool = False) -> pd.DataFrame:
    """Rows as the workers read them: the text and the label's index in labels, or (multi-label)
    a float multi-hot row, which makes transformers' loss BCE-with-logits."""
    index = {label: i for i, label in enumerate(labels)}
    if multi:
        hot = np.zeros((len(frame), len(labels)), dtype=np.float32)
        for row, s in enumerate(frame["label"]):
            hot[row, [index[label] for label in labels_in([s])]] = 1.0
        return pd.DataFrame({TEXT: frame["text"].to_numpy(), LABEL: list(hot)})
    ids = frame["label"].map(index).astype("int64")
    return pd.DataFrame({TEXT: frame["text"].to_numpy(), LABEL: ids.to_numpy()})


def prepare_local(cfg) -> tuple[pd.DataFrame, pd.DataFrame, list[str], int]:
    """(train rows, validation rows, labels, blank rows dropped) of a local file, in pandas."""
    fmt = LabelFormat.of(cfg)
    train, dropped = clean(read_table(cfg.data), cfg.data, cfg.text_column, cfg.label_column, cfg.drop_blank, fmt)
    if cfg.max_train_rows and len(train) > cfg.max_train_rows:
        train = train.sample(n=cfg.max_train_rows, random_state=cfg.seed).reset_index(drop=True)
    labels = multi_label_list(train["label"], fmt) if fmt.multi else label_list(train["label"])
    check_classes(labels, cfg.data, cfg.label_column)
    if cfg.val_data:
        val, dropped_val = clean(
            read_table(cfg.val_data), cfg.val_data, cfg.text_column, cfg.label_column, cfg.drop_blank, fmt
        )
        check_val_labels(val, labels, cfg.val_data, cfg.label_column, fmt.multi)
        dropped += dropped_val
    else:
        train, val = stratified_split(train, cfg.val_fraction, cfg.seed)
    return train, val, labels, dropped


def load_local(cfg) -> LabelledData:
    import ray.data

    train, val, labels, dropped = prepare_local(cfg)
    return LabelledData(ray.data.from_pandas(encode_labels(train, labels, cfg.multi_label)),
                        ray.data.from_pandas(encode_labels(val, labels, cfg.multi_label)),
                        labels, len(train), len(val), dropped)


def load_data(cfg) -> LabelledData:
    if not cfg.data:
        raise DataError("no training data given (--data PATH)")
    if is_remote_or_dir(cfg.data) or (cfg.val_data and is_remote_or_dir(cfg.val_data)):
        from train.data_distributed import load_distributed

        return load_distributed(cfg)
    return load_local(cfg)
