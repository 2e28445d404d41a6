"""The ingress's hot route without a web framework: raw ASGI in, JSON bytes out.

Profiled under load (bench/flame, issue #11), FastAPI's and Starlette's layers (middleware stack,
router, dependency solving, response validation and serialisation) cost more ingress CPU per
request than our own handler. `POST /v1/classify` is the one route that carries traffic, so the
ingress answers it here and leaves every other route, the OpenAPI document included, to FastAPI.
Request and response shapes stay the pydantic models of app/schemas.py; errors keep the one body
of app/errors.py.
"""
from __future__ import annotations

import json
from typing import Awaitable, Callable

from app.errors import ApiError, PayloadTooLarge, log_unexpected, render

JSON = (b"content-type", b"application/json")
Handler = Callable[[dict, Callable], Awaitable[dict]]


def header(scope: dict, name: bytes) -> str | None:
    """A request header's value (name in lower case, as ASGI gives it), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(scope: dict, receive: Callable, limit: int) -> bytes:
    """The whole body, refused with 413 once it passes limit bytes (declared or streamed)."""
    declared = header(scope, b"content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body may hold at most {limit} bytes; got {declared}")
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > limit:
            raise PayloadTooLarge(f"the body may hold at most {limit} bytes")
        if not message.get("more_body", False):
            return bytes(body)


async def respond(send: Callable, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [JSON, (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _route_path(scope: dict) -> str:
    # As Starlette's router matches: the path below the app's mount point (Serve's route_prefix).
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class HotRoutes:
    """ASGI app: (method, path) pairs answered by a handler returning a JSON-able dict; everything
    else (lifespan included) goes to the framework app behind it."""

    def __init__(self, app, routes: dict[tuple[str, str], Handler]):
        self.app, self.hot = app, routes

    @property
    def routes(self):  # Serve labels its request metrics with the app's route patterns
        return self.app.routes

    def add_exception_handler(self, *args) -> None:
        # Serve registers its back-pressure handlers on the app it is given: they belong to FastAPI.
        self.app.add_exception_handler(*args)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        handler = self.hot.get((scope.get("method"), _route_path(scope))) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        try:
            body, status, headers = json.dumps(await handler(scope, receive), separators=(",", ":")).encode(), 200, None
        except ApiError as err:
            status, headers, body = render(err)
        except Exception as err:  # noqa: BLE001 - logged without its message (it may quote texts)
            log_unexpected(err)
            status, headers, body = render(ApiError())
        await respond(send, status, body, headers)
