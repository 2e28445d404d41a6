"""The ingress's hot route without a web framework: raw ASGI in, JSON bytes out.

Profiled under load (bench/flame, issue #11), FastAPI's and Starlette's layers (middleware stack,
router, dependency solving, response validation and serialisation) cost more ingress CPU per
request than our own handler. `POST /v1/classify` is the one route that carries traffic, so the
ingress answers it here and leaves every other route, the OpenAPI document included, to FastAPI.
Request and response shapes stay the pydantic models of app/schemas.py; errors keep the one body
of app/errors.py.

The interop protocols' routes (app/protocols) are served here too: each route carries its
protocol's error renderer, a handler returns a Reply (any content type: the v2 binary tensor
extension answers octet-stream), and a protocol's namespace (`/v2/`, ...) answers unknown paths
in that protocol's error shape, as its clients parse it.
"""
from __future__ import annotations

import json
from typing import Awaitable, Callable, NamedTuple

from app.errors import ApiError, BodyTooLarge, MethodNotAllowed, NotFound, log_unexpected, render

JSON = b"application/json"


class Reply(NamedTuple):
    status: int
    body: bytes
    headers: tuple = ()  # raw ASGI (name, value) pairs besides content-type and content-length
    content_type: bytes = JSON


def json_reply(value, status: int = 200, headers: tuple = ()) -> Reply:
    return Reply(status, json.dumps(value, separators=(",", ":")).encode(), headers)


def project_error(err: ApiError) -> Reply:
    """The project's own error body (app/errors.py), for the /v1 routes."""
    status, headers, body = render(err)
    return Reply(status, body, tuple(headers))


Handler = Callable[[dict, Callable], Awaitable[Reply]]
Renderer = Callable[[ApiError], Reply]


class Route(NamedTuple):
    handler: Handler
    render: Renderer = project_error


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
        raise BodyTooLarge(f"the body may hold at most {limit} bytes; got {declared}")
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge(f"the body may hold at most {limit} bytes")
        if not message.get("more_body", False):
            return bytes(body)


async def respond(send: Callable, reply: Reply) -> None:
    headers = [(b"content-type", reply.content_type), (b"content-length", str(len(reply.body)).encode()), *reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def _route_path(scope: dict) -> str:
    # As Starlette's router matches: the path below the app's mount point (Serve's route_prefix).
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class HotRoutes:
    """ASGI app: (method, path) pairs answered by a Route's handler, and path prefixes that belong
    wholly to one protocol (unknown paths there get its 404/405); everything else (lifespan
    included) goes to the framework app behind it."""

    def __init__(self, app, routes: dict[tuple[str, str], Route], namespaces: dict[str, Renderer] | None = None):
        self.app, self.hot, self.namespaces = app, routes, namespaces or {}
        self.paths = {path for _, path in routes}

    @property
    def routes(self):  # Serve labels its request metrics with the app's route patterns
        return self.app.routes

    def add_exception_handler(self, *args) -> None:
        # Serve registers its back-pressure handlers on the app it is given: they belong to FastAPI.
        self.app.add_exception_handler(*args)

    def _miss(self, method: str, path: str) -> Route | None:
        """A route that answers a path no handler has, inside a protocol's namespace."""
        render = next((r for prefix, r in self.namespaces.items() if path.startswith(prefix)), None)
        if render is None:
            return None
        err = MethodNotAllowed(f"{method} is not allowed on {path}") if path in self.paths else NotFound(f"no route {path}")

        async def refuse(scope, receive):
            raise err
        return Route(refuse, render)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        route = None
        if scope["type"] == "http":
            method, path = scope.get("method"), _route_path(scope)
            route = self.hot.get((method, path)) or (self._miss(method, path) if self.namespaces else None)
        if route is None:
            await self.app(scope, receive, send)
            return
        try:
            reply = await route.handler(scope, receive)
        except ApiError as err:
            reply = route.render(err)
        except Exception as err:  # noqa: BLE001 - logged without its message (it may quote texts)
            log_unexpected(err)
            reply = route.render(ApiError())
        await respond(send, reply)
