"""Model runtimes behind one call, `forward(input_ids, attention_mask) -> fp32 logits`, free of Ray.

- `torch`: the artifact's transformers model (CUDA with bf16/fp16 autocast where there is a GPU).
- `onnx`: the same weights exported to ONNX (torch.onnx, the dynamo exporter) and run by ONNX
  Runtime on CPU; the same outputs as torch within float rounding.
- `onnx-int8`: that graph with ONNX Runtime's dynamic int8 quantisation of its MatMul weights
  (activations quantised per batch at run time); faster per core, at a small accuracy cost that
  `python -m train.evaluate --runtime onnx-int8` measures.

The ONNX graph is made only from a verified artifact (`ArtifactInfo` comes from read_info/load_info,
the weights from train.artifact.load_model), never from a file found on disk. With a cache folder
it is kept per node under the artifact's version, as `<cache>/onnx/<version>/<runtime>/` holding
the graph and a manifest of its sha256, built in a temp folder and renamed into place whole (two
replicas building at once are safe: the second finds the first's copy). The bytes loaded are the
bytes hashed; a copy that does not match its manifest is set aside and built again. With
cache_dir=None nothing is written by us (fp32); ORT's own quantiser still stages its input in the
system temp folder for int8 (onnxruntime.quantization writes temp files, there is no in-memory API).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, get_args

import numpy as np

from app.config import ModelConfig
from train.artifact import ArtifactInfo, load_model

log = logging.getLogger("app.runtimes")

NAMES = get_args(ModelConfig.model_fields["runtime"].annotation)  # the config's Literal: one home
FORMAT = "ray-text-classifier/onnx-2"  # 2: int8 weights per channel; a cached onnx-1 graph is rebuilt
GRAPH = "model.onnx"
MANIFEST = "manifest.json"
INPUTS = ("input_ids", "attention_mask")


class CacheError(ValueError):
    """A cached ONNX copy that does not match its manifest; the message names the file."""


class Runtime:
    """One loaded model: `forward` turns padded int64 ids and mask into fp32 logits."""

    def __init__(self, name: str, forward: Callable[[np.ndarray, np.ndarray], np.ndarray]):
        self.name, self.forward = name, forward


# ----- torch -----
def torch_runtime(info: ArtifactInfo, device, threads: int, key_file: str | None = None) -> Runtime:
    import torch

    from app import compute
    from train.model import mixed_precision

    torch.set_num_threads(threads)  # process-wide: the replica runs one model
    model = load_model(info, key_file).to(device)  # an encrypted artifact: decrypted in memory
    return Runtime("torch", compute.torch_forward(model, device, mixed_precision(device)[0]))


# ----- ONNX Runtime -----
def export_onnx(info: ArtifactInfo, key_file: str | None = None) -> bytes:
    """The artifact's model as an ONNX graph (fp32), batch and sequence axes dynamic."""
    import torch

    class Logits(torch.nn.Module):  # the graph's one output: logits, not the transformers output object
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    # Example shapes other than 1 so torch.export keeps both axes symbolic, not specialised.
    ids = torch.full((2, 16), info.pad_token_id + 1, dtype=torch.int64)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    axes = {0: batch, 1: sequence}
    # The dynamo exporter: torch's default and maintained path (the TorchScript one is deprecated);
    # it captures the model symbolically instead of tracing one shape's Python branches.
    program = torch.onnx.export(Logits(load_model(info, key_file)).eval(), (ids, torch.ones_like(ids)), dynamo=True,
                                input_names=list(INPUTS), output_names=["logits"],
                                dynamic_shapes={"input_ids": axes, "attention_mask": axes}, verbose=False)
    proto = program.model_proto
    # The exporter records intermediate shapes that ONNX's own shape inference (which the
    # quantiser reruns) contradicts; ORT infers them itself at session start.
    del proto.graph.value_info[:]
    return proto.SerializeToString()


def quantize_int8(graph: bytes) -> bytes:
    """Dynamic int8 quantisation (weights int8 per output channel, activations per batch at run
    time). Per channel because per tensor lost 0.8-1.0 point on SST-2 dev with the default
    recipe's models and per channel loses none (86.47 % vs torch's 86.24 %; bench/README.md,
    ONNX section)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="rtc-int8-") as tmp:
        out = Path(tmp, "int8.onnx")
        # MatMul only: the encoder's dense layers are where the time goes; quantised embedding
        # lookups (Gather) save nothing on CPU and cost accuracy.
        quantize_dynamic(onnx.load_model_from_string(graph), out, op_types_to_quantize=["MatMul"],
                         weight_type=QuantType.QInt8, per_channel=True)
        return out.read_bytes()


def _build(info: ArtifactInfo, name: str, cache_dir: Path | None, key_file: str | None) -> bytes:
    if name == "onnx":
        return export_onnx(info, key_file)
    return quantize_int8(onnx_graph(info, "onnx", cache_dir, key_file))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_cached(folder: Path, info: ArtifactInfo, name: str) -> bytes | None:
    """The cached graph when its manifest names this artifact and runtime and its hash matches;
    None when there is none; CacheError when there is one that does not match."""
    if not folder.exists():
        return None
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        graph = (folder / GRAPH).read_bytes()
    except (OSError, ValueError) as err:
        raise CacheError(f"{folder}: unreadable cached ONNX copy ({err.__class__.__name__})") from None
    expected = {"format": FORMAT, "artifact_version": info.version, "runtime": name}
    if {k: manifest.get(k) for k in expected} != expected or set(manifest.get("files", {})) != {GRAPH}:
        raise CacheError(f"{folder}/{MANIFEST}: not the manifest of this artifact's {name} graph")
    if _sha256(graph) != manifest["files"][GRAPH]:
        raise CacheError(f"{folder}/{GRAPH}: sha256 does not match the manifest (file changed)")
    return graph


def _set_aside(folder: Path) -> None:
    # Renamed first, so no replica loads it while it is deleted; a replica that got there first
    # has already moved it (FileNotFoundError).
    aside = folder.with_name(f".bad-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _write(folder: Path, info: ArtifactInfo, name: str, graph: bytes) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        (staging / GRAPH).write_bytes(graph)
        manifest = {"format": FORMAT, "artifact_version": info.version, "runtime": name,
                    "files": {GRAPH: _sha256(graph)}}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.rename(staging, folder)  # atomic; fails when another replica renamed its copy first
    except OSError:
        if not folder.exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def onnx_graph(info: ArtifactInfo, name: str, cache_dir: Path | None, key_file: str | None = None) -> bytes:
    """The serialized ONNX graph for runtime `name` ("onnx" or "onnx-int8") of a verified artifact:
    from the cache when a verified copy is there, else built (and cached when cache_dir is set)."""
    if cache_dir is None:
        return _build(info, name, None, key_file)
    folder = Path(cache_dir).expanduser() / "onnx" / info.version[:32] / name
    try:
        graph = _read_cached(folder, info, name)
    except CacheError as err:
        log.warning("%s; building it again", err)
        _set_aside(folder)
        graph = None
    if graph is not None:
        return graph
    graph = _build(info, name, cache_dir, key_file)
    _write(folder, info, name, graph)
    return graph


def ort_runtime(info: ArtifactInfo, name: str, threads: int, cache_dir: Path | None,
                key_file: str | None = None) -> Runtime:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # torch_threads' meaning: the threads one forward uses
    options.inter_op_num_threads = 1  # one graph at a time: no parallel branches worth a thread
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_graph(info, name, cache_dir, key_file), options, providers=["CPUExecutionProvider"])

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    return Runtime(name, forward)


def load(info: ArtifactInfo, name: str, device, threads: int, cache_dir: Path | None,
         key_file: str | None = None) -> Runtime:
    """Runtime `name` for a verified artifact on device (torch.device), with `threads` CPU threads.
    An encrypted artifact (key_file, else $MODEL_KEY_FILE) never leaves plaintext weights on disk:
    its ONNX graph stays in memory, and onnx-int8, whose quantiser writes the graph to a temp
    file, is refused."""
    if name == "torch":
        return torch_runtime(info, device, threads, key_file)
    if info.encrypted:
        if name == "onnx-int8":
            raise ValueError("runtime 'onnx-int8' is not available for encrypted artifacts: ONNX Runtime's "
                             "quantiser writes the model to a temporary file; use 'onnx' or 'torch'")
        cache_dir = None
    if device.type != "cpu":
        raise ValueError(f"runtime {name!r} runs on CPU only; this replica has a {device.type} device: "
                         f"use runtime 'torch' on GPU replicas")
    return ort_runtime(info, name, threads, cache_dir, key_file)
