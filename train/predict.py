"""`python -m train.predict`: score a file, a directory or an s3://, gs:// URI with Ray Data.

Rows stream from the reader through a pool of actors (`map_batches` with a callable class) to the
writer; no process holds the whole dataset. Each actor verifies and loads the artifact as a serving
replica does (app/artifact_source.load_info: manifest hashes, and the Ed25519 signature when a key is
configured) and runs the stages' own functions (app/compute.py: encode, logits, predictions), so a
text gets the label /v1/classify answers. The driver verifies the artifact first: an unverified one
is refused before any data is read.

Output: every input row plus `label`, `score` and one `score_<label>` per label (with --prefix in
front of each), written by Ray Data as a directory of Parquet or CSV part files; the format comes
from the suffix of --output. Rows with a blank text keep an empty label and score.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from app import compute
from app.artifact_source import load_info
from app.config import ModelConfig
from train.artifact import ArtifactError, load_model, load_tokenizer
from train.config import DEFAULT_LABEL_SEPARATOR
from train.data import DataError, is_blank
from train.storage import is_uri

log = logging.getLogger("train.predict")
OUTPUT_FORMATS = (".parquet", ".csv")
# Ray Data's own tasks (listing files, reading, writing) each ask for a CPU, and the actors keep
# theirs until the last row: with every CPU held by actors, a listing task waited forever (seen: 2
# actors on 2 CPUs, and 1 actor of 2 CPUs). A local cluster gets one logical CPU more than the
# machine has cores for those light tasks, and no pool may take the cluster's last CPU.
IO_CPUS = 1


def start_local_ray() -> None:
    """The local cluster train.predict starts when it joins none: the cores, plus IO_CPUS."""
    import ray

    ray.init(num_cpus=(os.cpu_count() or 1) + IO_CPUS)


def output_columns(labels: list[str], prefix: str) -> list[str]:
    return [f"{prefix}label", f"{prefix}score", *(f"{prefix}score_{label}" for label in labels)]


class Scorer:
    """One actor of the pool: the artifact, verified and loaded once, then batch after batch."""

    def __init__(self, model: str, verify_key_file: str | None, text_column: str, prefix: str, threads: int):
        import torch

        from train.model import mixed_precision

        self.info = load_info(model, verify_key_file)
        torch.set_num_threads(threads)  # Ray gives actors OMP_NUM_THREADS=1 unless told
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(self.info).to(self.device)
        self.tokenizer = load_tokenizer(self.info)
        self.autocast, _ = mixed_precision(self.device)
        self.text_column, self.columns = text_column, output_columns(self.info.labels, prefix)
        self.limits = ModelConfig()  # the forward-pass limits a Classifier replica starts with
        self.separator = self.info.training_config.get("label_separator") or DEFAULT_LABEL_SEPARATOR

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        texts = batch[self.text_column]
        rows = np.flatnonzero(~is_blank(texts).to_numpy())
        labels = self.info.labels
        label = np.full(len(batch), None, dtype=object)
        scores = np.full((len(batch), 1 + len(labels)), np.nan, dtype=np.float64)
        if len(rows):
            enc = compute.encode(self.tokenizer, texts.iloc[rows].astype(str).tolist(), self.info.max_length)
            logits, _ = compute.logits(self.model, enc, self.info.pad_token_id, self.device, self.autocast,
                                       self.limits.max_batch_size, self.limits.max_batch_tokens)
            # The artifact's calibration as the Postprocessor applies it: temperature, thresholds.
            preds = compute.predictions(logits, labels, [None] * len(rows), self.info.multi_label,
                                        temperature=self.info.temperature, thresholds=self.info.thresholds)
            # Multi-label: every label over its threshold, joined as training reads them (none: "").
            label[rows] = [self.separator.join(s["label"] for s in p["labels"]) if self.info.multi_label
                           else p["label"] for p in preds]
            by_label = [{s["label"]: s["score"] for s in p["scores"]} for p in preds]
            scores[rows] = [[np.nan if p["score"] is None else p["score"], *(b[name] for name in labels)]
                            for p, b in zip(preds, by_label)]
        added = {self.columns[0]: label, **{name: scores[:, i] for i, name in enumerate(self.columns[1:])}}
        return batch.assign(**added)


def _absolute(location: str) -> str:
    # Actors resolve paths in their own working directory: hand them absolute ones.
    return location if is_uri(location) else str(Path(location).expanduser().resolve())


def _exists(location: str) -> bool:
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(location if is_uri(location) else Path(location).as_uri())
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def predict(model: str, data: str, text_column: str, output: str, num_workers: int = 1, use_gpu: bool = False,
            batch_size: int = 256, cpus_per_worker: float = 1, prefix: str = "",
            verify_key_file: str | None = None) -> None:
    import ray

    fmt = PurePosixPath(output.rstrip("/")).suffix.lower()
    if fmt not in OUTPUT_FORMATS:
        raise DataError(f"{output}: the output's suffix picks its format; use one of {', '.join(OUTPUT_FORMATS)}")
    model, data, output = _absolute(model), _absolute(data), _absolute(output)
    info = load_info(model, verify_key_file)  # refused here, before any data is read or worker started
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()  # a RayJob's driver joins its cluster
        else:
            start_local_ray()
    cpus, asked = ray.cluster_resources().get("CPU", 0), num_workers * cpus_per_worker
    if asked > cpus - IO_CPUS:
        raise DataError(f"{num_workers} worker(s) x {cpus_per_worker:g} CPU leave no CPU of the cluster's {cpus:g} "
                        f"for Ray Data's read and write tasks; ask for at most {cpus - IO_CPUS:g} CPUs in all")
    from train.data_distributed import open_dataset

    ds, columns = open_dataset(data)
    if text_column not in columns:
        raise DataError(f"{data}: no text column {text_column!r}; columns are: {', '.join(map(str, columns))}")
    clash = sorted(set(output_columns(info.labels, prefix)) & set(columns))
    if clash:
        raise DataError(f"{data}: already has column(s) {', '.join(clash)}; pass --prefix (e.g. --prefix pred_) "
                        f"to name the added columns apart")
    if _exists(output):
        raise DataError(f"{output}: already exists; choose a new output")
    threads = max(1, round(cpus_per_worker))
    # One file may be one block, and a block goes to one actor: blocks of one batch each spread
    # the rows over the whole pool (measured: 2 actors scored at 0.39x the limit, one of them idle).
    scored = ds.repartition(target_num_rows_per_block=batch_size).map_batches(
        Scorer, batch_size=batch_size, batch_format="pandas",
        fn_constructor_kwargs={"model": model, "verify_key_file": verify_key_file, "text_column": text_column,
                               "prefix": prefix, "threads": threads},
        compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0)
    started = time.perf_counter()
    write = scored.write_parquet if fmt == ".parquet" else scored.write_csv
    write(output, mode=ray.data.SaveMode.ERROR)
    log.info("scored %s with model %s (version %s) into %s in %.1f s", data, model, info.version[:16], output,
             time.perf_counter() - started)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="artifact: a directory or an s3://, gs://, file:// URI")
    p.add_argument("--data", required=True, help="CSV, TSV, JSONL or Parquet: a file, a directory of one format, or a URI")
    p.add_argument("--text-column", default="text")
    p.add_argument("--output", required=True, help="a new directory or URI ending in .parquet or .csv")
    p.add_argument("--num-workers", type=int, default=1, help="actors in the pool, each with its own model copy")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per actor (bf16/fp16 autocast)")
    p.add_argument("--batch-size", type=int, default=256, help="rows per actor call (cut into forward passes "
                   "as a Classifier replica cuts them)")
    p.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs each actor reserves (and torch threads)")
    p.add_argument("--prefix", default="", help="put in front of the added column names (when the input has a "
                   "`label` or `score` column)")
    p.add_argument("--verify-key", help="Ed25519 public key PEM the artifact must be signed for "
                   "(default: $MODEL_VERIFY_KEY; neither: unsigned artifacts are accepted, hashes still checked)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.num_workers < 1 or args.batch_size < 1 or args.cpus_per_worker <= 0:
        parser().error("--num-workers and --batch-size must be at least 1, --cpus-per-worker above 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        predict(args.model, args.data, args.text_column, args.output, args.num_workers, args.use_gpu,
                args.batch_size, args.cpus_per_worker, args.prefix, args.verify_key)
    except (ArtifactError, DataError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
