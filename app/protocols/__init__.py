"""The client protocols other than /v1 (README "Interop"): one module per protocol, each with its
request parsing, response building, error renderer (its own status table and body) and OpenAPI
entries. All of them go through the ingress's one admission path (Ingress.infer: keys, rate
limits, in-flight cap, body and text limits) and the same coalescer and graph as /v1/classify.

A protocol module has `routes(ingress) -> {(method, path): Route}`, `NAMESPACES` (path prefixes
whose unknown paths it answers), `render(ApiError) -> Reply` and `openapi(name) -> (paths, schemas)`.
"""
from app.protocols import hf, kserve, oip, tei

PROTOCOLS = (hf, tei, kserve, oip)
