"""Where a replica finds its artifact: a local path, or a URI copied once to a local cache.

Relative paths resolve against the working directory (where `serve run` was started). A URI
(s3://, gs://, file://) is copied to MODEL_CACHE_DIR (default ~/.cache/ray-text-classifier) under
a hash of its manifest and signature, so replicas on one node share one copy, and a new (or
re-signed) artifact at the same URI gets a new copy.

Whoever can write to the bucket chooses the manifest, so nothing it names is trusted before it is
checked, in this order: fetch manifest.json and manifest.sig; verify the signature when a verify
key is configured; refuse the manifest unless every file name is a plain relative path
(train.artifact.safe_name); only then download, into a temp dir whose hashes are verified before
it is renamed into the cache.

An encrypted artifact's sealed weights travel like any listed file (the cache holds ciphertext
only). Its wrapped_keys.json lies outside the manifest (a key rotation rewrites it and leaves
the version alone), so it never enters the cache: every replica start reads it from the origin.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from train.artifact import MANIFEST, SIGNATURE, ArtifactError, ArtifactInfo, check_signature, parse_manifest, read_info, verify
from train.encryption import KEYS_FILE
from train.storage import download_files, is_uri, join, read_bytes

CACHE_ENV = "MODEL_CACHE_DIR"


def cache_root() -> Path:
    """This node's cache folder: artifact copies, and the ONNX graphs built from them (app/runtimes.py)."""
    return Path(os.environ.get(CACHE_ENV, "~/.cache/ray-text-classifier")).expanduser()


def _read_optional(location: str) -> bytes | None:
    try:
        return read_bytes(location)
    except FileNotFoundError:  # unsigned: refused by check_signature when a verify key is configured
        return None


def _file_or_none(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def local_artifact(location: str, verify_key_file: str | None = None) -> Path:
    """A local directory holding the artifact at location; a URI's files are checked as above.
    verify_key_file: the Ed25519 public key PEM (default: $MODEL_VERIFY_KEY; neither: unsigned ok)."""
    if not is_uri(location):
        return Path(location).expanduser().resolve()
    raw = read_bytes(join(location, MANIFEST))
    signature = _read_optional(join(location, SIGNATURE))
    check_signature(raw, signature, location, verify_key_file)
    names = sorted(parse_manifest(raw, location))
    target = cache_root() / hashlib.sha256(raw + b"\n" + (signature or b"")).hexdigest()[:32]
    if target.exists():  # complete: copies are renamed into place whole
        # Reused only when it holds these exact bytes; the caller's read_info verifies its files.
        if _file_or_none(target / MANIFEST) == raw and _file_or_none(target / SIGNATURE) == signature:
            return target
        # Not deleted here: other replicas on this node may be loading from it.
        raise ArtifactError(f"{target}: the cached copy differs from the manifest or signature at {location}; "
                            f"remove the folder to fetch it again")
    # The manifest and signature already fetched are written as they are, not fetched again:
    # the bucket may have changed in between.
    contents = {MANIFEST: raw, **({SIGNATURE: signature} if signature is not None else {})}
    download_files(location, names, target, contents, check=lambda staged: verify(staged, verify_key_file))
    return target


def load_info(location: str, verify_key_file: str | None = None) -> ArtifactInfo:
    """What every stage calls at start-up: the artifact at location, fetched if remote, verified."""
    wrapped_keys = _read_optional(join(location, KEYS_FILE)) if is_uri(location) else None
    return read_info(local_artifact(location, verify_key_file), verify_key_file, wrapped_keys)
