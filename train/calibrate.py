"""`python -m train.calibrate`: fit an exported artifact's calibration on labelled data, into a copy.

Training fits it on its validation split already; this is for an artifact exported without one
(before calibration existed, or with `calibrate: false`), or to refit on other held-out data.
Single-label: the temperature; multi-label: the per-label thresholds (train/calibration.py), on
the logits serving computes. The copy at --output gets calibration.json, a new manifest and, with
$MODEL_SIGNING_KEY_FILE set, a new signature; the source artifact is never changed.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from train.artifact import CALIBRATION, MANIFEST, SIGNATURE, ArtifactError, read_info, sign, verify, write_manifest
from train.calibration import ece, fit_temperature, tune_thresholds
from train.data import LABEL, DataError, check_val_labels, clean, encode_labels, read_table
from train.evaluate import label_format, logits_of

log = logging.getLogger("train.calibrate")


def calibrate(model_dir: str, data: str, text_column: str, label_column: str, output: str,
              label_separator: str | None = None, label_columns: list[str] | None = None) -> dict:
    """Write the calibrated copy; return what was fitted, with the ECE before and after (single-label)."""
    from app.compute import sigmoid, softmax

    info = read_info(model_dir)
    if info.encrypted:  # a copy would need the manifest's `encrypted` entry and the AEAD's version rebound
        raise ArtifactError(f"{model_dir}: encrypted artifacts are not recalibrated here; calibrate the plaintext "
                            "artifact (python -m train.artifact decrypt), then encrypt the copy")
    fmt = label_format(info, label_column, label_separator, label_columns)
    frame, _ = clean(read_table(data), data, text_column, label_column, drop_blank=True, fmt=fmt)
    check_val_labels(frame, info.labels, data, label_column, info.multi_label)
    logits = logits_of(info, frame["text"].tolist())
    if info.multi_label:
        truth = np.stack(encode_labels(frame, info.labels, multi=True)[LABEL].to_numpy())
        fitted = {"thresholds": dict(zip(info.labels, tune_thresholds(sigmoid(logits), truth)))}
        report = dict(fitted)
    else:
        truth = frame["label"].map({label: i for i, label in enumerate(info.labels)}).to_numpy()
        temperature = fit_temperature(logits, truth)
        fitted = {"temperature": temperature}
        report = {"temperature": temperature, "ece": ece(softmax(logits), truth),
                  "ece_calibrated": ece(softmax(logits / temperature), truth)}
    report.update(rows=len(frame), data=data, source_version=info.version)
    out = Path(output)
    if out.resolve() == Path(info.path).resolve():
        raise ArtifactError(f"{out}: --output must differ from --model; the source artifact is kept as it is")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copytree(info.path, staging, dirs_exist_ok=True,
                        ignore=lambda _, names: [n for n in names if n in (MANIFEST, SIGNATURE, CALIBRATION)])
        (staging / CALIBRATION).write_text(json.dumps(fitted, indent=2, sort_keys=True) + "\n")
        write_manifest(staging)
        from train import signing

        if signing.signing_key() is not None:
            sign(staging)
        report["version"] = verify(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.calibrate", description=__doc__)
    p.add_argument("--model", required=True, help="artifact directory")
    p.add_argument("--data", required=True, help="held-out labelled data (not the training rows)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--label-separator", help="multi-label: what joins a row's labels (default: as trained)")
    p.add_argument("--label-columns", type=lambda v: [c.strip() for c in v.split(",")],
                   help="multi-label: the 0/1 label columns, comma-separated (default: as trained)")
    p.add_argument("--output", required=True, help="directory for the calibrated copy")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        report = calibrate(args.model, args.data, args.text_column, args.label_column, args.output,
                           args.label_separator, args.label_columns)
    except (ArtifactError, DataError) as err:
        log.error("%s", err)
        return 2
    print(json.dumps(report, indent=2))  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    sys.exit(main())
