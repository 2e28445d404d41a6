"""KServe v1 (`/v1/models/{name}:predict`), as the kserve SDK's v1 InferenceRESTClient calls it
(spec: ../shared/specs/interop-protocols.md, 3.1 and 4.4). Its error renderer, `{"error": "<message>"}`
with plain application/json and 400 for bad input, is also Open Inference Protocol v2's (oip.py).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from app.errors import ApiError, InvalidJSON, ValidationFailed, error_headers
from app.http import Reply, Route, json_reply
from app.protocols.common import Job, operation, parse_json, schema, validate
from app.schemas import Prediction

NAMESPACES = ("/v1/models",)
# KServe and Triton answer bad input 400; every other error keeps the project's status (app/errors.py).
STATUS = {InvalidJSON: 400, ValidationFailed: 400}


class KServeInstance(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: StrictStr


class KServeParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    top_k: StrictInt | None = Field(1, ge=1, description="Scores per text; null for every label")
    truncate: StrictBool = True
    function_to_apply: Literal["softmax", "sigmoid", "none"] | None = None


class KServeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    instances: list[StrictStr | KServeInstance] | None = Field(None, min_length=1, description="Texts, or {\"text\": ...}")
    inputs: list[StrictStr | KServeInstance] | None = Field(None, min_length=1, description="An alias of instances")
    parameters: KServeParameters | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "KServeRequest":
        if (self.instances is None) == (self.inputs is None):
            raise ValueError("give exactly one of `instances` or `inputs`")
        return self


class KServeResponse(BaseModel):
    predictions: list[Prediction]


class KServeError(BaseModel):
    error: str


def status(err: ApiError) -> int:
    return next((code for cls, code in STATUS.items() if isinstance(err, cls)), err.status)


def render(err: ApiError) -> Reply:
    headers = tuple((k.lower().encode(), v.encode()) for k, v in error_headers(err).items())
    return json_reply({"error": err.message}, status(err), headers)


def routes(ingress) -> dict:
    name = ingress.args.name

    def parse(body: bytes):
        data = parse_json(body)
        if isinstance(data, dict):
            for field in ("instances", "inputs"):
                ingress.check_count(data.get(field), field)
        request = validate(KServeRequest, data)
        field = "instances" if request.instances is not None else "inputs"
        texts = [i if isinstance(i, str) else i.text for i in getattr(request, field)]
        params = request.parameters or KServeParameters()
        return Job(texts, params.top_k, params.truncate, params.function_to_apply, field=field + "[{}]"), None

    async def predict(scope, receive) -> Reply:
        _, served = await ingress.infer(scope, receive, parse)
        preds = served.predictions
        return json_reply({"predictions": preds})

    async def alive(scope, receive) -> Reply:
        return json_reply({"status": "alive"})

    async def models(scope, receive) -> Reply:
        ingress.authorize(scope, "classify")
        return json_reply({"models": [name]})

    async def ready(scope, receive) -> Reply:
        await ingress.ready()
        return json_reply({"name": name, "ready": True})

    return {("GET", "/"): Route(alive, render), ("GET", "/v1/models"): Route(models, render),
            ("GET", f"/v1/models/{name}"): Route(ready, render),
            ("POST", f"/v1/models/{name}:predict"): Route(predict, render)}


def openapi(name: str) -> tuple[dict, dict]:
    schemas: dict = {}
    error = schema(KServeError, schemas)
    codes = {code: error for code in (400, 401, 403, 413, 429, 503)}
    obj = {"type": "object"}
    return {
        "/": {"get": operation("KServe v1 liveness", "KServe v1", None, obj, {})},
        "/v1/models": {"get": operation("KServe v1 model list", "KServe v1", None, obj, {401: error, 403: error})},
        f"/v1/models/{name}": {"get": operation("KServe v1 model readiness", "KServe v1", None, obj, {503: error})},
        f"/v1/models/{name}:predict": {"post": operation("KServe v1 predict", "KServe v1", schema(KServeRequest, schemas),
                                                        schema(KServeResponse, schemas), codes)},
    }, schemas
