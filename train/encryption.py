"""Envelope encryption of model weights (AES-256-GCM, `cryptography`), free of artifact logic.

A fresh random 256-bit data key (DEK) per encryption seals the weights; the DEK is wrapped under
one or more key-encryption keys (KEKs), each named by a key id, in `wrapped_keys.json` beside the
manifest. Rotation rewraps the DEK under a new KEK and touches nothing else. Every AEAD call binds
associated data (AAD) to the artifact's plaintext version (see train/artifact.py), so a file or
a wrapped key moved from another artifact, or an artifact whose other files were rewritten,
fails to decrypt even without a signature.

KEK file (`keygen --output`): JSON {"format": "rtc-kek/1", "key_id", "key": base64 of 32 bytes},
mode 600. Serving reads a KEK file, or a directory of them (a mounted Kubernetes Secret holding
the old and the new key during a rotation). No message here holds key bytes or plaintext.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Annotated, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from train.signing import KeyFileError

SCHEME = "rtc-aes256gcm/1"
MAGIC = b"RTCENC01"  # the sealed file: MAGIC ‖ nonce(12) ‖ AES-256-GCM(body) ‖ tag(16)
NONCE = 12
KEYS_FILE = "wrapped_keys.json"  # beside manifest.json, outside it: a rewrap leaves the version alone
KEY_FILE_ENV = "MODEL_KEY_FILE"  # serving and training: a KEK file or a directory of them
KEK_FORMAT, KEYS_FORMAT = "rtc-kek/1", "rtc-keys/1"
# AESGCM refuses more in one call; BERT-large fp32 (~1.3 GB) fits. A bigger model needs a
# segmented (STREAM-style) scheme v2.
MAX_PLAINTEXT = 2**31 - 1
KeyId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class DecryptionError(ValueError):
    """Sealed weights that cannot be opened with the configured keys; never holds key bytes."""


class _Kek(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    format: Literal[KEK_FORMAT]  # type: ignore[valid-type]
    key_id: KeyId
    key: str


class _Wrapped(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    key_id: KeyId
    nonce: str
    dek: str


class _Keyring(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    format: Literal[KEYS_FORMAT]  # type: ignore[valid-type]
    wrapped: list[_Wrapped]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, size: int | None, what: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what}: not base64") from None
    if size is not None and len(data) != size:
        raise ValueError(f"{what}: {len(data)} bytes, expected {size}")
    return data


# ----- KEK files -----
def generate_kek(path: Path, key_id: str | None = None) -> str:
    """Write a new KEK file (owner-only, never overwrites); return its key id."""
    key_id = key_id or f"k{time.strftime('%Y%m%d')}-{secrets.token_hex(3)}"
    if not re.fullmatch(KeyId.__metadata__[0].pattern, key_id):
        raise KeyFileError(f"key id {key_id!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    document = json.dumps({"format": KEK_FORMAT, "key_id": key_id, "key": _b64(AESGCM.generate_key(256))}) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(document)
    return key_id


def _read_kek(path: Path) -> tuple[str, bytes]:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise KeyFileError(f"{path}: cannot read the model key: {err.strerror}") from None
    try:
        kek = _Kek.model_validate_json(raw)
        return kek.key_id, _unb64(kek.key, 32, "key")
    except (ValidationError, ValueError):  # the content is never echoed: it may be a key
        raise KeyFileError(f"{path}: not a model key file ({{\"format\": \"{KEK_FORMAT}\", \"key_id\", \"key\"}}, "
                           f"written by `python -m train.artifact keygen --output`)") from None


def read_keks(path: str | Path) -> dict[str, bytes]:
    """key id -> KEK from a KEK file, or from every file in a directory (a mounted Secret; its
    dot-named entries are the kubelet's bookkeeping)."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
        if not files:
            raise KeyFileError(f"{path}: a directory holding no model key files")
    else:
        files = [path]
    keks: dict[str, bytes] = {}
    for file in files:
        key_id, key = _read_kek(file)
        if keks.get(key_id, key) != key:
            raise KeyFileError(f"{path}: two different keys under key id {key_id!r}")
        keks[key_id] = key
    return keks


def configured_keks(path: str | Path | None = None) -> dict[str, bytes] | None:
    """The KEKs at path, else at $MODEL_KEY_FILE; None when neither is set."""
    path = path or os.environ.get(KEY_FILE_ENV)
    return read_keks(path) if path else None


def single_kek(path: str | Path) -> tuple[str, bytes]:
    """The one KEK a file holds (encrypt, rewrap: which key to wrap under must be unambiguous)."""
    keks = read_keks(path)
    if len(keks) != 1:
        raise KeyFileError(f"{path}: holds {len(keks)} keys ({', '.join(sorted(keks))}); name one key file")
    return next(iter(keks.items()))


# ----- the envelope -----
def _aad_data(version: str, name: str) -> bytes:
    return b"\x1f".join([b"rtc-data/1", name.encode(), version.encode()])


def _aad_dek(version: str, key_id: str) -> bytes:
    return b"\x1f".join([b"rtc-dek/1", key_id.encode(), version.encode()])


def seal(plain: bytes, version: str, name: str) -> tuple[bytes, bytes]:
    """(sealed file bytes, DEK): plain under a fresh DEK, bound to the artifact's plaintext
    version and the plaintext file name."""
    if len(plain) > MAX_PLAINTEXT:
        raise ValueError(f"{name}: {len(plain)} bytes is above {SCHEME}'s one-shot limit of {MAX_PLAINTEXT}; "
                         f"a segmented scheme (v2) is needed for a model this large")
    dek, nonce = AESGCM.generate_key(256), os.urandom(NONCE)
    return MAGIC + nonce + AESGCM(dek).encrypt(nonce, plain, _aad_data(version, name)), dek


def unseal(blob: bytes, dek: bytes, version: str, name: str) -> bytes:
    if blob[: len(MAGIC)] != MAGIC:
        raise DecryptionError(f"{name}: not a {SCHEME} file")
    start = len(MAGIC) + NONCE
    try:
        return AESGCM(dek).decrypt(blob[len(MAGIC): start], memoryview(blob)[start:], _aad_data(version, name))
    except InvalidTag:
        raise DecryptionError(f"{name}: authentication failed: the sealed weights were changed, belong to another "
                              f"artifact, or the artifact's other files were rewritten") from None


def wrap(dek: bytes, version: str, key_id: str, kek: bytes) -> dict:
    nonce = os.urandom(NONCE)
    return {"key_id": key_id, "nonce": _b64(nonce), "dek": _b64(AESGCM(kek).encrypt(nonce, dek, _aad_dek(version, key_id)))}


def keyring(wrapped: list[dict]) -> bytes:
    """The wrapped_keys.json bytes."""
    return (json.dumps({"format": KEYS_FORMAT, "wrapped": wrapped}, indent=2) + "\n").encode()


def parse_keyring(raw: bytes | None) -> list[dict]:
    if raw is None:
        raise DecryptionError(f"no {KEYS_FILE}: the artifact's data key is missing")
    try:
        return [w.model_dump() for w in _Keyring.model_validate_json(raw).wrapped]
    except ValidationError as err:
        raise DecryptionError(f"{KEYS_FILE}: not a valid key file ({err.error_count()} problem(s))") from None


def key_ids(raw: bytes | None) -> list[str]:
    return [w["key_id"] for w in parse_keyring(raw)]


def unwrap(raw: bytes | None, version: str, keks: dict[str, bytes]) -> bytes:
    """The DEK, from the first wrap whose key id the configured KEKs hold."""
    wrapped = parse_keyring(raw)
    usable = [w for w in wrapped if w["key_id"] in keks]
    if not usable:
        raise DecryptionError(f"the data key is wrapped under key id(s) {sorted(w['key_id'] for w in wrapped)}; "
                              f"the configured model key file holds {sorted(keks)}")
    for w in usable:
        try:
            dek = AESGCM(keks[w["key_id"]]).decrypt(_unb64(w["nonce"], NONCE, "nonce"), _unb64(w["dek"], None, "dek"),
                                                    _aad_dek(version, w["key_id"]))
        except (InvalidTag, ValueError):
            continue
        return dek
    raise DecryptionError(f"key id(s) {[w['key_id'] for w in usable]}: authentication failed unwrapping the data key "
                          f"(another key under that id, or {KEYS_FILE} from another artifact)")
