"""What every protocol's parser shares: JSON decoding and pydantic validation into the project's
errors (each protocol's renderer then gives them its own status and body), and its OpenAPI pieces."""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import version

from pydantic import BaseModel, ValidationError

from app.errors import InvalidJSON, ValidationFailed

REF = "#/components/schemas/{model}"
SERVER = "ray-text-classifier"
SERVER_VERSION = version(SERVER)


@dataclass(frozen=True)
class Job:
    """One request's texts and options, whatever protocol it came in on (the coalescer's unit)."""
    texts: list[str]
    top_k: int | None
    truncate: bool
    activation: str | None = None  # a score function of app.compute.ACTIVATIONS; None: the model's own
    field: str = "texts[{}]"  # how error messages name texts[i] (a single text: its field name)


def parse_json(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidJSON("the body is not valid JSON (UTF-8)") from None


def validation_message(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(map(str, first["loc"])) or "body"
    return f"{where}: {first['msg']}" + (f" ({len(err.errors())} problems)" if len(err.errors()) > 1 else "")


def validate(model: type[BaseModel], data):
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ValidationFailed(validation_message(err)) from None
    except RecursionError:
        raise ValidationFailed("the body is nested too deeply") from None


def schema(model: type[BaseModel], schemas: dict) -> dict:
    """A $ref to model's JSON schema, which (with the models it uses) is added to schemas."""
    document = model.model_json_schema(ref_template=REF)
    schemas.update(document.pop("$defs", {}))
    schemas[model.__name__] = document
    return {"$ref": REF.format(model=model.__name__)}


def operation(summary: str, tag: str, request: dict | None, response: dict, errors: dict[int, dict],
              content_type: str = "application/json") -> dict:
    """An OpenAPI operation: a JSON request body (if any), the 200 body and the error bodies."""
    op = {"summary": summary, "tags": ["interop", tag],
          "responses": {"200": {"description": "OK", "content": {content_type: {"schema": response}}}}
          | {str(code): {"description": "error", "content": {"application/json": {"schema": body}}}
             for code, body in errors.items()}}
    if request is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": request}}}
    return op
