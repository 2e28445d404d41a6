"""One error hierarchy, one status table, one JSON body: {"error": {"type": ..., "message": ...}}."""
from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger("ray.serve")


class ApiError(Exception):
    status = 500
    type = "internal_error"
    retry_after: int | None = None

    def __init__(self, message: str = "internal error"):
        super().__init__(message)
        self.message = message


class InvalidJSON(ApiError):
    status, type = 400, "invalid_json"


class Unauthorized(ApiError):
    status, type = 401, "unauthorized"


class Forbidden(ApiError):
    status, type = 403, "forbidden"


class RateLimited(ApiError):
    status, type, retry_after = 429, "rate_limited", 1

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(ApiError):
    status, type = 404, "not_found"


class MethodNotAllowed(ApiError):
    status, type = 405, "method_not_allowed"


class PayloadTooLarge(ApiError):
    status, type = 413, "payload_too_large"


class ValidationFailed(ApiError):
    status, type = 422, "validation_error"


class Overloaded(ApiError):
    status, type, retry_after = 503, "overloaded", 1


class NotReady(ApiError):
    status, type, retry_after = 503, "not_ready", 5


# Routing errors raised by Starlette itself, mapped into the same body.
_HTTP_STATUS = {404: NotFound, 405: MethodNotAllowed}
# The documented table: error type -> status code (tests check responses against it).
STATUS_TABLE = {cls.type: cls.status for cls in ApiError.__subclasses__()} | {ApiError.type: ApiError.status}


def error_response(err: ApiError, headers: dict | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if err.retry_after:
        headers["Retry-After"] = str(err.retry_after)
    if err.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": {"type": err.type, "message": err.message}}, status_code=err.status, headers=headers)


async def handle_api_error(_: Request, err: ApiError) -> JSONResponse:
    return error_response(err)


async def handle_http_exception(_: Request, err: HTTPException) -> JSONResponse:
    cls = _HTTP_STATUS.get(err.status_code)
    if cls is None:
        return error_response(ApiError(str(err.detail)))
    return error_response(cls(str(err.detail)), err.headers)  # 405 keeps its Allow header


async def handle_unexpected(_: Request, err: Exception) -> JSONResponse:
    # The type only: messages of downstream errors can quote request texts.
    log.error("unhandled %s while serving a request", type(err).__name__)
    return error_response(ApiError())


def install(api) -> None:
    api.add_exception_handler(ApiError, handle_api_error)
    api.add_exception_handler(HTTPException, handle_http_exception)
    api.add_exception_handler(Exception, handle_unexpected)
