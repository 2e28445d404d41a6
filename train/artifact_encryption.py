"""Artifact-level encryption steps behind `python -m train.artifact encrypt|rewrap|decrypt|inspect`.

Each writes into a staging folder beside its target and renames it into place, as export does,
so a reader never sees half an artifact. encrypt keeps the plaintext version (the AAD) equal to
the version the artifact had before; rewrap rewrites wrapped_keys.json only, so the version, the
manifest and any signature stay as they are.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from train import encryption, signing
from train.artifact import (
    MANIFEST, SEALED, SIGNATURE, WEIGHTS, ArtifactError, decrypt_weights, plaintext_version, read_info, read_manifest,
    seal_weights, verify, write_manifest,
)
from train.encryption import KEYS_FILE
from train.storage import resolve_inside


def _stage(beside: Path, source: Path, names: list[str]) -> Path:
    beside.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{beside.name}.", dir=beside.parent))
    for name in names:
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(resolve_inside(source, name), staging / name)
    return staging


def _install(staging: Path, target: Path, replace: bool) -> None:
    """Rename staging to target; an existing target is replaced only when asked (in place)."""
    if target.exists() and not replace:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArtifactError(f"{target} exists; give a new --output folder")
    old = target.with_name(f".{target.name}.old") if target.exists() else None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old)


def encrypt_artifact(model: Path, key_file: Path, output: Path | None = None,
                     signing_key_file: Path | None = None) -> dict:
    """Seal a plaintext artifact's weights under the KEK in key_file, into output (default: in
    place). Re-signed when a signing key is given (or $MODEL_SIGNING_KEY_FILE is set): the
    manifest changes, so the old signature cannot stay."""
    key = signing.signing_key(signing_key_file)
    info = read_info(model)
    if info.encrypted:
        raise ArtifactError(f"{model}: already encrypted; rotate its key with `rewrap`")
    target, was_signed = Path(output or model), (model / SIGNATURE).is_file()
    names = [n for n in json.loads((model / MANIFEST).read_bytes())["files"] if n != WEIGHTS]
    staging = _stage(target, model, names)
    try:
        seal_weights(staging, resolve_inside(model, WEIGHTS).read_bytes(), key_file)
        if key is not None:
            (staging / SIGNATURE).write_bytes(signing.sign(key, (staging / MANIFEST).read_bytes()))
        version = verify(staging)
        sealed = read_info(staging)
        assert sealed.plaintext_version == info.version, "the plaintext version must survive encryption"
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _install(staging, target, replace=output is None)
    return {"version": version, "plaintext_version": info.version, "key_ids": encryption.key_ids(sealed.wrapped_keys),
            "signed": key is not None, "was_signed": was_signed}


def rewrap(model: Path, key_file: Path, new_key_file: Path, keep_old: bool = False) -> dict:
    """Wrap the artifact's data key under the KEK in new_key_file, unwrapped with key_file. The
    old wraps are dropped unless keep_old (a rotation in two steps: both keys work meanwhile)."""
    info = read_info(model)
    if not info.encrypted:
        raise ArtifactError(f"{model}: not encrypted; encrypt it first")
    try:
        dek = encryption.unwrap(info.wrapped_keys, info.plaintext_version, encryption.read_keks(key_file))
    except encryption.DecryptionError as err:
        raise ArtifactError(f"{model}: {err}") from None
    new_id, new_kek = encryption.single_kek(new_key_file)
    kept = [w for w in encryption.parse_keyring(info.wrapped_keys) if keep_old and w["key_id"] != new_id]
    partial = model / f".{KEYS_FILE}.tmp"
    partial.write_bytes(encryption.keyring([*kept, encryption.wrap(dek, info.plaintext_version, new_id, new_kek)]))
    os.replace(partial, model / KEYS_FILE)
    return {"version": verify(model), "key_ids": encryption.key_ids((model / KEYS_FILE).read_bytes())}


def decrypt_artifact(model: Path, key_file: Path, output: Path) -> dict:
    """A plaintext copy in a new folder (a deliberate step: evaluation elsewhere, a hand-off); its
    version is the encrypted artifact's plaintext version."""
    if output.exists():
        raise ArtifactError(f"{output} exists; decrypt writes a new folder only")
    info = read_info(model)
    if not info.encrypted:
        raise ArtifactError(f"{model}: not encrypted")
    plain = decrypt_weights(info, encryption.read_keks(key_file))
    names = [n for n in json.loads((model / MANIFEST).read_bytes())["files"] if n != SEALED]
    staging = _stage(output, model, names)
    try:
        (staging / WEIGHTS).write_bytes(plain)
        write_manifest(staging)
        version = verify(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _install(staging, output, replace=False)
    return {"version": version}


def describe(model: Path) -> dict:
    """What inspect prints: needs no key and never shows key material."""
    raw = (model / MANIFEST).read_bytes() if (model / MANIFEST).is_file() else None
    if raw is None:
        raise ArtifactError(f"{model}: no {MANIFEST}")
    manifest = read_manifest(raw, model)
    keys = (model / KEYS_FILE).read_bytes() if (model / KEYS_FILE).is_file() else None
    try:
        verify(model, None)  # hashes, and the signature when $MODEL_VERIFY_KEY is set
        files = "ok"
    except (ArtifactError, signing.KeyFileError) as err:
        files = f"refused: {err}"
    sealed = manifest.encrypted[SEALED] if manifest.encrypted else None
    try:
        ids = encryption.key_ids(keys) if sealed else None
    except encryption.DecryptionError as err:  # a missing or malformed wrapped_keys.json
        ids = f"unreadable: {err}"
    return {
        "model": str(model),
        "version": hashlib.sha256(raw).hexdigest(),
        "plaintext_version": plaintext_version(manifest),
        "encrypted": sealed is not None,
        "scheme": sealed.scheme if sealed else None,
        "weights_size": sealed.size if sealed else None,
        "key_ids": ids,
        "signed": (model / SIGNATURE).is_file(),
        "files": files,
    }
