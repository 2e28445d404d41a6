"""The binary tensor data extension of the Open Inference Protocol (Triton's and KServe's
`Inference-Header-Content-Length`): a JSON header, then each binary tensor's raw bytes in order.
BYTES elements are `<uint32 little-endian length><bytes>`; numbers are little-endian, row-major.

Every length a client declares is checked against the bytes it sent: a mismatch is a 400
(ValidationFailed, rendered by the protocol), never an exception from slicing or unpacking.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from app.errors import BodyTooLarge, ValidationFailed

# Datatype -> little-endian numpy dtype of the outputs this server sends (BYTES is encoded apart).
DTYPES = {"FP32": "<f4", "INT32": "<i4", "BOOL": "|u1"}
_LENGTH = struct.Struct("<I")


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before Content-Encoding gzip/deflate, held to the same byte limit."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding.strip().lower())
    if wbits is None:
        raise ValidationFailed(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    inflate = zlib.decompressobj(wbits)
    try:
        out = inflate.decompress(body, limit + 1)  # no more than the limit is ever inflated
    except zlib.error:
        raise ValidationFailed(f"the body is not valid {encoding} data") from None
    if len(out) > limit:
        raise BodyTooLarge(f"the decompressed body may hold at most {limit} bytes")
    return out


def split(body: bytes, declared: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) by Inference-Header-Content-Length; the whole body is JSON without it."""
    if declared is None:
        return body, b""
    if not declared.strip().isdigit():
        raise ValidationFailed(f"Inference-Header-Content-Length must be a byte count; got {declared[:40]!r}")
    n = int(declared)
    if n > len(body):
        raise ValidationFailed(f"Inference-Header-Content-Length is {n} but the body holds {len(body)} bytes")
    return body[:n], body[n:]


def decode_bytes(raw: bytes, where: str) -> list[bytes]:
    """The elements of a binary BYTES tensor; every length prefix must fit in raw."""
    items, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise ValidationFailed(f"{where}: {len(raw) - at} bytes left where a 4-byte length prefix was expected")
        (size,) = _LENGTH.unpack_from(raw, at)
        at += 4
        if at + size > len(raw):
            raise ValidationFailed(f"{where}: an element declares {size} bytes but {len(raw) - at} remain")
        items.append(raw[at: at + size])
        at += size
    return items


def encode(datatype: str, values) -> bytes:
    """The binary form of one output tensor."""
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(v)) + v for v in (s.encode() for s in values))
    return np.asarray(values, dtype=DTYPES[datatype]).tobytes()
