"""The model artifact: the one contract between training and serving.

A directory written by `save_pretrained` (safetensors weights, tokenizer, `id2label` in config.json),
plus `training_config.json`, `metrics.json` and `manifest.json` holding the sha256 of every other
file. `verify` refuses missing, extra or changed files and any pickle-format weights; both sides load
through this module only.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # HMAC-SHA256 of manifest.json, when a signing key is configured
SIGNING_KEY_ENV = "MODEL_SIGNING_KEY"
WEIGHTS = "model.safetensors"
FORMAT = "ray-text-classifier/1"
# Weight formats that unpickle (run code) on load; never accepted, even when listed in the manifest.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".h5", ".msgpack"}


class ArtifactError(ValueError):
    """An artifact that must not be loaded; the message names the file and the reason."""


@dataclass(frozen=True)
class ArtifactInfo:
    path: Path
    version: str  # sha256 of the manifest: changes whenever any file changes
    labels: list[str]
    max_length: int
    multi_label: bool
    base_model: str
    pad_token_id: int
    metrics: dict[str, Any]
    training_config: dict[str, Any]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _listing(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() not in (MANIFEST, SIGNATURE)
    )


def signing_key() -> bytes | None:
    """The HMAC key from the environment (a Kubernetes Secret): training signs, serving insists."""
    value = os.environ.get(SIGNING_KEY_ENV)
    return value.encode() if value else None


def _signature(key: bytes, manifest: bytes) -> str:
    return hmac.new(key, manifest, hashlib.sha256).hexdigest()


def _check_signature(root: Path, raw: bytes, key: bytes) -> None:
    try:
        given = (root / SIGNATURE).read_text().strip()
    except FileNotFoundError:
        raise ArtifactError(f"{root}: unsigned artifact refused ({SIGNING_KEY_ENV} is set)") from None
    if not hmac.compare_digest(given, _signature(key, raw)):
        raise ArtifactError(f"{root}/{SIGNATURE}: signature does not match (another key, or a changed manifest)")


def write_manifest(root: Path) -> dict[str, Any]:
    manifest = {"format": FORMAT, "files": {name: sha256_file(root / name) for name in _listing(root)}}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def verify(root: str | Path) -> str:
    """Check every file against the manifest, and its signature when a signing key is configured;
    return the artifact version (the manifest's sha256)."""
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"{root}: model directory does not exist")
    try:
        raw = (root / MANIFEST).read_bytes()
        manifest = json.loads(raw)
        listed = manifest["files"]
    except FileNotFoundError:
        raise ArtifactError(f"{root}: no {MANIFEST}; only exported artifacts can be loaded") from None
    except (ValueError, KeyError, TypeError):
        raise ArtifactError(f"{root}/{MANIFEST}: not a valid manifest") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{root}/{MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    key = signing_key()
    if key:
        _check_signature(root, raw, key)
    present = set(_listing(root))
    for name in sorted(present | set(listed)):
        if Path(name).suffix.lower() in PICKLE_SUFFIXES:
            raise ArtifactError(f"{root}/{name}: pickle-format weights are refused; only safetensors load")
    if WEIGHTS not in listed:
        raise ArtifactError(f"{root}: manifest lists no {WEIGHTS}")
    missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
    if missing:
        raise ArtifactError(f"{root}: files listed in the manifest are missing: {missing}")
    if extra:
        raise ArtifactError(f"{root}: files not in the manifest: {extra}")
    for name, expected in listed.items():
        if sha256_file(root / name) != expected:
            raise ArtifactError(f"{root}/{name}: sha256 does not match the manifest (file changed)")
    return hashlib.sha256(raw).hexdigest()


def read_info(root: str | Path) -> ArtifactInfo:
    """Verify, then read what serving needs to know. Labels come only from config.json."""
    root = Path(root)
    version = verify(root)
    config = json.loads((root / "config.json").read_text())
    training = json.loads((root / "training_config.json").read_text())
    metrics = json.loads((root / "metrics.json").read_text())
    id2label = config.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    if len(labels) < 2:
        raise ArtifactError(f"{root}/config.json: id2label must name at least 2 labels, got {id2label}")
    return ArtifactInfo(
        path=root,
        version=version,
        labels=labels,
        max_length=int(training["max_length"]),
        multi_label=config.get("problem_type") == "multi_label_classification",
        base_model=str(training.get("base_model", "")),
        pad_token_id=int(config.get("pad_token_id") or 0),
        metrics=metrics,
        training_config=training,
    )


def load_tokenizer(info: ArtifactInfo):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(info.path)


def load_model(info: ArtifactInfo):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(info.path, use_safetensors=True)
    return model.eval()


def export(model, tokenizer, out_dir: str | Path, training_config: dict, metrics: dict) -> str:
    """Write a complete artifact to out_dir, atomically replacing what was there; return its version."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "training_config.json").write_text(json.dumps(training_config, indent=2, sort_keys=True) + "\n")
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        write_manifest(staging)
        key = signing_key()
        if key:
            (staging / SIGNATURE).write_text(_signature(key, (staging / MANIFEST).read_bytes()) + "\n")
        version = verify(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return version
