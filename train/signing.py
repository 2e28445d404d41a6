"""Ed25519 keys and signatures over manifest.json.

Training (or a release step) holds the private key and signs; serving holds only the public key
and verifies, so a compromised serving replica cannot mint an artifact other replicas trust (the
HMAC scheme this replaced gave every replica a key that could sign). The signature file holds
the base64 Ed25519 signature of the exact manifest.json bytes.
"""
from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

VERIFY_KEY_ENV = "MODEL_VERIFY_KEY"  # serving: path to the public key PEM
SIGNING_KEY_ENV = "MODEL_SIGNING_KEY_FILE"  # training / release: path to the private key PEM
LEGACY_KEY_ENV = "MODEL_SIGNING_KEY"  # the dropped HMAC secret; refused so it cannot linger unnoticed


class KeyFileError(ValueError):
    """A key that cannot be used; the message names the file or variable and what to do."""


def _refuse_legacy() -> None:
    if LEGACY_KEY_ENV in os.environ:
        raise KeyFileError(
            f"{LEGACY_KEY_ENV} (an HMAC secret) is no longer read: artifacts are signed with Ed25519. "
            f"Unset it; make a key pair with `python -m train.artifact keygen`, give training "
            f"{SIGNING_KEY_ENV} (the private key file) and serving {VERIFY_KEY_ENV} (the public key file). "
            f"See 'Model protection' in README.md."
        )


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as err:
        raise KeyFileError(f"{path}: cannot read the {what}: {err.strerror}") from None


def signing_key(path: str | Path | None = None) -> Ed25519PrivateKey | None:
    """The private key at path, else at $MODEL_SIGNING_KEY_FILE; None when neither is set."""
    _refuse_legacy()
    path = path or os.environ.get(SIGNING_KEY_ENV)
    if not path:
        return None
    try:
        key = serialization.load_pem_private_key(_read(path, "signing key"), password=None)
    except (ValueError, TypeError) as err:  # not PEM, encrypted, or unsupported
        raise KeyFileError(f"{path}: not an unencrypted private key PEM ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: a {type(key).__name__}, expected an Ed25519 private key")
    return key


def verify_key(path: str | Path | None = None) -> Ed25519PublicKey | None:
    """The public key at path, else at $MODEL_VERIFY_KEY; None when neither is set (no signature
    is required then)."""
    _refuse_legacy()
    path = path or os.environ.get(VERIFY_KEY_ENV)
    if not path:
        return None
    try:
        key = serialization.load_pem_public_key(_read(path, "verify key"))
    except ValueError as err:
        raise KeyFileError(f"{path}: not a public key PEM; serving needs only the public key ({err})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: a {type(key).__name__}, expected an Ed25519 public key")
    return key


def generate(private_path: Path, public_path: Path) -> None:
    """Write a new key pair; never overwrites, and the private key is readable by its owner only."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path} exists; refusing to overwrite a key")
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    public_path.write_bytes(public)


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The signature file's content for data."""
    return base64.b64encode(key.sign(data)) + b"\n"


def is_valid(key: Ed25519PublicKey, data: bytes, signature_file: bytes) -> bool:
    try:
        key.verify(base64.b64decode(signature_file.strip(), validate=True), data)
    except (InvalidSignature, binascii.Error, ValueError):  # wrong key or data, not base64, wrong length
        return False
    return True
