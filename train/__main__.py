"""`python -m train`: fine-tune a classifier on a labelled CSV/TSV/JSONL/Parquet file with Ray Train."""
from __future__ import annotations

import argparse
import logging
import re
import sys

from train.artifact import ArtifactError
from train.config import ConfigError, load_config
from train.data import DataError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    p.add_argument("--config", default="default", help="preset name in train/configs (tiny, default, gpu) or a YAML path")
    p.add_argument("--data", help="training data: a file, a directory of Parquet/CSV, or an s3://, gs:// URI")
    p.add_argument("--val-data", help="validation data (default: a seeded stratified split of --data)")
    p.add_argument("--text-column", help="column holding the texts (default from the preset: text)")
    p.add_argument("--label-column", help="column holding the labels (default from the preset: label)")
    p.add_argument("--output", required=True, help="output directory: OUTPUT/model is the artifact, OUTPUT/ray_train the runs")
    p.add_argument("--epochs", type=int)
    p.add_argument("--num-workers", type=int, help="Ray Train workers (data-parallel)")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per worker, bf16/fp16 autocast")
    p.add_argument("--base-model", help="Hugging Face name or local path (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--max-length", type=int, help="tokens per text; longer texts are truncated")
    p.add_argument("--max-train-rows", type=int, help="train on a seeded sample of this many rows")
    runs = p.add_mutually_exclusive_group()
    runs.add_argument("--resume", action="store_true", help="continue the latest run under OUTPUT from its last checkpoint")
    runs.add_argument("--run-name", type=_run_name,
                      help="run-NAME under OUTPUT/ray_train; if it exists, it continues from its last checkpoint "
                           "(a retried job resumes instead of starting over)")
    return p


def _run_name(value: str) -> str:
    # `--resume` finds runs by this prefix; the rest becomes a directory name in storage.
    if not re.fullmatch(r"run-[A-Za-z0-9._-]+", value):
        raise argparse.ArgumentTypeError(f"expected run-NAME (letters, digits, . _ -), got {value!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("train")
    from train.run import fit, resume_config

    try:
        if args.resume:
            cfg, run_name = resume_config(args.output)
        else:
            overrides = {
                "data": args.data, "val_data": args.val_data, "text_column": args.text_column,
                "label_column": args.label_column, "epochs": args.epochs, "num_workers": args.num_workers,
                "use_gpu": args.use_gpu, "base_model": args.base_model, "max_length": args.max_length,
                "max_train_rows": args.max_train_rows,
            }
            cfg, run_name = load_config(args.config, overrides), args.run_name
        path, version, summary = fit(cfg, args.output, run_name)
    except (ConfigError, DataError, ArtifactError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    val = summary["validation"]
    log.info(
        "artifact %s (version %s): best epoch %d, validation accuracy %.4f, macro-F1 %.4f",
        path, version[:12], summary["best_epoch"], val["accuracy"], val["macro_f1"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
