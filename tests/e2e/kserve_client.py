"""The kserve SDK in its own virtualenv: kserve 0.21 pins pandas<3 and this project needs
pandas>=3.1, so it cannot share the project's environment. Built once and cached outside the repo."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KSERVE = "0.21.0"
HOME = Path.home() / ".cache" / "ray-text-classifier" / f"kserve-{KSERVE}"


def kserve_python() -> Path:
    """The cached venv's python with kserve==KSERVE, built on first use (a few minutes); the test
    skips, printing why, only when the package index cannot be reached."""
    python = HOME / "bin" / "python"
    if python.exists():
        return python
    tmp = HOME.with_name(HOME.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True)
    pip = subprocess.run([str(tmp / "bin" / "pip"), "install", "-q", f"kserve=={KSERVE}"], capture_output=True, text=True)
    if pip.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        unreachable = any(s in pip.stderr for s in ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution", "ConnectTimeout"))
        if unreachable:
            print(f"kserve=={KSERVE} cannot be installed: the package index is unreachable")
            pytest.skip("the package index is unreachable, so the kserve SDK cannot be installed")
        raise RuntimeError(f"pip install kserve=={KSERVE} failed:\n{pip.stderr[-3000:]}")
    tmp.rename(HOME)  # only a complete venv takes the cached name
    return python
