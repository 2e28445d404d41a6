"""`python -m train`: fine-tune a classifier on a labelled CSV/TSV/JSONL/Parquet file with Ray Train."""
from __future__ import annotations

import argparse
import logging
import re
import sys

from train.artifact import ArtifactError
from train.config import ConfigError, load_config
from train.data import DataError
from train.encryption import single_kek
from train.signing import KeyFileError

# The flags that set the run's configuration; --resume takes them from the run it continues.
CONFIG_FLAGS = ("config", "data", "val_data", "text_column", "label_column", "multi_label", "label_separator",
                "label_columns", "epochs", "num_workers", "use_gpu", "base_model", "max_length", "max_train_rows")


def run_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def column_list(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",")]
    if len(names) < 2 or not all(names):
        raise argparse.ArgumentTypeError(f"{value!r}: give two or more column names separated by commas")
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    p.add_argument("--config", help="preset name in train/configs (tiny, default, gpu) or a YAML path (default: default)")
    p.add_argument("--data", help="training data: a file, a directory of such files, or an s3://, gs:// URI")
    p.add_argument("--val-data", help="validation data (default: a seeded stratified split of --data)")
    p.add_argument("--text-column", help="column holding the texts (default from the preset: text)")
    p.add_argument("--label-column", help="column holding the labels (default from the preset: label)")
    p.add_argument("--multi-label", action="store_true", default=None, help="each row holds zero or more labels, "
                   "joined by --label-separator in --label-column (empty: none); per-label thresholds are tuned")
    p.add_argument("--label-separator", help="multi-label: what joins a row's labels (default: |)")
    p.add_argument("--label-columns", type=column_list, help="multi-label: one 0/1 column per label, e.g. "
                   "sports,business,tech, instead of --label-column (implies --multi-label)")
    p.add_argument("--output", required=True, help="output directory: OUTPUT/model is the artifact, OUTPUT/ray_train the runs")
    p.add_argument("--epochs", type=int)
    p.add_argument("--num-workers", type=int, help="Ray Train workers (data-parallel)")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per worker, bf16/fp16 autocast")
    p.add_argument("--base-model", help="Hugging Face name or local path (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--max-length", type=int, help="tokens per text; longer texts are truncated")
    p.add_argument("--max-train-rows", type=int, help="train on a seeded sample of this many rows")
    p.add_argument("--run-name", type=run_name, help="name the run (OUTPUT/ray_train/NAME); started again with the "
                   "same name and settings, it resumes from its last checkpoint (default: run-DATE-TIME, a new run)")
    p.add_argument("--encrypt-key-file", help="model key-encryption key file (python -m train.artifact keygen --output): "
                   "the artifact's weights are written sealed, never in plaintext, to OUTPUT/model. The checkpoints "
                   "under OUTPUT/ray_train stay plaintext: keep that storage private (README: Model protection)")
    p.add_argument("--resume", action="store_true", help="continue the latest run under OUTPUT (or --run-name's) from "
                   "its last checkpoint, with the settings it was started with")
    return p



def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    given = [f"--{name.replace('_', '-')}" for name in CONFIG_FLAGS if getattr(args, name) is not None]
    if args.resume and given:
        p.error(f"--resume continues a run with the settings saved when it started "
                f"(OUTPUT/ray_train/RUN/train_config.json) and takes no {', '.join(given)}; "
                f"to change them, start a new run (without --resume, under another --output or --run-name)")
    if args.label_columns and args.label_column:
        p.error("give --label-column (one column of labels) or --label-columns (one 0/1 column per label), not both")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("train")
    from train.run import check_rerun, fit, resume_config

    try:
        if args.resume:
            cfg, name = resume_config(args.output, args.run_name)
        else:
            overrides = {flag: getattr(args, flag) for flag in CONFIG_FLAGS if flag != "config"}
            cfg, name = load_config(args.config or "default", overrides), args.run_name
            if name:
                check_rerun(cfg, args.output, name)
        if args.encrypt_key_file:
            single_kek(args.encrypt_key_file)  # a bad key fails before hours of training
        path, version, summary = fit(cfg, args.output, name, args.encrypt_key_file)
    except (ConfigError, DataError, ArtifactError, KeyFileError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    val = summary["validation"]
    log.info(
        "artifact %s (version %s): best epoch %d, validation accuracy %.4f, macro-F1 %.4f",
        path, version[:12], summary["best_epoch"], val["accuracy"], val["macro_f1"],
    )
    if "thresholds" in val:
        log.info("multi-label: micro-F1 %.4f at the tuned thresholds %s (%.4f at 0.5)", val["micro_f1"],
                 {k: round(v, 3) for k, v in val["thresholds"].items()}, val["at_0.5"]["micro_f1"])
    elif "temperature" in val:
        log.info("calibration: temperature %.3f, ECE %.4f -> %.4f", val["temperature"], val["ece"], val["ece_calibrated"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
