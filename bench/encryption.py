"""Cold-start cost of encrypted artifacts: `load_model` on the plaintext MiniLM artifact vs the same
artifact encrypted, interleaved, wall and CPU seconds; and the steps of the encrypted path.

    python -m bench.encryption [--model DIR] [--rounds 5] [--threads 2]

Without --model, the packaged all-MiniLM-L6-v2 with a fresh 2-label head is exported first.
Both loads run in this process after one warm-up each (imports and the page cache are warm, as
for a replica on a node that already holds the cached artifact).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.encryption", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="a plaintext artifact (default: MiniLM with a fresh head)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch threads (a replica's CPU share)")
    args = p.parse_args(argv)

    import torch
    from safetensors.torch import load

    from train import encryption
    from train.artifact import decrypt_weights, load_model, read_info
    from train.artifact_encryption import encrypt_artifact

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = args.model
        if plain is None:
            from tests.conftest import make_artifact

            plain = make_artifact(tmp / "plain")
        key = tmp / "bench.key"
        encryption.generate_kek(key, "bench")
        sealed = tmp / "sealed"
        encrypt_artifact(plain, key, sealed)
        keks = encryption.read_keks(key)
        size = read_info(sealed).encryption["size"]
        cases = {
            "plaintext: read_info + load_model (from_pretrained)": lambda: load_model(read_info(plain)),
            "encrypted: read_info + load_model (decrypt in memory)": lambda: load_model(read_info(sealed), key),
            "  of which read_info (sha256 of every stored file)": lambda: read_info(sealed),
            "  of which unwrap + AES-GCM decrypt + sha256": lambda: decrypt_weights(read_info(sealed), keks),
        }
        plain_bytes = decrypt_weights(read_info(sealed), keks)
        cases["  of which safetensors.torch.load(bytes)"] = lambda: load(plain_bytes)
        results = {name: [] for name in cases}
        for name, fn in cases.items():  # warm-up
            fn()
        for _ in range(args.rounds):
            for name, fn in cases.items():
                _, wall, cpu = _timed(fn)
                results[name].append((wall, cpu))
    print(f"weights {size / 1e6:.1f} MB, {args.rounds} rounds, torch threads {args.threads}")  # noqa: T201
    print("| step | wall s (median) | CPU s (median) |\n|---|---|---|")  # noqa: T201
    for name, runs in results.items():
        print(f"| {name} | {statistics.median(r[0] for r in runs):.3f} | "  # noqa: T201
              f"{statistics.median(r[1] for r in runs):.3f} |")


if __name__ == "__main__":
    main()
