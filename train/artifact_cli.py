"""`python -m train.artifact`: keys, signatures and encryption for model artifacts.

Each subcommand is one function and one subparser that names it (`set_defaults(run=...)`).
keygen makes either an Ed25519 signing pair (--private-key/--public-key) or a key-encryption key
(--output). Exit status: 0 done, 1 the artifact was refused, 2 a usage or key problem. Nothing
printed holds key bytes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train import artifact_encryption, encryption, signing
from train.artifact import ArtifactError, sign, verify


def _keygen(args) -> None:
    if args.output is not None:
        if args.private_key or args.public_key:
            raise signing.KeyFileError("keygen: --output (a model encryption key) or --private-key/--public-key "
                                       "(a signing pair), not both")
        key_id = encryption.generate_kek(args.output, args.key_id)
        print(f"wrote {args.output} (model encryption key, key id {key_id}, mode 600)")  # noqa: T201
        return
    if not (args.private_key and args.public_key) or args.key_id:
        raise signing.KeyFileError("keygen: give --output KEYFILE [--key-id ID] for a model encryption key, or "
                                   "--private-key and --public-key for a signing pair")
    signing.generate(args.private_key, args.public_key)
    print(f"wrote {args.private_key} (private, mode 600: training/release only) "  # noqa: T201
          f"and {args.public_key} (public: serving)")


def _encrypt(args) -> None:
    done = artifact_encryption.encrypt_artifact(args.model, args.key_file, args.output, args.private_key)
    where = args.output or args.model
    print(f"encrypted {where} (version {done['version']}, plaintext version {done['plaintext_version']}, "  # noqa: T201
          f"key id {done['key_ids'][0]}){', signed' if done['signed'] else ''}")
    if done["was_signed"] and not done["signed"]:
        sys.stderr.write(f"note: {args.model} was signed; the manifest changed, so {where} is unsigned: "
                         f"python -m train.artifact sign --model {where} --private-key PEM\n")


def _rewrap(args) -> None:
    done = artifact_encryption.rewrap(args.model, args.key_file, args.new_key_file, args.keep_old)
    print(f"rewrapped {args.model} (version {done['version']}, unchanged); "  # noqa: T201
          f"key ids: {', '.join(done['key_ids'])}")


def _decrypt(args) -> None:
    done = artifact_encryption.decrypt_artifact(args.model, args.key_file, args.output)
    print(f"decrypted into {args.output} (version {done['version']}): plaintext weights on disk")  # noqa: T201


def _inspect(args) -> None:
    print(json.dumps(artifact_encryption.describe(args.model), indent=2))  # noqa: T201


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
    k = sub.add_parser("keygen", help="write a new model encryption key (--output), or a new Ed25519 signing pair "
                       "(--private-key/--public-key); never overwrites")
    k.add_argument("--output", type=Path, help="model key-encryption key file (KEK); keep secret")
    k.add_argument("--key-id", help="the KEK's name in artifacts (default: kYYYYMMDD-RANDOM)")
    k.add_argument("--private-key", type=Path, help="PEM for training/release; keep secret")
    k.add_argument("--public-key", type=Path, help="PEM for serving (MODEL_VERIFY_KEY)")
    k.set_defaults(run=_keygen)
    e = sub.add_parser("encrypt", help="seal an artifact's weights under a KEK (in place unless --output)")
    e.add_argument("--model", required=True, type=Path, help="plaintext artifact directory")
    e.add_argument("--key-file", required=True, type=Path, help="KEK file (keygen --output)")
    e.add_argument("--output", type=Path, help="write the encrypted artifact here instead (a new folder)")
    e.add_argument("--private-key", type=Path, help=f"sign the result (default: ${signing.SIGNING_KEY_ENV})")
    e.set_defaults(run=_encrypt)
    r = sub.add_parser("rewrap", help="rotate: wrap the data key under a new KEK; weights, manifest and version stay")
    r.add_argument("--model", required=True, type=Path, help="encrypted artifact directory")
    r.add_argument("--key-file", required=True, type=Path, help="a KEK the artifact is wrapped under now")
    r.add_argument("--new-key-file", required=True, type=Path, help="the KEK to wrap under")
    r.add_argument("--keep-old", action="store_true", help="keep the existing wraps too (both keys open it)")
    r.set_defaults(run=_rewrap)
    d = sub.add_parser("decrypt", help="write a plaintext copy of an encrypted artifact to a new folder")
    d.add_argument("--model", required=True, type=Path, help="encrypted artifact directory")
    d.add_argument("--key-file", required=True, type=Path, help="KEK file, or a directory of them")
    d.add_argument("--output", required=True, type=Path, help="new folder for the plaintext artifact")
    d.set_defaults(run=_decrypt)
    i = sub.add_parser("inspect", help="format, version, scheme, key ids and signature status; needs no key")
    i.add_argument("--model", required=True, type=Path, help="artifact directory")
    i.set_defaults(run=_inspect)
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
