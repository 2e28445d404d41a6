"""Where a replica finds its artifact: a local path, or a URI copied once to a local cache.

Relative paths resolve against the working directory (where `serve run` was started). A URI
(s3://, gs://, file://) is copied to MODEL_CACHE_DIR (default ~/.cache/ray-text-classifier) under
its manifest's hash, so replicas on one node share one copy, and a new artifact at the same URI
gets a new copy; the caller verifies the copy against its manifest before loading it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from train.artifact import MANIFEST, SIGNATURE
from train.storage import download_files, is_uri, join, read_bytes

CACHE_ENV = "MODEL_CACHE_DIR"


def local_artifact(location: str) -> Path:
    if not is_uri(location):
        return Path(location).expanduser().resolve()
    raw = read_bytes(join(location, MANIFEST))
    cache = Path(os.environ.get(CACHE_ENV, "~/.cache/ray-text-classifier")).expanduser()
    target = cache / hashlib.sha256(raw).hexdigest()[:32]
    if not (target / MANIFEST).exists():
        names = sorted(json.loads(raw)["files"]) + [MANIFEST]
        try:
            read_bytes(join(location, SIGNATURE))
            names.append(SIGNATURE)
        except (FileNotFoundError, OSError):
            pass  # unsigned: refused later if a signing key is configured
        download_files(location, names, target)
    return target
