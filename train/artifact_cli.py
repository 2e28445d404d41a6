"""`python -m train.artifact`: keys and signatures for model artifacts.

Each subcommand is one function and one subparser that names it (`set_defaults(run=...)`), so
later ones (encrypt, rewrap, inspect) slot in beside these. Exit status: 0 done, 1 the artifact
was refused, 2 a usage or key problem.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train import signing
from train.artifact import ArtifactError, sign, verify


def _keygen(args) -> None:
    signing.generate(args.private_key, args.public_key)
    print(f"wrote {args.private_key} (private, mode 600: training/release only) "  # noqa: T201
          f"and {args.public_key} (public: serving)")


def _sign(args) -> None:
    version = sign(args.model, args.private_key)
    print(f"signed {args.model} (version {version})")  # noqa: T201


def _verify(args) -> None:
    key = signing.verify_key(args.public_key)  # None: hashes only
    version = verify(args.model, args.public_key)
    what = "signature and files" if key is not None else f"files only (no --public-key or {signing.VERIFY_KEY_ENV})"
    print(f"ok: {args.model} (version {version}), checked {what}")  # noqa: T201


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.artifact", description="Keys and signatures for model artifacts.")
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="write a new Ed25519 key pair (never overwrites)")
    k.add_argument("--private-key", required=True, type=Path, help="PEM for training/release; keep secret")
    k.add_argument("--public-key", required=True, type=Path, help="PEM for serving (MODEL_VERIFY_KEY)")
    k.set_defaults(run=_keygen)
    s = sub.add_parser("sign", help="write manifest.sig for an exported artifact whose files match its manifest")
    s.add_argument("--model", required=True, type=Path, help="artifact directory")
    s.add_argument("--private-key", type=Path, help=f"private key PEM (default: ${signing.SIGNING_KEY_ENV})")
    s.set_defaults(run=_sign)
    v = sub.add_parser("verify", help="check an artifact as serving does")
    v.add_argument("--model", required=True, type=Path, help="artifact directory")
    v.add_argument("--public-key", type=Path, help=f"public key PEM (default: ${signing.VERIFY_KEY_ENV})")
    v.set_defaults(run=_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except ArtifactError as err:
        sys.stderr.write(f"refused: {err}\n")
        return 1
    except signing.KeyFileError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    return 0
