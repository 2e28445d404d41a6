"""The ONNX Runtime runtimes (app/runtimes.py) against torch, on tiny real models exported for real."""
import json

import numpy as np
import pytest
import torch

from app import compute, runtimes
from tests.conftest import TINY
from train.artifact import export, load_tokenizer, read_info
from train.model import build

CPU = torch.device("cpu")
WORDS = "good bad plot film ending boring lovely dreadful script great awful fine".split()
# Lengths from 3 to past max_length (truncated), so the rows sort into several padded passes.
TEXTS = [" ".join(WORDS[i % 12: i % 12 + 1 + i % 5] * (1 + i % 7)) for i in range(60)]


def _artifact(out):
    # initializer_range 0.5: outputs that depend on the text (small initial weights answer one
    # label for all), so a wrong graph cannot pass by agreeing on a constant.
    torch.manual_seed(0)
    model, tokenizer = build("all-MiniLM-L6-v2", ["negative", "positive"], {**TINY, "initializer_range": 0.5})
    export(model, tokenizer, out, {"base_model": "all-MiniLM-L6-v2", "max_length": 24}, {"note": "test"})
    return read_info(out)


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    return _artifact(tmp_path_factory.mktemp("onnx") / "model")


def _run(runtime, info, texts, max_rows=8, max_tokens=96):
    enc = compute.encode(load_tokenizer(info), texts, info.max_length)
    logits, passes = compute.passes(runtime.forward, enc, info.pad_token_id, max_rows, max_tokens)
    return compute.softmax(logits), passes


def test_onnx_matches_torch_within_1e4_over_several_passes(info, tmp_path):
    reference, passes = _run(runtimes.load(info, "torch", CPU, 1, None), info, TEXTS)
    assert len(passes) > 3 and len(set(passes)) > 1  # mixed widths, several passes
    assert np.ptp(reference[:, 1]) > 0.1  # the answers vary with the text
    onnx = runtimes.load(info, "onnx", CPU, 1, tmp_path)
    got, got_passes = _run(onnx, info, TEXTS)
    assert got_passes == passes and np.abs(got - reference).max() <= 1e-4
    # The in-memory path (cache_dir=None: nothing written) builds the same graph.
    assert runtimes.onnx_graph(info, "onnx", None) == (tmp_path / "onnx" / info.version[:32] / "onnx" / "model.onnx").read_bytes()


def test_cached_graph_is_verified_and_a_tampered_one_rebuilt(info, tmp_path, caplog):
    graph = runtimes.onnx_graph(info, "onnx", tmp_path)
    folder = tmp_path / "onnx" / info.version[:32] / "onnx"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["artifact_version"] == info.version and manifest["runtime"] == "onnx"
    assert [p.name for p in folder.parent.iterdir()] == ["onnx"]  # no staging folder left behind
    # Cached: the same bytes again, and the file is not rewritten.
    mtime = (folder / "model.onnx").stat().st_mtime_ns
    assert runtimes.onnx_graph(info, "onnx", tmp_path) == graph
    assert (folder / "model.onnx").stat().st_mtime_ns == mtime
    # One flipped byte: refused, set aside and rebuilt from the artifact.
    tampered = bytearray(graph)
    tampered[len(tampered) // 2] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(tampered))
    with pytest.raises(runtimes.CacheError, match="sha256 does not match"):
        runtimes._read_cached(folder, info, "onnx")
    assert runtimes.onnx_graph(info, "onnx", tmp_path) == graph
    assert "sha256 does not match the manifest" in caplog.text
    assert (folder / "model.onnx").read_bytes() == graph and len(list(folder.parent.iterdir())) == 1
    # A manifest for another artifact (a copied folder) is refused too.
    (folder / "manifest.json").write_text(json.dumps({**manifest, "artifact_version": "0" * 64}))
    with pytest.raises(runtimes.CacheError, match="not the manifest of this artifact"):
        runtimes._read_cached(folder, info, "onnx")
    # A graph an older release cached (onnx-1: int8 weights per tensor) is refused and rebuilt.
    (folder / "manifest.json").write_text(json.dumps({**manifest, "format": "ray-text-classifier/onnx-1"}))
    with pytest.raises(runtimes.CacheError, match="not the manifest of this artifact"):
        runtimes._read_cached(folder, info, "onnx")
    assert runtimes.onnx_graph(info, "onnx", tmp_path) == graph
    assert json.loads((folder / "manifest.json").read_text())["format"] == runtimes.FORMAT


def test_int8_runs_and_keeps_every_label_not_near_a_tie(info, tmp_path):
    reference, _ = _run(runtimes.load(info, "torch", CPU, 1, None), info, TEXTS)
    # Rows whose fp32 probability is more than 0.3 from a tie: the labels int8 must keep. This
    # fixture's large random weights (initializer_range 0.5) amplify int8 rounding far more than a
    # trained model's do, so a 0.1 margin flipped a few rows here; SST-2 numbers are in bench/README.
    clear = np.abs(reference[:, 1] - 0.5) > 0.3
    assert clear.sum() >= 40 and len(set(reference[clear].argmax(1))) == 2  # the fixture separates
    int8 = runtimes.load(info, "onnx-int8", CPU, 1, tmp_path)
    got, _ = _run(int8, info, TEXTS)
    flipped = np.flatnonzero(clear & (got.argmax(1) != reference.argmax(1)))
    assert not len(flipped), (reference[flipped, 1], got[flipped, 1])
    assert np.abs(got - reference).max() > 1e-4  # int8 really ran: not the fp32 graph's outputs
    names = sorted(p.name for p in (tmp_path / "onnx" / info.version[:32]).iterdir())
    assert names == ["onnx", "onnx-int8"]  # int8 is made from the cached fp32 graph


def test_onnx_is_refused_on_a_gpu_device(info):
    with pytest.raises(ValueError, match="runs on CPU only.*use runtime 'torch'"):
        runtimes.load(info, "onnx", torch.device("cuda"), 1, None)
