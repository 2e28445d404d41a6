"""The model artifact: the one contract between training and serving.

A directory written by `save_pretrained` (safetensors weights, tokenizer, `id2label` in config.json),
plus `training_config.json`, `metrics.json`, optionally `calibration.json` (the temperature or the
per-label thresholds fitted on the validation split), and `manifest.json` holding the sha256 of
every other file, optionally `manifest.sig` (train/signing.py). `verify` refuses a malformed manifest, unsafe
file names, a missing or wrong signature when a verify key is configured, missing, extra or changed
files and any pickle-format weights; both sides load through this module only.

An encrypted artifact (train/encryption.py) stores `model.safetensors.enc` in place of the
weights; its manifest lists the stored file's sha256 (so a signature covers what is stored) and,
under `encrypted`, the plaintext's sha256 and size. Its *plaintext version* is the version the
same artifact has unencrypted (the manifest rebuilt with `model.safetensors`); every AEAD binds
it. `version` stays the sha256 of the stored manifest.json: encrypting changes it, a rewrap
(wrapped_keys.json only, outside the manifest) does not. `load_model` decrypts in memory only.
`python -m train.artifact` manages keys, signatures and encryption (train/artifact_cli.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from train import encryption, signing
from train.encryption import KEYS_FILE
from train.storage import resolve_inside

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # base64 Ed25519 signature of the manifest.json bytes (train/signing.py)
WEIGHTS = "model.safetensors"
SEALED = WEIGHTS + ".enc"  # the weights of an encrypted artifact
RESERVED = (MANIFEST, SIGNATURE, KEYS_FILE)  # beside the manifest, never listed in it
CALIBRATION = "calibration.json"
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
    plaintext_version: str = ""  # the version unencrypted; equal to version for a plaintext artifact
    encryption: dict[str, Any] | None = None  # the manifest's `encrypted` entry for the weights
    wrapped_keys: bytes | None = field(default=None, repr=False)  # wrapped_keys.json, read fresh at start
    temperature: float = 1.0  # single-label: probabilities are softmax(logits / temperature)
    thresholds: tuple[float, ...] | None = None  # multi-label: per label, in label order; None: 0.5 each

    @property
    def encrypted(self) -> bool:
        """Weights sealed at rest. Anything that would write a derived copy of the weights to disk
        (an exported ONNX graph cache, a compiled-kernel cache holding constants) must stay off,
        or be encrypted the same way, when this is true."""
        return self.encryption is not None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _listing(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() not in RESERVED
    )


def safe_name(name: str) -> str:
    """The one rule for a file name in a manifest: a plain relative path inside the artifact. A
    manifest comes from storage that others may write to, and its names become paths on every
    serving node, so anything that could point elsewhere is refused before a file is opened."""
    if not name or "\x00" in name:
        raise ValueError(f"unsafe file name {name!r}: empty or holds a NUL")
    if "\\" in name:
        raise ValueError(f"unsafe file name {name!r}: holds a backslash")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise ValueError(f"unsafe file name {name!r}: an absolute path or a drive")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"unsafe file name {name!r}: '..', '.' or an empty segment")
    if name in RESERVED:
        raise ValueError(f"unsafe file name {name!r}: reserved for the manifest, its signature and the wrapped keys")
    return name


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Sealed(BaseModel):
    """What the manifest says of an encrypted file: no secrets, enough to check the plaintext."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    plaintext: Literal[WEIGHTS]  # type: ignore[valid-type]
    sha256: Sha256
    size: int
    scheme: Literal[encryption.SCHEME]  # type: ignore[valid-type]


class Manifest(BaseModel):
    """manifest.json: the format tag and the sha256 (64 lowercase hex) of every other file; for an
    encrypted artifact, `encrypted` describes the sealed weights."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    format: Literal[FORMAT]  # type: ignore[valid-type]
    files: dict[Annotated[str, AfterValidator(safe_name)], Sha256]
    encrypted: dict[Literal[SEALED], Sealed] | None = None  # type: ignore[valid-type]


def _manifest_bytes(files: dict[str, str], encrypted: dict | None = None) -> bytes:
    document = {"format": FORMAT, "files": files, **({"encrypted": encrypted} if encrypted else {})}
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def plaintext_version(manifest: Manifest) -> str:
    """The version of this artifact unencrypted: the manifest rebuilt with the plaintext weights'
    hash in place of the sealed file's, serialised as write_manifest does."""
    files = dict(manifest.files)
    for stored, sealed in (manifest.encrypted or {}).items():
        files.pop(stored, None)
        files[sealed.plaintext] = sealed.sha256
    return hashlib.sha256(_manifest_bytes(files)).hexdigest()


def read_manifest(raw: bytes, where: str | Path) -> Manifest:
    """The manifest, once its shape, every name, the weights format and the presence of the
    weights (plaintext, or sealed and listed) are checked."""
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as err:
        problems = [
            str(e["ctx"]["error"]) if e["type"] == "value_error"
            else f"{'.'.join(map(str, e['loc'])) or 'the document'}: {e['msg']}"
            for e in err.errors()
        ]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ArtifactError(f"{where}/{MANIFEST}: not a valid manifest: {'; '.join(problems[:3])}{more}") from None
    for name in manifest.files:
        if PurePosixPath(name).suffix.lower() in PICKLE_SUFFIXES:
            raise ArtifactError(f"{where}/{name}: pickle-format weights are refused; only safetensors load")
    if manifest.encrypted:
        if WEIGHTS in manifest.files or SEALED not in manifest.files:
            raise ArtifactError(f"{where}: an encrypted manifest must list {SEALED} and not {WEIGHTS}")
    elif WEIGHTS not in manifest.files:
        raise ArtifactError(f"{where}: manifest lists no {WEIGHTS}")
    return manifest


def parse_manifest(raw: bytes, where: str | Path) -> dict[str, str]:
    """The files a manifest lists (name -> sha256), checked as read_manifest does."""
    return dict(read_manifest(raw, where).files)


def check_signature(raw: bytes, signature: bytes | None, where: str | Path,
                    verify_key_file: str | Path | None = None) -> None:
    """Refuse an unsigned or wrongly signed manifest when a verify key is configured (the argument,
    else $MODEL_VERIFY_KEY); without one, accept (the local demo)."""
    key = signing.verify_key(verify_key_file)
    if key is None:
        return
    if signature is None:
        raise ArtifactError(f"{where}: unsigned artifact refused (a verify key is configured)")
    if not signing.is_valid(key, raw, signature):
        raise ArtifactError(
            f"{where}/{SIGNATURE}: signature does not match (another key, a changed manifest, or a "
            f"pre-Ed25519 HMAC signature: re-sign with `python -m train.artifact sign`)"
        )


class Calibration(BaseModel):
    """calibration.json: what the postprocessor applies to the logits, fitted after training on the
    validation split. Listed in the manifest like every file, so a signature covers it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    temperature: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] | None = None


def read_calibration(root: Path, labels: list[str], multi_label: bool) -> tuple[float, tuple[float, ...] | None]:
    """(temperature, thresholds in label order) of a verified artifact; (1.0, None) without the file."""
    if not (root / CALIBRATION).is_file():
        return 1.0, None
    try:
        calibration = Calibration.model_validate_json((root / CALIBRATION).read_bytes())
    except ValidationError as err:
        first = err.errors()[0]
        raise ArtifactError(f"{root}/{CALIBRATION}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if calibration.temperature is not None and multi_label:
        raise ArtifactError(f"{root}/{CALIBRATION}: a temperature is for single-label models; this one is multi-label")
    if calibration.thresholds is None:
        return calibration.temperature or 1.0, None
    if not multi_label:
        raise ArtifactError(f"{root}/{CALIBRATION}: thresholds are for multi-label models; this one is single-label")
    if set(calibration.thresholds) != set(labels):
        raise ArtifactError(f"{root}/{CALIBRATION}: thresholds name {sorted(calibration.thresholds)}; "
                            f"the labels are {labels}")
    return 1.0, tuple(calibration.thresholds[label] for label in labels)


def write_manifest(root: Path, encrypted: dict | None = None) -> None:
    (root / MANIFEST).write_bytes(_manifest_bytes({name: sha256_file(root / name) for name in _listing(root)}, encrypted))


def _check_files(root: Path, raw: bytes) -> None:
    """The directory holds exactly the files the manifest lists, with their hashes."""
    listed = parse_manifest(raw, root)
    present = set(_listing(root))
    for name in sorted(present):
        if Path(name).suffix.lower() in PICKLE_SUFFIXES:
            raise ArtifactError(f"{root}/{name}: pickle-format weights are refused; only safetensors load")
    missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
    if missing:
        raise ArtifactError(f"{root}: files listed in the manifest are missing: {missing}")
    if extra:
        raise ArtifactError(f"{root}: files not in the manifest: {extra}")
    for name, expected in listed.items():
        try:
            path = resolve_inside(root, name)  # a symlink out of the artifact is not part of it
        except ValueError as err:
            raise ArtifactError(str(err)) from None
        if sha256_file(path) != expected:
            raise ArtifactError(f"{root}/{name}: sha256 does not match the manifest (file changed)")


def _read_manifest(root: Path) -> bytes:
    if not root.is_dir():
        raise ArtifactError(f"{root}: model directory does not exist")
    try:
        return (root / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{root}: no {MANIFEST}; only exported artifacts can be loaded") from None


def _verified(root: Path, verify_key_file: str | Path | None) -> bytes:
    """The manifest bytes, once the signature (when a verify key is configured) and every file check."""
    raw = _read_manifest(root)
    signature = (root / SIGNATURE).read_bytes() if (root / SIGNATURE).is_file() else None
    check_signature(raw, signature, root, verify_key_file)
    _check_files(root, raw)
    return raw


def verify(root: str | Path, verify_key_file: str | Path | None = None) -> str:
    """Check the signature when a verify key is configured (verify_key_file, else
    $MODEL_VERIFY_KEY), then every file against the manifest; return the artifact version (the
    manifest's sha256). Sealed weights are checked as stored: no model key is needed."""
    return hashlib.sha256(_verified(Path(root), verify_key_file)).hexdigest()


def sign(root: str | Path, signing_key_file: str | Path | None = None) -> str:
    """Write manifest.sig for an artifact whose files match its manifest (a release step);
    return the version. The key: signing_key_file, else $MODEL_SIGNING_KEY_FILE."""
    root = Path(root)
    key = signing.signing_key(signing_key_file)
    if key is None:
        raise signing.KeyFileError(f"no signing key: pass a private key file or set {signing.SIGNING_KEY_ENV}")
    raw = _read_manifest(root)
    _check_files(root, raw)  # sign only what the manifest truly describes
    partial = root / f".{SIGNATURE}.tmp"
    partial.write_bytes(signing.sign(key, raw))
    os.replace(partial, root / SIGNATURE)
    return hashlib.sha256(raw).hexdigest()


def read_info(root: str | Path, verify_key_file: str | Path | None = None,
              wrapped_keys: bytes | None = None) -> ArtifactInfo:
    """Verify, then read what serving needs to know. Labels come only from config.json.
    wrapped_keys: wrapped_keys.json as fetched from the artifact's origin (default: the file
    in root); it lies outside the manifest, so a cached copy of the rest may predate a rewrap."""
    root = Path(root)
    raw = _verified(root, verify_key_file)
    manifest = read_manifest(raw, root)
    config = json.loads((root / "config.json").read_text())
    training = json.loads((root / "training_config.json").read_text())
    metrics = json.loads((root / "metrics.json").read_text())
    id2label = config.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    if len(labels) < 2:
        raise ArtifactError(f"{root}/config.json: id2label must name at least 2 labels, got {id2label}")
    if manifest.encrypted and wrapped_keys is None and (root / KEYS_FILE).is_file():
        wrapped_keys = (root / KEYS_FILE).read_bytes()
    multi_label = config.get("problem_type") == "multi_label_classification"
    temperature, thresholds = read_calibration(root, labels, multi_label)
    return ArtifactInfo(
        path=root,
        version=hashlib.sha256(raw).hexdigest(),
        labels=labels,
        max_length=int(training["max_length"]),
        multi_label=multi_label,
        base_model=str(training.get("base_model", "")),
        pad_token_id=int(config.get("pad_token_id") or 0),
        metrics=metrics,
        training_config=training,
        plaintext_version=plaintext_version(manifest),
        encryption=manifest.encrypted[SEALED].model_dump() if manifest.encrypted else None,
        wrapped_keys=wrapped_keys if manifest.encrypted else None,
        temperature=temperature,
        thresholds=thresholds,
    )


def load_tokenizer(info: ArtifactInfo):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(info.path)


def decrypt_weights(info: ArtifactInfo, keks: dict[str, bytes]) -> bytes:
    """The plaintext model.safetensors bytes of an encrypted artifact, in memory only; refused
    unless the data key unwraps, the AEAD (bound to the plaintext version) authenticates and the
    plaintext has the manifest's sha256 (GCM alone does not commit to its key)."""
    try:
        dek = encryption.unwrap(info.wrapped_keys, info.plaintext_version, keks)
        plain = encryption.unseal(resolve_inside(info.path, SEALED).read_bytes(), dek, info.plaintext_version, WEIGHTS)
    except encryption.DecryptionError as err:
        raise ArtifactError(f"{info.path}: {err}") from None
    if len(plain) != info.encryption["size"] or hashlib.sha256(plain).hexdigest() != info.encryption["sha256"]:
        raise ArtifactError(f"{info.path}/{SEALED}: decrypted weights do not match the manifest's sha256")
    return plain


def load_model(info: ArtifactInfo, key_file: str | Path | None = None):
    """The model, eval mode. An encrypted artifact needs a model key (key_file, else
    $MODEL_KEY_FILE) and is decrypted in memory and loaded from bytes: no plaintext weights reach
    a disk. With a key configured, a plaintext artifact is refused, as a configured verify key
    makes signing mandatory: whoever swaps in an unencrypted model is not obeyed."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    keks = encryption.configured_keks(key_file)
    if not info.encrypted:
        if keks is not None:
            raise ArtifactError(f"{info.path}: a plaintext artifact is refused while a model key is configured "
                                f"(encrypt it: python -m train.artifact encrypt --model DIR --key-file KEYFILE)")
        return AutoModelForSequenceClassification.from_pretrained(info.path, use_safetensors=True).eval()
    if keks is None:
        ids = ", ".join(encryption.key_ids(info.wrapped_keys)) if info.wrapped_keys else "none"
        raise ArtifactError(f"{info.path}: encrypted weights (key id(s): {ids}) and no model key: set the "
                            f"application argument model_key_file or ${encryption.KEY_FILE_ENV}")
    from safetensors.torch import load
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    state = load(decrypt_weights(info, keks))  # safetensors from bytes: nothing unpickled, nothing written
    config = AutoConfig.from_pretrained(info.path)
    # The class that config.json's model type maps to, given the state dict: no weights path, and
    # no random initialisation first (from_config + load_state_dict cost ~0.3 s more on MiniLM).
    model, loading = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)].from_pretrained(
        None, config=config, state_dict=state, output_loading_info=True)
    problems = {kind: sorted(keys)[:5] for kind, keys in loading.items() if keys}
    if problems:  # strict: a weight left at its initial value is a wrong model, not a warning
        raise ArtifactError(f"{info.path}: decrypted weights do not fit config.json: {problems}")
    # Python cannot wipe the freed plaintext; it lives in this process's memory only.
    return model.eval()


def seal_weights(root: Path, weights: bytes, encrypt_key_file: str | Path) -> None:
    """Finish an artifact directory that holds every file but the weights: write the sealed
    weights, the manifest (stored hashes plus the plaintext's) and wrapped_keys.json."""
    key_id, kek = encryption.single_kek(encrypt_key_file)
    if (root / WEIGHTS).exists():
        raise ArtifactError(f"{root}/{WEIGHTS}: plaintext weights present; only sealed ones may be written")
    sealed = {"plaintext": WEIGHTS, "sha256": hashlib.sha256(weights).hexdigest(), "size": len(weights),
              "scheme": encryption.SCHEME}
    plain_files = {name: sha256_file(root / name) for name in _listing(root)} | {WEIGHTS: sealed["sha256"]}
    version = hashlib.sha256(_manifest_bytes(plain_files)).hexdigest()
    blob, dek = encryption.seal(weights, version, WEIGHTS)
    (root / SEALED).write_bytes(blob)
    (root / KEYS_FILE).write_bytes(encryption.keyring([encryption.wrap(dek, version, key_id, kek)]))
    write_manifest(root, {SEALED: sealed})


def export(model, tokenizer, out_dir: str | Path, training_config: dict, metrics: dict,
           signing_key_file: str | Path | None = None, encrypt_key_file: str | Path | None = None,
           calibration: dict | None = None) -> str:
    """Write a complete artifact to out_dir, atomically replacing what was there, signed when a
    signing key is configured (signing_key_file, else $MODEL_SIGNING_KEY_FILE); return its version.
    With encrypt_key_file (a KEK file), the weights are serialised in memory and only their sealed
    form is written: no plaintext weights reach out_dir's disk.
    calibration: calibration.json's {"temperature": T} or {"thresholds": {label: t}}, if any."""
    if calibration is not None:
        calibration = Calibration.model_validate(calibration).model_dump(exclude_none=True)
    key = signing.signing_key(signing_key_file)  # a bad key fails before the model is written
    if encrypt_key_file is not None:
        encryption.single_kek(encrypt_key_file)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        # The weights last: sealing binds them to the hashes of every other file.
        model.save_pretrained(staging, state_dict={})  # config.json as save_pretrained writes it, no weights
        tokenizer.save_pretrained(staging)
        (staging / "training_config.json").write_text(json.dumps(training_config, indent=2, sort_keys=True) + "\n")
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        if calibration:  # before the manifest, which lists it (and the sealed weights' hashes)
            (staging / CALIBRATION).write_text(json.dumps(calibration, indent=2, sort_keys=True) + "\n")
        if encrypt_key_file is None:
            model.save_pretrained(staging, safe_serialization=True)
            write_manifest(staging)
        else:
            from safetensors.torch import save

            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            seal_weights(staging, save(state, metadata={"format": "pt"}), encrypt_key_file)
        if key is not None:
            (staging / SIGNATURE).write_bytes(signing.sign(key, (staging / MANIFEST).read_bytes()))
        version = verify(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return version


if __name__ == "__main__":
    from train.artifact_cli import main

    raise SystemExit(main())
