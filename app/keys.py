"""API keys: a keys file holding salted hashes only, and the CLI that manages it.

    python -m app.keys create --name NAME --scopes classify[,admin][,explain] --file KEYS_FILE [--rate 20 --burst 40]
    python -m app.keys list --file KEYS_FILE
    python -m app.keys revoke NAME --file KEYS_FILE

`create` prints the new key once; the file keeps sha256(salt + key) and the scopes. Keys are 256
random bits, so a fast salted hash is enough (no password stretching needed). Lookup compares the
presented key against every entry with hmac.compare_digest, so the time taken does not depend on
which key, if any, matched. The ingress re-reads the file when it changes: revocation needs no restart.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from app.errors import NotReady

log = logging.getLogger("ray.serve")
SCOPES = ("classify", "admin", "explain")
PREFIX = "rtc_"


@dataclass(frozen=True)
class Key:
    name: str
    scopes: frozenset[str]
    rate: float | None  # requests per second; None: the application default
    burst: int | None


class _Entry(BaseModel):
    """One entry as the server reads it (the CLI keeps the rest: `created`)."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)  # errors name fields, not hashes
    name: str
    salt: str = Field(pattern=r"^(?:[0-9a-f]{2})+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: frozenset[Literal[SCOPES]] = Field(min_length=1)
    rate: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)
    revoked: bool = False


_ENTRIES = TypeAdapter(list[_Entry])


def _digest(salt: bytes, key: str) -> str:
    return hashlib.sha256(salt + key.encode()).hexdigest()


def read_file(path: Path) -> dict:
    if not path.exists():
        return {"keys": []}
    return _parse(path, path.read_text())


def _parse(path: Path, text: str) -> dict:
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f"{path}: not a keys file (expected {{\"keys\": [...]}})")
    return data


def _write_file(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)  # readers see the old file or the new one, never half of it


def create(path: Path, name: str, scopes: list[str], rate: float | None = None, burst: int | None = None) -> str:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {list(SCOPES)}; got {scopes}")
    data = read_file(path)
    if any(entry["name"] == name for entry in data["keys"]):
        raise ValueError(f"a key named {name!r} exists already; revoke it or choose another name")
    key, salt = PREFIX + secrets.token_urlsafe(32), secrets.token_hex(16)
    data["keys"].append({
        "name": name, "salt": salt, "sha256": _digest(bytes.fromhex(salt), key), "scopes": sorted(set(scopes)),
        "rate": rate, "burst": burst, "created": int(time.time()), "revoked": False,
    })
    _write_file(path, data)
    return key


def revoke(path: Path, name: str) -> None:
    data = read_file(path)
    matches = [entry for entry in data["keys"] if entry["name"] == name]
    if not matches:
        raise ValueError(f"no key named {name!r} in {path}")
    for entry in matches:
        entry["revoked"] = True
    _write_file(path, data)


class KeyStore:
    """The keys file as the ingress sees it, re-read when its modification time changes.

    A file that is missing or cannot be parsed at start-up fails start-up rather than opening the
    service. Later, while it is missing, or half written by an editor that writes in place, every
    keyed request answers 503 not_ready (neither open nor a 500) until a good file is back.
    """

    def __init__(self, path: str, check_every_s: float = 1.0):
        self.path, self.check_every_s = Path(path), check_every_s
        self._entries: list[tuple[bytes, str, Key]] = []
        self._stamp: tuple | None = None
        self._broken: str | None = None  # why the file last read could not be used
        self._checked = 0.0
        self._load()

    def _load(self) -> None:
        stat = self.path.stat()  # before the read: a write racing the read shows as a new stamp
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        entries = _ENTRIES.validate_python(_parse(self.path, self.path.read_text())["keys"])
        self._entries = [(bytes.fromhex(e.salt), e.sha256, Key(e.name, e.scopes, e.rate, e.burst))
                         for e in entries if not e.revoked]

    def _reload(self) -> None:
        try:
            self._load()
        except (OSError, ValueError) as err:  # pydantic's ValidationError and JSON's are ValueErrors
            self._stamp = None  # read again at the next check
            reason = f"{type(err).__name__}: {err}"  # positions and field names only
            if reason != self._broken:
                log.error("API keys file %s unusable (%s); keyed requests answer 503 until it is fixed", self.path, reason)
            self._broken = reason
            return
        if self._broken:
            log.warning("API keys file %s is usable again", self.path)
        self._broken = None

    def lookup(self, presented: str) -> Key | None:
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            self._reload()
        if self._broken:
            raise NotReady("the API keys cannot be checked right now; retry shortly")
        found = None
        for salt, digest, key in self._entries:  # no early exit: equal work whichever entry matches
            if hmac.compare_digest(_digest(salt, presented), digest) and found is None:
                found = key
        return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.keys", description="Manage API keys (hashes only are stored).")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="create a key and print it once")
    c.add_argument("--name", required=True)
    c.add_argument("--scopes", default="classify", help=f"comma-separated, from {','.join(SCOPES)}")
    c.add_argument("--rate", type=float, help="requests per second for this key (default: the application's)")
    c.add_argument("--burst", type=int, help="token-bucket size for this key")
    c.add_argument("--file", required=True, type=Path)
    ls = sub.add_parser("list", help="names, scopes and state; never the keys")
    ls.add_argument("--file", required=True, type=Path)
    r = sub.add_parser("revoke", help="revoke a key; serving replicas notice within seconds")
    r.add_argument("name")
    r.add_argument("--file", required=True, type=Path)
    args = p.parse_args(argv)
    try:
        if args.command == "create":
            print(create(args.file, args.name, args.scopes.split(","), args.rate, args.burst))  # noqa: T201
        elif args.command == "list":
            for entry in read_file(args.file)["keys"]:
                state = "revoked" if entry.get("revoked") else "active"
                print(f"{entry['name']}\t{','.join(entry['scopes'])}\t{state}")  # noqa: T201
        else:
            revoke(args.file, args.name)
    except ValueError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
