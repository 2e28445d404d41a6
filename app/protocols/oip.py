"""Open Inference Protocol v2 (KServe v2 / Triton HTTP), as tritonclient.http and the kserve SDK
call it, with JSON tensors and the binary tensor data extension both ways, and Triton's
classification extension (spec: ../shared/specs/interop-protocols.md, 3.2-3.5 and 4.5).

Input: one BYTES tensor (any name; shape [N] or [N, 1]) of UTF-8 texts. Outputs: `label` BYTES
[N], `score` FP32 [N], `scores` FP32 [N, L] in label order (model metadata `parameters.labels`),
`truncated` BOOL [N], `tokens` INT32 [N]. The body is read whatever its Content-Type (sync
tritonclient sends none). Errors: KServe's `{"error": "<message>"}` (kserve.render).
"""
from __future__ import annotations

import math
import uuid

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from app.errors import ValidationFailed
from app.http import Reply, Route, header, json_reply
from app.protocols import tensors
from app.protocols.common import SERVER, SERVER_VERSION, Job, operation, parse_json, schema, validate
from app.protocols.kserve import KServeError, render

NAMESPACES = ("/v2",)
EXTENSIONS = ["binary_tensor_data", "classification", "parameters"]
OUTPUTS = {"label": "BYTES", "score": "FP32", "scores": "FP32", "truncated": "BOOL", "tokens": "INT32"}
ACTIVATIONS = ("softmax", "sigmoid", "none")
OCTETS = b"application/octet-stream"


class V2Tensor(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr
    shape: list[StrictInt]
    datatype: StrictStr
    parameters: dict | None = None
    data: list | None = Field(None, description="Row-major elements (nested lists are flattened)")


class V2RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: StrictStr
    parameters: dict | None = Field(None, description="binary_data (bool), classification (top k as BYTES)")


class V2InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the kserve SDK adds model_name

    id: StrictStr | None = None
    parameters: dict | None = Field(None, description="truncate, function_to_apply, binary_data_output")
    inputs: list[V2Tensor] = Field(min_length=1)
    outputs: list[V2RequestedOutput] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    outputs: list[V2Tensor]


def _flatten(data: list) -> list:
    out, stack = [], [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _texts(request: V2InferRequest, binary: bytes, check_count) -> list[str]:
    """The input tensor's texts; its declared shape and sizes must match what was sent."""
    if len(request.inputs) != 1:
        raise ValidationFailed(f"expected 1 input (BYTES texts); got {len(request.inputs)}")
    (tensor,) = request.inputs
    where = f"input '{tensor.name}'"
    if tensor.datatype != "BYTES":
        raise ValidationFailed(f"{where}: datatype must be BYTES; got {tensor.datatype}")
    if not (len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)) or min(tensor.shape) < 0:
        raise ValidationFailed(f"{where}: shape must be [N] or [N, 1]; got {tensor.shape}")
    size = (tensor.parameters or {}).get("binary_data_size")
    if tensor.data is not None:
        items = _flatten(tensor.data)
        check_count(items, "text")
        if not all(isinstance(t, str) for t in items):
            raise ValidationFailed(f"{where}: every BYTES element in `data` must be a string")
        if binary:
            raise ValidationFailed(f"{len(binary)} bytes follow the JSON header but no input declares binary_data_size")
    elif type(size) is int and size >= 0:
        if size != len(binary):
            raise ValidationFailed(f"{where}: binary_data_size is {size} but {len(binary)} bytes follow the JSON header")
        try:
            items = [t.decode() for t in tensors.decode_bytes(binary, where)]
        except UnicodeDecodeError:
            raise ValidationFailed(f"{where}: an element is not valid UTF-8") from None
        check_count(items, "text")
    else:
        raise ValidationFailed(f"{where}: give `data` or parameters.binary_data_size (shared memory is not supported)")
    if math.prod(tensor.shape) != len(items):
        raise ValidationFailed(f"{where}: shape {tensor.shape} holds {math.prod(tensor.shape)} elements; got {len(items)}")
    return items


def _outputs(request: V2InferRequest, model: str, labels: int) -> list[tuple[str, bool, int | None]]:
    """(name, binary?, classification k) per output to send, in order."""
    binary_default = (request.parameters or {}).get("binary_data_output") is True
    if request.outputs is None:
        return [(name, binary_default, None) for name in OUTPUTS]
    out = []
    for wanted in request.outputs:
        if wanted.name not in OUTPUTS:
            raise ValidationFailed(f"unexpected inference output '{wanted.name}' for model '{model}'")
        params = wanted.parameters or {}
        k = params.get("classification")
        if k is not None and (type(k) is not int or k < 1 or wanted.name != "scores"):
            raise ValidationFailed(f"output '{wanted.name}': classification must be an integer >= 1, on `scores` only")
        out.append((wanted.name, params.get("binary_data", binary_default) is True, min(k, labels) if k else None))
    return out


def _options(request: V2InferRequest) -> tuple[bool, str | None]:
    params = request.parameters or {}
    truncate, activation = params.get("truncate", True), params.get("function_to_apply")
    if type(truncate) is not bool:
        raise ValidationFailed(f"parameters.truncate must be a boolean; got {truncate!r}"[:200])
    if activation is not None and activation not in ACTIVATIONS:
        raise ValidationFailed(f"parameters.function_to_apply must be one of {', '.join(ACTIVATIONS)}")
    return truncate, activation


def routes(ingress) -> dict:
    name, version, labels = ingress.args.name, ingress.info.version[:16], ingress.info.labels
    index = {label: i for i, label in enumerate(labels)}
    metadata = {
        "name": name, "versions": [version], "platform": "ray_serve",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": n, "datatype": t, "shape": [-1, len(labels)] if n == "scores" else [-1]}
                    for n, t in OUTPUTS.items()],
        "parameters": {"labels": labels, "multi_label": ingress.info.multi_label, "max_length": ingress.info.max_length},
    }

    def parse(scope):
        def parse_body(body: bytes):
            body = tensors.decompress(body, header(scope, b"content-encoding"), ingress.args.max_body_bytes)
            head, binary = tensors.split(body, header(scope, b"inference-header-content-length"))
            request = validate(V2InferRequest, parse_json(head))
            texts = _texts(request, binary, ingress.check_count)
            outputs = _outputs(request, name, len(labels))
            truncate, activation = _options(request)
            return Job(texts, None, truncate, activation, field="text[{}]"), (request.id, outputs)
        return parse_body

    def tensor(output: str, k: int | None, preds: list[dict]) -> tuple[str, list[int], list]:
        """(datatype, shape, row-major values) of one output."""
        n = len(preds)
        if k:  # Triton's classification extension: "value:index:label", highest first
            return "BYTES", [n, k], [f"{s['score']:f}:{index[s['label']]}:{s['label']}" for p in preds for s in p["scores"][:k]]
        if output == "scores":
            rows = [[0.0] * len(labels) for _ in preds]
            for row, p in zip(rows, preds):
                for s in p["scores"]:
                    row[index[s["label"]]] = s["score"]
            return "FP32", [n, len(labels)], [v for row in rows for v in row]
        return OUTPUTS[output], [n], [p[output] for p in preds]

    async def infer(scope, receive) -> Reply:
        (request_id, outputs), served = await ingress.infer(scope, receive, parse(scope))
        preds = served.predictions
        tail, sent = [], []
        for output, binary, k in outputs:
            datatype, shape, values = tensor(output, k, preds)
            entry = {"name": output, "datatype": datatype, "shape": shape}
            if binary:
                raw = tensors.encode(datatype, values)
                entry["parameters"] = {"binary_data_size": len(raw)}
                tail.append(raw)
            else:
                entry["data"] = values
            sent.append(entry)
        reply = json_reply({"model_name": name, "model_version": served.version[:16], "id": request_id or str(uuid.uuid4()),
                            "outputs": sent})
        if not tail:
            return reply
        return Reply(200, reply.body + b"".join(tail),
                     ((b"inference-header-content-length", str(len(reply.body)).encode()),), OCTETS)

    async def server(scope, receive) -> Reply:
        ingress.authorize(scope, "classify")
        return json_reply({"name": SERVER, "version": SERVER_VERSION, "extensions": EXTENSIONS})

    async def live(scope, receive) -> Reply:
        return json_reply({"live": True})

    async def server_ready(scope, receive) -> Reply:
        await ingress.ready()
        return json_reply({"ready": True})

    async def model(scope, receive) -> Reply:
        ingress.authorize(scope, "classify")
        return json_reply(metadata)

    async def model_ready(scope, receive) -> Reply:
        await ingress.ready()
        return json_reply({"name": name, "ready": True})

    table = {("GET", "/v2"): server, ("GET", "/v2/health/live"): live, ("GET", "/v2/health/ready"): server_ready}
    for base in (f"/v2/models/{name}", f"/v2/models/{name}/versions/{version}"):
        table |= {("GET", base): model, ("GET", f"{base}/ready"): model_ready, ("POST", f"{base}/infer"): infer}
    return {key: Route(handler, render) for key, handler in table.items()}


def openapi(name: str) -> tuple[dict, dict]:
    schemas: dict = {}
    error = schema(KServeError, schemas)
    codes = {code: error for code in (400, 401, 403, 404, 413, 429, 503)}
    obj = {"type": "object"}
    base = f"/v2/models/{name}"
    return {
        "/v2": {"get": operation("OIP v2 server metadata", "Open Inference Protocol v2", None, obj, {401: error, 403: error})},
        "/v2/health/live": {"get": operation("OIP v2 liveness", "Open Inference Protocol v2", None, obj, {})},
        "/v2/health/ready": {"get": operation("OIP v2 readiness", "Open Inference Protocol v2", None, obj, {503: error})},
        base: {"get": operation("OIP v2 model metadata (labels in parameters.labels)", "Open Inference Protocol v2",
                                None, obj, {401: error, 403: error})},
        f"{base}/ready": {"get": operation("OIP v2 model readiness", "Open Inference Protocol v2", None, obj, {503: error})},
        f"{base}/infer": {"post": operation(
            "OIP v2 inference (JSON; the binary tensor extension is the same JSON followed by the tensors' bytes, "
            "with Inference-Header-Content-Length)", "Open Inference Protocol v2",
            schema(V2InferRequest, schemas), schema(V2InferResponse, schemas), codes)},
    }, schemas
