"""Where a replica finds its artifact. Relative paths resolve against the process's working
directory (the directory `serve run` was started in)."""
from __future__ import annotations

from pathlib import Path


def local_artifact(location: str) -> Path:
    return Path(location).expanduser().resolve()
