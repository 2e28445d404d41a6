"""Text Embeddings Inference (1.9 series): `POST /predict` and `GET /info` as TEI's router serves
them for a sequence-classification model (spec: ../shared/specs/interop-protocols.md, 2 and 4.3).

`inputs` is TEI's: a string or `["a"]` is one text, `["a", "b"]` is one sentence pair (refused:
this model classifies single texts), `[["a"], ["b"]]` a batch. Every label comes back, highest
first. `raw_scores: true` gives the logits; otherwise the model's own score function (TEI always
softmaxes more than one label; a multi-label model here sigmoids, as it was trained).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from app.errors import (
    ApiError, BodyTooLarge, EmptyText, Forbidden, InvalidJSON, MethodNotAllowed, NotFound, NotReady, Overloaded,
    PayloadTooLarge, RateLimited, Unauthorized, ValidationFailed, error_headers,
)
from app.http import Reply, Route, json_reply
from app.protocols.common import SERVER_VERSION, Job, operation, parse_json, schema, validate

NAMESPACES = ()
PAIRS = "sentence pairs are not supported by this model"
# TEI's status table (router/src/http/server.rs; error_type is the serde variant name), first
# match wins: project error -> (status, error_type). The README's table is checked against it.
TABLE = [
    (EmptyText, 400, "Empty"),
    (BodyTooLarge, 413, "Validation"),
    (InvalidJSON, 400, "Validation"),
    (ValidationFailed, 422, "Validation"),
    (PayloadTooLarge, 422, "Validation"),
    (RateLimited, 429, "Overloaded"),
    (Overloaded, 429, "Overloaded"),
    (NotReady, 503, "Unhealthy"),
    (Unauthorized, 401, "Unauthorized"),
    (Forbidden, 403, "Forbidden"),
    (NotFound, 404, "NotFound"),
    (MethodNotAllowed, 405, "MethodNotAllowed"),
    (ApiError, 424, "Backend"),
]


class TEIRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # as TEI: no deny_unknown_fields

    inputs: StrictStr | list[StrictStr] | list[list[StrictStr]] = Field(
        description='A text, ["text"], ["text", "pair"] (refused: single-sequence model) or a batch [["a"], ["b"]]')
    truncate: StrictBool | None = Field(None, description="null: true (TEI 1.9.2+ auto_truncate)")
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    raw_scores: StrictBool = Field(False, description="Logits instead of the model's score function")


class TEIScore(BaseModel):
    score: float
    label: str


class TEIError(BaseModel):
    error: str
    error_type: str


def render(err: ApiError) -> Reply:
    status, kind = next((s, k) for cls, s, k in TABLE if isinstance(err, cls))
    headers = tuple((k.lower().encode(), v.encode()) for k, v in error_headers(err).items())
    return json_reply({"error": err.message, "error_type": kind}, status, headers)


def _texts(inputs) -> tuple[list[str], bool]:
    """(texts, batch?) from TEI's `inputs`, refusing pairs and lengths TEI refuses."""
    if isinstance(inputs, str):
        return [inputs], False
    if not inputs:
        raise ValidationFailed("inputs: a list must hold one text (or, for pair models, two)")
    if isinstance(inputs[0], str):
        if len(inputs) == 2:
            raise ValidationFailed(f"Input validation error: {PAIRS}")
        if len(inputs) > 2:
            raise ValidationFailed(f"inputs: invalid length {len(inputs)}, expected 1 or 2 (or a batch [[...], ...])")
        return inputs, False
    for i, item in enumerate(inputs):
        if len(item) != 1:
            raise ValidationFailed(f"Input validation error: {PAIRS}" if len(item) == 2 else
                                   f"inputs[{i}]: invalid length {len(item)}, expected 1")
    return [item[0] for item in inputs], True


def info(ingress) -> dict:
    """TEI's /info body (lib.rs Info); HF's get_endpoint_info() reads it too."""
    labels, args = ingress.info.labels, ingress.args
    return {
        "model_id": args.name, "model_sha": ingress.info.version[:16], "model_dtype": "float32",
        "served_model_name": args.name,
        "model_type": {"classifier": {"id2label": {str(i): label for i, label in enumerate(labels)},
                                      "label2id": {label: i for i, label in enumerate(labels)}}},
        "max_concurrent_requests": args.max_in_flight, "max_input_length": ingress.info.max_length,
        "max_batch_tokens": args.max_request_tokens, "max_batch_requests": None,
        "max_client_batch_size": args.max_items, "auto_truncate": True, "tokenization_workers": None,
        "version": SERVER_VERSION, "sha": None, "docker_label": None,
    }


def routes(ingress) -> dict:
    def parse(body: bytes):
        data = parse_json(body)
        if isinstance(data, dict):
            ingress.check_count(data.get("inputs"), "inputs")
        request = validate(TEIRequest, data)
        if request.truncation_direction.lower() == "left":
            raise ValidationFailed("truncation_direction: Left is not supported; this server truncates on the Right")
        texts, batch = _texts(request.inputs)
        job = Job(texts, None, request.truncate is not False, "none" if request.raw_scores else None,
                  field="inputs[{}]" if batch else "inputs")
        return job, batch

    async def predict(scope, receive) -> Reply:
        batch, served = await ingress.infer(scope, receive, parse)
        preds = served.predictions
        scores = [[{"score": s["score"], "label": s["label"]} for s in p["scores"]] for p in preds]
        return json_reply(scores if batch else scores[0])

    async def get_info(scope, receive) -> Reply:
        ingress.authorize(scope, "classify")
        return json_reply(info(ingress))

    return {("POST", "/predict"): Route(predict, render), ("GET", "/info"): Route(get_info, render)}


def openapi(name: str) -> tuple[dict, dict]:
    schemas: dict = {}
    error = schema(TEIError, schemas)
    codes = {code: error for code in sorted({s for _, s, _ in TABLE})}
    one = {"type": "array", "items": schema(TEIScore, schemas)}
    return {
        "/predict": {"post": operation("Text Embeddings Inference /predict", "TEI", schema(TEIRequest, schemas),
                                       {"oneOf": [one, {"type": "array", "items": one}]}, codes)},
        "/info": {"get": operation("TEI /info", "TEI", None, {"type": "object"}, {401: error, 403: error})},
    }, schemas
