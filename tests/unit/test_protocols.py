"""The interop protocols' pure parts: binary tensor framing, TEI's `inputs` forms, the per-row
score functions and each protocol's error table (the served routes: tests/e2e/test_interop.py)."""
import gzip
import struct

import numpy as np
import pytest

from app.compute import predictions, sigmoid, softmax
from app.errors import (
    ApiError, BodyTooLarge, EmptyText, InvalidJSON, NotReady, Overloaded, PayloadTooLarge, RateLimited, ValidationFailed,
)
from app.protocols import hf, kserve, oip, tei, tensors


def element(text: bytes) -> bytes:
    return struct.pack("<I", len(text)) + text


def test_bytes_tensor_round_trip():
    raw = tensors.encode("BYTES", ["great", "é", ""])
    assert raw == element(b"great") + element("é".encode()) + element(b"")
    assert tensors.decode_bytes(raw, "t") == [b"great", "é".encode(), b""]
    assert tensors.encode("FP32", [[0.5, 1.0]]) == np.array([0.5, 1.0], "<f4").tobytes()
    assert tensors.encode("BOOL", [True, False]) == b"\x01\x00"


@pytest.mark.parametrize("raw,fragment", [
    (b"\x05\x00", "2 bytes left where a 4-byte length prefix"),
    (struct.pack("<I", 10) + b"abc", "declares 10 bytes but 3 remain"),
    (struct.pack("<I", 2**32 - 1), "declares 4294967295 bytes but 0 remain"),
])
def test_bytes_tensor_lengths_must_fit(raw, fragment):
    with pytest.raises(ValidationFailed, match=fragment):
        tensors.decode_bytes(raw, "t")


def test_split_checks_the_declared_header_length():
    assert tensors.split(b'{"a":1}xyz', "7") == (b'{"a":1}', b"xyz")
    assert tensors.split(b"{}", None) == (b"{}", b"")
    for declared in ("99", "-1", "1e3", ""):
        with pytest.raises(ValidationFailed):
            tensors.split(b"{}", declared)


def test_decompress_is_held_to_the_body_limit():
    assert tensors.decompress(gzip.compress(b"x" * 100), "gzip", 100) == b"x" * 100
    with pytest.raises(BodyTooLarge):
        tensors.decompress(gzip.compress(b"x" * 10_000_000), "gzip", 4096)
    with pytest.raises(ValidationFailed):
        tensors.decompress(b"not gzip", "gzip", 100)
    with pytest.raises(ValidationFailed):
        tensors.decompress(b"", "br", 100)


def test_tei_inputs_forms():
    assert tei._texts("a") == (["a"], False)
    assert tei._texts(["a"]) == (["a"], False)
    assert tei._texts([["a"], ["b"]]) == (["a", "b"], True)
    for pairs in (["a", "b"], [["a"], ["b", "c"]]):
        with pytest.raises(ValidationFailed, match="sentence pairs are not supported"):
            tei._texts(pairs)
    for bad in ([], ["a", "b", "c"], [["a", "b", "c"]]):
        with pytest.raises(ValidationFailed):
            tei._texts(bad)


def test_per_row_score_functions_in_one_call():
    logits = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.2], [0.0, 4.0]], dtype=np.float32)
    out = predictions(logits, ["a", "b"], [None] * 4, False, ["none", None, "sigmoid", "softmax"])
    by_label = [{s["label"]: s["score"] for s in p["scores"]} for p in out]
    assert by_label[0] == {"a": 1.0, "b": 2.0}
    assert list(by_label[1].values()) == pytest.approx(sorted(softmax(logits[1:2])[0], reverse=True))
    assert [by_label[2]["a"], by_label[2]["b"]] == pytest.approx(sigmoid(logits[2:3])[0].tolist())
    assert by_label[3]["b"] == pytest.approx(float(softmax(logits[3:4])[0, 1]))
    assert predictions(logits, ["a", "b"], [1] * 4, False) == predictions(logits, ["a", "b"], [1] * 4, False, [None] * 4)


@pytest.mark.parametrize("err,status,kind", [
    (EmptyText("e"), 400, "Empty"), (BodyTooLarge("b"), 413, "Validation"), (PayloadTooLarge("p"), 422, "Validation"),
    (ValidationFailed("v"), 422, "Validation"), (InvalidJSON("j"), 400, "Validation"),
    (RateLimited("r"), 429, "Overloaded"), (Overloaded("o"), 429, "Overloaded"), (NotReady("n"), 503, "Unhealthy"),
    (ApiError(), 424, "Backend"),
])
def test_tei_error_table(err, status, kind):
    import json

    reply = tei.render(err)
    assert reply.status == status and json.loads(reply.body) == {"error": err.message, "error_type": kind}


def test_hf_and_kserve_error_bodies():
    import json

    reply = hf.render(RateLimited("slow down", 3))
    assert reply.status == 429 and json.loads(reply.body) == {"error": "slow down", "error_type": "rate_limited"}
    assert (b"retry-after", b"3") in reply.headers
    for err, status in [(ValidationFailed("v"), 400), (InvalidJSON("j"), 400), (PayloadTooLarge("p"), 413),
                        (Overloaded("o"), 503)]:
        reply = kserve.render(err)
        assert reply.status == status and json.loads(reply.body) == {"error": err.message}
    assert oip.render is kserve.render


def test_v2_requested_outputs():
    request = oip.V2InferRequest.model_validate({"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["x"]}],
                                                 "parameters": {"binary_data_output": True}})
    assert oip._outputs(request, "m", 2) == [(name, True, None) for name in oip.OUTPUTS]
    request.outputs = [oip.V2RequestedOutput(name="scores", parameters={"classification": 5, "binary_data": False})]
    assert oip._outputs(request, "m", 2) == [("scores", False, 2)]
    request.outputs = [oip.V2RequestedOutput(name="label", parameters={"classification": 1})]
    with pytest.raises(ValidationFailed, match="on `scores` only"):
        oip._outputs(request, "m", 2)
