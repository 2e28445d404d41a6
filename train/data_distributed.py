"""Directories and URIs (s3://, gs://, file://): the local path's rules (train/data.py), on Ray Data.

Rows stay in Ray's object store, sharded; the driver holds only counts and the label list. Every
check and label rule is the one `data.clean` applies to a local file, run per batch, with the
column-wide decisions (is a float label column integer?) taken over all batches first. The
messages count rows instead of naming them: a row's position means nothing across shards.
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path, PurePosixPath

import pandas as pd

from train.data import (
    READERS, DataError, LabelFormat, LabelledData, bad_one_hot, check_classes, check_columns, encode_labels,
    format_of, fractional, is_blank, label_list, label_sets, label_strings, labels_in, multi_label_list,
    stratified_split, val_rows,
)

VAL_FLAG = "_val"


def _readers():
    import pyarrow.csv
    import ray.data

    # As pandas reads them locally: its NA spellings ("NA", "null", "") are missing in string columns
    # too, and TSVs take quotes literally (quoting=3 in data.READERS).
    nulls = pyarrow.csv.ConvertOptions(strings_can_be_null=True)
    return {
        ".csv": lambda p: ray.data.read_csv(p, convert_options=nulls),
        ".tsv": lambda p: ray.data.read_csv(
            p, convert_options=nulls, parse_options=pyarrow.csv.ParseOptions(delimiter="\t", quote_char=False)),
        ".jsonl": lambda p: ray.data.read_json(p, lines=True),
        ".parquet": _read_parquet,
    }


def _read_parquet(path: str):
    """read_parquet through Ray Data's first Parquet reader. Ray 2.60's default (DataSourceV2)
    lists files in extra tasks and samples the first file on the driver before any row is read:
    ~7 s of a 40 s, 8,000-row `train.predict` on 2 busy cores; with this reader the plan starts
    0.2 s after the call (bench/README.md, batch scoring). The flag is read when the plan is built, so it is set for
    this call only and the user's DataContext is left as it was."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    before, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        return ray.data.read_parquet(path)
    finally:
        ctx.use_datasource_v2 = before


def data_format(path: str) -> str:
    """The format of a file, or the one format of every file under a directory or URI prefix."""
    import pyarrow.fs

    fmt = format_of(PurePosixPath(path.rstrip("/")))
    if fmt in READERS:
        return fmt
    fs, root = pyarrow.fs.FileSystem.from_uri(path if "://" in path else str(Path(path).resolve()))
    info = fs.get_file_info(root)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise DataError(f"{path}: does not exist")
    if info.type == pyarrow.fs.FileType.File:
        names = [root]
    else:  # skipped as Ray Data skips them: _SUCCESS, .crc and other bookkeeping files
        found = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
        names = [f.path for f in found
                 if f.type == pyarrow.fs.FileType.File and not f.path[len(root):].lstrip("/").startswith((".", "_"))]
    formats = sorted({format_of(PurePosixPath(name)) for name in names})
    if not formats:
        raise DataError(f"{path}: holds no data files")
    if len(formats) > 1:
        raise DataError(f"{path}: holds files of several formats ({', '.join(f or '(no suffix)' for f in formats)}); "
                        f"keep one format per directory")
    if formats[0] not in READERS:
        raise DataError(f"{path}: unknown format {formats[0] or '(no suffix)'!r}; use one of {', '.join(READERS)}")
    return formats[0]


def open_dataset(path: str):
    """(Ray dataset over every row of path, its column names); train.predict reads with it too."""
    fmt = data_format(path)
    ds = _readers()[fmt](path)
    try:
        columns = ds.schema().names
    except ValueError as err:  # a RayTaskError(ValueError): its cause is the reader's own error
        cause = str(getattr(err, "cause", err)).strip().splitlines()
        raise DataError(f"{path}: cannot be read as {fmt[1:]}: {cause[0] if cause else type(err).__name__}") from None
    return ds, columns


def read(path: str, text_column: str, label_columns: list[str]):
    ds, columns = open_dataset(path)
    check_columns(columns, path, text_column, label_columns)
    return ds.select_columns([text_column, *label_columns])


def _batch_stats(batch: pd.DataFrame, text_column: str, fmt: LabelFormat) -> pd.DataFrame:
    blank = is_blank(batch[text_column])
    # Multi-label: a blank label cell is a row without labels; a 0/1 column holding more is an error.
    missing = bad_one_hot(batch, fmt) if fmt.multi else is_blank(batch[fmt.column])
    return pd.DataFrame({
        "rows": [len(batch)], "blank": [int(blank.sum())], "missing": [int(missing.sum())],
        "fractional": [0 if fmt.multi else int(fractional(batch[fmt.column][~blank & ~missing]))],
    })


def _clean_batch(batch: pd.DataFrame, text_column: str, fmt: LabelFormat, any_fractional: bool) -> pd.DataFrame:
    kept = batch.loc[~is_blank(batch[text_column])]
    labels = label_sets(kept, fmt) if fmt.multi else label_strings(kept[fmt.column], any_fractional)
    return pd.DataFrame({"text": kept[text_column].astype(str).to_numpy(), "label": labels.to_numpy()})


def clean(ds, source: str, text_column: str, fmt: LabelFormat, drop_blank: bool):
    """data.clean on a Ray dataset: (dataset of text/label strings, rows kept, blank-text rows dropped)."""
    stats = ds.map_batches(partial(_batch_stats, text_column=text_column, fmt=fmt),
                           batch_format="pandas").to_pandas().sum()  # one row per batch: small
    rows, blank, missing = int(stats.get("rows", 0)), int(stats.get("blank", 0)), int(stats.get("missing", 0))
    if not rows:
        raise DataError(f"{source}: holds no data rows")
    if missing and fmt.columns:
        raise DataError(f"{source}: label columns {list(fmt.columns)} hold other values than 0 and 1 in {missing} row(s)")
    if missing:
        raise DataError(f"{source}: column {fmt.column!r} is empty in {missing} row(s)")
    if blank and not drop_blank:
        raise DataError(f"{source}: column {text_column!r} is blank in {blank} row(s)")
    if blank == rows:
        raise DataError(f"{source}: every text in column {text_column!r} is blank")
    cleaned = ds.map_batches(partial(_clean_batch, text_column=text_column, fmt=fmt,
                                     any_fractional=bool(stats["fractional"])), batch_format="pandas")
    return cleaned, rows - blank, blank


def sample(ds, n: int, rows: int, seed: int):
    """Exactly n of the rows, seeded. A Bernoulli pass keeps a little over n (six standard deviations
    of margin) and only those are shuffled and cut to n, so a small sample of a large dataset costs
    one read, not a full shuffle; the full shuffle is the fallback should the margin ever fall short."""
    fraction = min(1.0, (n + 6 * math.sqrt(n) + 10) / rows)
    picked = ds.random_sample(fraction, seed=seed).random_shuffle(seed=seed).limit(n).materialize()
    return picked if picked.count() == n else ds.random_shuffle(seed=seed).limit(n).materialize()


def class_counts(ds) -> pd.Series:
    """Rows per label string, summed from per-batch counts: the driver gets one row per label and batch."""
    def count(batch: pd.DataFrame) -> pd.DataFrame:
        return batch["label"].value_counts().rename_axis("label").reset_index(name="rows")

    per_batch = ds.map_batches(count, batch_format="pandas").to_pandas()
    return per_batch.astype({"label": str, "rows": "int64"}).groupby("label")["rows"].sum()


def _flag_validation(group: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    # Rows reach a group in no fixed order; sorting by text makes the seeded choice repeatable,
    # so a resumed run validates on the same rows.
    group = group.sort_values("text", kind="stable").reset_index(drop=True)
    train, val = stratified_split(group, fraction, seed)
    return pd.concat([train.assign(**{VAL_FLAG: False}), val.assign(**{VAL_FLAG: True})], ignore_index=True)


def split(ds, fraction: float, seed: int, n_classes: int):
    """data.stratified_split per class (each class's rows are gathered once, as Ray's own stratified
    train_test_split gathers them): as many validation rows per class as from a local file."""
    flagged = ds.groupby("label", num_partitions=n_classes).map_groups(
        partial(_flag_validation, fraction=fraction, seed=seed), batch_format="pandas").materialize()

    def side(batch: pd.DataFrame, val: bool) -> pd.DataFrame:
        return batch.loc[batch[VAL_FLAG] == val].drop(columns=VAL_FLAG)

    return (flagged.map_batches(partial(side, val=False), batch_format="pandas"),
            flagged.map_batches(partial(side, val=True), batch_format="pandas"))


def load_distributed(cfg) -> LabelledData:
    """data.prepare_local's steps, in its order, on Ray datasets. Row counts follow from the class
    counts and the split rule (data.val_rows), so no pass over the data is spent counting."""
    fmt = LabelFormat.of(cfg)
    train, kept, dropped = clean(read(cfg.data, cfg.text_column, fmt.source), cfg.data, cfg.text_column, fmt,
                                 cfg.drop_blank)
    if cfg.max_train_rows and kept > cfg.max_train_rows:
        train = sample(train, cfg.max_train_rows, kept, cfg.seed)
    # Multi-label: counts are per label set, the unit that the split stratifies on.
    counts = class_counts(train)
    labels = multi_label_list(counts.index, fmt) if fmt.multi else label_list(counts.index)
    n_train = int(counts.sum())
    check_classes(labels, cfg.data, cfg.label_column)
    if cfg.val_data:
        val, n_val, dropped_val = clean(read(cfg.val_data, cfg.text_column, fmt.source), cfg.val_data,
                                        cfg.text_column, fmt, cfg.drop_blank)
        seen = class_counts(val).index
        unseen = sorted((labels_in(seen) if fmt.multi else set(seen)) - set(labels))
        if unseen:
            raise DataError(f"{cfg.val_data}: label(s) {unseen} in column {cfg.label_column!r} never occur in "
                            f"the training data; training labels: {labels}")
        dropped += dropped_val
    else:
        n_val = sum(val_rows(int(n), cfg.val_fraction) for n in counts)
        n_train -= n_val
        train, val = split(train, cfg.val_fraction, cfg.seed, len(counts))
    train, val = (ds.map_batches(partial(encode_labels, labels=labels, multi=fmt.multi), batch_format="pandas")
                  for ds in (train, val))
    return LabelledData(train, val, labels, n_train, n_val, dropped)
