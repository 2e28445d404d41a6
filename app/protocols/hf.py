"""Hugging Face Inference API: what `huggingface_hub.InferenceClient(model=f"{base}/models/{name}")
.text_classification(...)` sends and parses (spec: ../shared/specs/interop-protocols.md, 1 and 4.2).

The client keeps `parse_obj_as_list(body)[0]`, so a string input is answered `[[{label, score}, ...]]`
(a flat list would hand the user one element); it shows the body's `error` string, so errors are
`{"error": "<message>", "error_type": "<project type>"}` with the project's statuses.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from app.errors import ApiError, error_headers
from app.http import Reply, Route, json_reply
from app.protocols import tei
from app.protocols.common import Job, operation, parse_json, schema, validate

NAMESPACES = ("/models/",)


class HFParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the client always sends `parameters`, maybe {}

    top_k: StrictInt | None = Field(None, ge=1, description="Labels per text, highest first; absent: all")
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = Field(
        None, description="Score function; absent: the model's own (sigmoid if multi-label, else softmax)")
    truncate: StrictBool = Field(True, description="Our extension: truncate over-long texts instead of 422")


class HFRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: StrictStr | Annotated[list[StrictStr], Field(min_length=1)]
    parameters: HFParameters | None = None


class HFScore(BaseModel):
    label: str
    score: float


class HFError(BaseModel):
    error: str
    error_type: str


def render(err: ApiError) -> Reply:
    headers = tuple((k.lower().encode(), v.encode()) for k, v in error_headers(err).items())
    return json_reply({"error": err.message, "error_type": err.type}, err.status, headers)


def routes(ingress) -> dict:
    base = f"/models/{ingress.args.name}"

    def parse(body: bytes):
        data = parse_json(body)
        if isinstance(data, dict):
            ingress.check_count(data.get("inputs"), "inputs")
        request = validate(HFRequest, data)
        params = request.parameters or HFParameters()
        single = isinstance(request.inputs, str)
        texts = [request.inputs] if single else request.inputs
        return Job(texts, params.top_k, params.truncate, params.function_to_apply,
                   field="inputs" if single else "inputs[{}]"), None

    async def predict(scope, receive) -> Reply:
        _, served = await ingress.infer(scope, receive, parse)
        preds = served.predictions
        return json_reply([p["scores"] for p in preds])

    async def health(scope, receive) -> Reply:
        await ingress.ready()
        return json_reply({"status": "ready"})

    async def info(scope, receive) -> Reply:
        ingress.authorize(scope, "classify")
        return json_reply(tei.info(ingress))

    return {("POST", base): Route(predict, render), ("GET", f"{base}/health"): Route(health, render),
            ("GET", f"{base}/info"): Route(info, render)}


def openapi(name: str) -> tuple[dict, dict]:
    schemas: dict = {}
    error = schema(HFError, schemas)
    codes = {code: error for code in (400, 401, 403, 413, 422, 429, 503)}
    scores = {"type": "array", "items": {"type": "array", "items": schema(HFScore, schemas)}}
    base = f"/models/{name}"
    return {
        base: {"post": operation("Hugging Face Inference API text classification", "Hugging Face",
                                 schema(HFRequest, schemas), scores, codes)},
        f"{base}/health": {"get": operation("Ready", "Hugging Face", None, {"type": "object"}, {503: error})},
        f"{base}/info": {"get": operation("Model information (TEI's /info)", "Hugging Face", None,
                                          {"type": "object"}, {401: error, 403: error})},
    }, schemas
