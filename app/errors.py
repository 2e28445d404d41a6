"""One error hierarchy, one status table, one JSON body: {"error": {"type": ..., "message": ...}}."""
from __future__ import annotations

import json
import logging
import traceback

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


# Refinements that keep their parent's type and status here; the interop protocols (app/protocols)
# map them apart, as TEI answers an empty input 400 `Empty` and a body over the limit 413.
class EmptyText(ValidationFailed):
    pass


class BodyTooLarge(PayloadTooLarge):
    pass


class Overloaded(ApiError):
    status, type, retry_after = 503, "overloaded", 1

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class NotReady(ApiError):
    status, type, retry_after = 503, "not_ready", 5


# Routing errors raised by Starlette itself, mapped into the same body.
_HTTP_STATUS = {404: NotFound, 405: MethodNotAllowed}
# The documented table: error type -> status code (tests check responses against it).
STATUS_TABLE = {cls.type: cls.status for cls in ApiError.__subclasses__()} | {ApiError.type: ApiError.status}


def error_headers(err: ApiError) -> dict[str, str]:
    """Retry-After and WWW-Authenticate: the same on every protocol's error."""
    headers = {}
    if err.retry_after:
        headers["Retry-After"] = str(err.retry_after)
    if err.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def _body(err: ApiError) -> dict:
    return {"error": {"type": err.type, "message": err.message}}


def error_response(err: ApiError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(_body(err), status_code=err.status, headers=dict(headers or {}) | error_headers(err))


def render(err: ApiError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, raw ASGI headers, body bytes): the same answer as error_response, for app/http.py."""
    headers = [(k.lower().encode(), v.encode()) for k, v in error_headers(err).items()]
    return err.status, headers, json.dumps(_body(err), separators=(",", ":")).encode()


async def handle_api_error(_: Request, err: ApiError) -> JSONResponse:
    return error_response(err)


async def handle_http_exception(_: Request, err: HTTPException) -> JSONResponse:
    cls = _HTTP_STATUS.get(err.status_code)
    if cls is None:
        return error_response(ApiError(str(err.detail)))
    return error_response(cls(str(err.detail)), err.headers)  # 405 keeps its Allow header


def log_unexpected(err: BaseException) -> None:
    """Log an unexpected error by type and frames only: its message (and those of the errors it
    chains) can quote request texts, e.g. a downstream stage's error, so it is never logged."""
    parts, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        frames = "".join(traceback.format_list(traceback.extract_tb(err.__traceback__)))  # code lines, no locals
        parts.append(f"{type(err).__module__}.{type(err).__qualname__} (message withheld)\n{frames}")
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    log.error("unhandled error while serving a request (root cause first):\n%s", "".join(reversed(parts)))


class CatchUnexpected:
    """Pure ASGI middleware that answers an unexpected error with the one 500 body.

    It sits inside Starlette's ServerErrorMiddleware, which would log nothing itself but re-raises
    after its handler, so Serve logs the error's full message ("Request failed.") in the replica
    and again in the proxy. Caught here, the error ends here.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as err:  # noqa: BLE001 - every unexpected error ends here
            log_unexpected(err)
            if not started:  # once a response has started, the connection can only be cut short
                await error_response(ApiError())(scope, receive, send)


async def handle_unexpected(_: Request, err: Exception) -> JSONResponse:
    # Errors in the few layers outside CatchUnexpected; Starlette re-raises them after this.
    log_unexpected(err)
    return error_response(ApiError())


def install(api) -> None:
    api.add_exception_handler(ApiError, handle_api_error)
    api.add_exception_handler(HTTPException, handle_http_exception)
    api.add_exception_handler(Exception, handle_unexpected)
    api.add_middleware(CatchUnexpected)  # inside ServerErrorMiddleware, outside the routing handlers
