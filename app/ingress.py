"""HTTP ingress: authenticate and validate at the edge, coalesce concurrent requests, call each
stage once per batch.

Every Serve hop costs milliseconds of CPU, so the graph is called per coalesced batch of requests,
not per request: a Coalescer (app/batching.py) gathers the texts of concurrent requests, the
tokenizer, model and postprocessor each see one call, and results are split back in input order.
A batch gives its slot back once the model is done, before postprocessing. Requests that break a
token rule (`truncate: false`, `max_request_tokens`) are refused right after the tokenizer: the
model never sees them, and the rest of their batch goes on without them.

`/v1/classify` and the interop protocols' routes (app/protocols: Hugging Face, TEI, KServe v1,
Open Inference Protocol v2) share one admission path, `infer`: key and scope, rate limit,
in-flight cap, body and text limits, then the coalescer. Only parsing, response building and the
error shape differ by protocol.
"""

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass, replace

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from ray import serve
from ray.exceptions import RayActorError
from ray.serve import metrics
from ray.serve.exceptions import BackPressureError, RayServeException

from app import errors
from app.attribution import DeadlineExceeded, step_tokens
from app.artifact_source import load_info
from app.batching import Coalescer
from app.config import AppArgs, IngressConfig
from app.errors import (
    EmptyText, Forbidden, NotReady, Overloaded, PayloadTooLarge, RateLimited, Unauthorized, ValidationFailed,
)
from app.http import HotRoutes, Reply, Route, header, json_reply, read_body
from app.protocols import PROTOCOLS
from app.protocols.common import Job, parse_json, validate
from app.keys import KeyStore
from app.limits import TokenBuckets, retry_after
from app.redact import redact
from app.rollout import VersionMismatch
from app.schemas import ClassifyRequest, ClassifyResponse, ErrorBody, ExplainRequest, ExplainResponse, ModelInfo

log = logging.getLogger("ray.serve")
# /docs and /openapi.json are served by routes below, behind the same keys as the API.
api = FastAPI(title="ray-text-classifier", version="1", description=__doc__, docs_url=None, openapi_url=None)
errors.install(api)
ERROR_RESPONSES = {code: {"model": ErrorBody} for code in (400, 401, 403, 413, 422, 429, 503)}
READY_TIMEOUT_S = 5.0
STATS_MAX_CALLS = 64
# A batch that met two versions waits this long before it runs again, doubling up to the maximum:
# the replicas it waits for are loading a model (seconds).
ROLLOUT_PAUSE_S, ROLLOUT_MAX_PAUSE_S = 0.05, 0.5


@dataclass(frozen=True)
class Served:
    """A job's predictions and the one artifact version whose stages made all of them."""
    version: str
    predictions: list[dict]


@serve.deployment  # resources, scaling and queues: serve_config.yaml
@serve.ingress(api)
class Ingress:
    def __init__(self, tokenizer, classifier, postprocessor, explainer, args: dict):
        self.args = AppArgs.read(args, "application args")
        self.info = load_info(self.args.model, self.args.verify_key_file)
        self.tokenizer, self.classifier, self.postprocessor = tokenizer, classifier, postprocessor
        self.explainer = explainer  # its own deployment and handle: never in a classify batch's way
        self.keys = KeyStore(self.args.api_keys_file) if self.args.api_keys_file else None
        if self.keys is None:
            log.warning("api_keys_file is not set: the API is open to anyone who can reach it")
        self.buckets = TokenBuckets(self.args.rate_limit_per_s, self.args.rate_limit_burst)
        # Explanations are ~250 classifies each and make model extraction cheaper: a bucket of
        # their own, at the application's explain rate (a key's own --rate is for classify).
        self.explain_buckets = TokenBuckets(self.args.explain_rate_limit_per_s, self.args.explain_rate_limit_burst)
        self.explain_s = 1.0  # recent seconds per explanation, for Retry-After when the queue is full
        # A request of at most this many texts cannot pass max_request_tokens (no text keeps more
        # than max_length tokens), so its tokens are neither summed nor need it travel whole.
        self.cap_safe_texts = self.args.max_request_tokens // self.info.max_length
        if self.cap_safe_texts >= self.args.max_items:
            log.warning("max_request_tokens (%d) can never fire: max_items (%d) x max_length (%d) cannot exceed it",
                        self.args.max_request_tokens, self.args.max_items, self.info.max_length)
        self.in_flight = 0
        self.stats = {"requests": 0, "batches": 0, "texts": 0, "retries": 0, "version_retries": 0}
        self.requests = metrics.Counter("classifier_requests", "Classify requests by status", tag_keys=("status",))
        self.coalesced = metrics.Histogram("classifier_coalesced_requests", "Requests per graph call",
                                           boundaries=[1, 2, 4, 8, 16, 32, 64, 128])
        queue_wait = metrics.Histogram("classifier_queue_wait_ms", "Time a request waits for its graph call (ms)",
                                       boundaries=[0.1, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000])
        config = IngressConfig()
        self.coalescer = Coalescer(self._classify_batch, lambda job: len(job.texts), config.max_batch_texts,
                                   config.batch_wait_timeout_s, config.max_concurrent_batches,
                                   observe_wait=lambda s: queue_wait.observe(s * 1000), early_release=True)
        self._apply(config)

    def reconfigure(self, user_config: dict) -> None:
        self._apply(IngressConfig.read(user_config, "Ingress user_config"))

    def _apply(self, config: IngressConfig) -> None:
        self.config = config
        self.coalescer.configure(config.max_batch_texts, config.batch_wait_timeout_s, config.max_concurrent_batches)

    # ----- protection -----
    def _authorize(self, authorization: str | None, scope: str) -> None:
        if self.keys is None:
            return
        scheme, _, presented = (authorization or "").partition(" ")
        key = self.keys.lookup(presented.strip()) if scheme.lower() == "bearer" and presented else None
        if key is None:  # one message for absent, unknown and revoked keys
            raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
        if scope not in key.scopes:
            raise Forbidden(f"this key lacks the {scope!r} scope")
        wait = self.explain_buckets.take(key.name) if scope == "explain" else self.buckets.take(key.name, key.rate, key.burst)
        if wait:
            raise RateLimited("rate limit exceeded for this key", retry_after(wait))

    # ----- the graph, once per coalesced batch -----
    def _refusal(self, job: Job, enc: dict, start: int, stop: int) -> errors.ApiError | None:
        """Why job (rows start:stop of the batch's encoding) may not reach the model, or None."""
        if not job.truncate:
            over = np.flatnonzero(enc["truncated"][start:stop])
            if len(over):
                i = int(over[0])  # the request's own index: a truncate=false request is never split
                return ValidationFailed(
                    f"texts[{i}] has {int(enc['full_lengths'][start + i])} tokens; the model takes at most "
                    f"{self.info.max_length} (send truncate=true to truncate)")
        if len(job.texts) > self.cap_safe_texts:
            tokens = int(enc["lengths"][start:stop].sum())
            if tokens > self.args.max_request_tokens:
                return PayloadTooLarge(
                    f"the texts hold {tokens} tokens; a request may hold at most {self.args.max_request_tokens}")
        return None

    async def _graph(self, jobs: list[Job], slot) -> list:
        enc = await self.tokenizer.encode.remote([t for job in jobs for t in job.texts])
        version = enc["version"]  # the later stages must serve it too (app/rollout.py)
        bounds = np.cumsum([0] + [len(job.texts) for job in jobs]).tolist()
        refused = [self._refusal(job, enc, a, b) for job, a, b in zip(jobs, bounds, bounds[1:])]
        ids, lengths = enc["ids"], enc["lengths"]
        if any(r is not None for r in refused):  # drop the refused requests' rows; the rest go on
            keep = np.repeat([r is None for r in refused], [len(job.texts) for job in jobs])
            ids, lengths = ids[np.repeat(keep, lengths)], lengths[keep]
        preds = []
        if len(lengths):
            # The logits (texts x labels floats) come back here so the batch's slot frees as soon
            # as the model is done: the next batch is tokenized while this one is postprocessed,
            # and the classifier replicas do not idle through the postprocessor hop.
            logits = await self.classifier.forward.remote({"ids": ids, "lengths": lengths, "version": version})
            slot.release()
            live = [job for job, r in zip(jobs, refused) if r is None]
            top_k = [job.top_k for job in live for _ in job.texts]
            activation = [job.activation for job in live for _ in job.texts]
            preds = await self.postprocessor.run.remote(logits, top_k, version, activation if any(activation) else None)
        slot.release()
        self.stats["batches"] += 1
        self.stats["texts"] += len(lengths)
        self.coalesced.observe(len(jobs))
        truncated, kept = enc["truncated"].tolist(), enc["lengths"].tolist()
        out, next_pred = [], 0
        for job, a, b, refusal in zip(jobs, bounds, bounds[1:], refused):
            if refusal is not None:
                out.append(refusal)
                continue
            out.append(Served(version, [p | {"truncated": truncated[i], "tokens": kept[i]}
                                        for p, i in zip(preds[next_pred: next_pred + b - a], range(a, b), strict=True)]))
            next_pred += b - a
        return out

    async def _classify_batch(self, jobs: list[Job], slot) -> list:
        loop = asyncio.get_running_loop()
        deadline, pause, died = loop.time() + self.config.version_wait_s, ROLLOUT_PAUSE_S, False
        while True:
            try:
                return await self._graph(jobs, slot)
            except VersionMismatch:
                # A rollout is under way and the router mixed old and new replicas: the batch runs
                # again from the tokenizer until one version serves it end to end (app/rollout.py).
                if loop.time() + pause > deadline:
                    raise
                self.stats["version_retries"] += 1
                await asyncio.sleep(pause)  # the new replicas are still starting: do not spin
                pause = min(2 * pause, ROLLOUT_MAX_PAUSE_S)
            except RayActorError as err:
                # Classification is idempotent: one retry lands on a live replica while Serve
                # replaces the dead one, so a replica lost under load costs clients nothing.
                if died:
                    raise
                died = True
                log.warning("a stage replica died (%s); retrying the batch once", type(err).__name__)
                self.stats["retries"] += 1
            # The first try may have freed the slot (the model was done): the retry takes one again.
            await slot.acquire()

    async def _classify(self, job: Job) -> Served:
        # Requests larger than one coalesced batch are split into parts that join the batch queue
        # apart (and may run on different classifier replicas at once). A request that a token
        # rule could refuse (truncate=false; more than cap_safe_texts texts) is not: its verdict
        # needs all its tokens before the model sees any of them, and parts in different batches
        # are tokenized at different times. It travels whole (at most max_items texts; the
        # classifier cuts it into forward passes itself), so every verdict is taken in one place,
        # after one tokenizer call, with no extra call to count tokens first.
        n, size = len(job.texts), self.config.max_batch_texts
        whole = n <= size or not job.truncate or n > self.cap_safe_texts
        parts = [job] if whole else [replace(job, texts=job.texts[i: i + size]) for i in range(0, n, size)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.version_wait_s
        while True:
            try:
                # One part is awaited as it is: a gather would wrap the hot path's call in a task.
                results = [await self.coalescer.submit(job)] if whole else await asyncio.gather(
                    *(self.coalescer.submit(p) for p in parts))
            except BackPressureError:
                raise Overloaded("the model is at capacity; retry shortly") from None
            except VersionMismatch:
                log.warning("no single model version could serve a batch within version_wait_s")
                raise NotReady("the model is being replaced; retry shortly") from None
            except (RayActorError, RayServeException) as err:
                log.warning("downstream stage failed: %s", type(err).__name__)
                raise Overloaded("a model replica is unavailable; retry shortly") from None
            for result in results:
                if isinstance(result, Exception):
                    raise result
            versions = {result.version for result in results}
            if len(versions) == 1:
                return Served(versions.pop(), [p for result in results for p in result.predictions])
            # Parts served by different versions during a rollout: the request must be one version's.
            if loop.time() > deadline:
                raise NotReady("the model is being replaced; retry shortly")
            self.stats["version_retries"] += 1

    def check_count(self, items, field: str) -> None:
        """Refuse more than max_items before a list is validated item by item."""
        if isinstance(items, list) and len(items) > self.args.max_items:
            raise PayloadTooLarge(f"`{field}` may hold at most {self.args.max_items} items; got {len(items)}")

    def _check_texts(self, job: Job) -> None:
        self.check_count(job.texts, job.field.partition("[")[0])
        for i, text in enumerate(job.texts):
            field = job.field.format(i)
            if not text.strip():
                raise EmptyText(f"{field} is empty")
            if len(text) > self.args.max_text_chars:
                raise PayloadTooLarge(f"{field} may hold at most {self.args.max_text_chars} characters; got {len(text)}")
            if "\x00" in text:
                raise ValidationFailed(f"{field} holds a NUL character")

    def _parse(self, body: bytes) -> tuple[Job, None]:
        data = parse_json(body)
        if isinstance(data, dict):
            self.check_count(data.get("texts"), "texts")
        parsed = validate(ClassifyRequest, data)
        return Job(parsed.items, parsed.top_k, parsed.truncate, field="text" if parsed.text is not None else "texts[{}]"), None

    # ----- the one admission path of every inference route, whatever its protocol -----
    def authorize(self, scope: dict, name: str) -> None:
        self._authorize(header(scope, b"authorization"), name)

    async def infer(self, scope: dict, receive, parse) -> tuple[object, Served]:
        """Key and scope, rate limit, in-flight cap, body limit, then parse(body) -> (Job, context)
        and the text limits, before anything is queued; returns (context, what served the job)."""
        self.stats["requests"] += 1
        try:
            self.authorize(scope, "classify")
            if self.in_flight >= self.args.max_in_flight:
                raise Overloaded(f"this replica holds {self.in_flight} requests; retry shortly")
            self.in_flight += 1
            try:
                job, context = parse(await read_body(scope, receive, self.args.max_body_bytes))
                self._check_texts(job)
                if self.args.request_log_sample_rate and random.random() < self.args.request_log_sample_rate:
                    log.info("sampled request (masked): %s", [redact(t[:500]) for t in job.texts])
                served = await self._classify(job)
            finally:
                self.in_flight -= 1
        except errors.ApiError as err:
            self.requests.inc(tags={"status": str(err.status)})
            raise
        self.requests.inc(tags={"status": "200"})
        return context, served

    async def ready(self) -> None:
        """Raise NotReady unless every stage of the graph answers."""
        stages = (self.tokenizer, self.classifier, self.postprocessor)
        try:
            await asyncio.wait_for(asyncio.gather(*(s.ping.remote() for s in stages)), READY_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - any failure means not ready
            raise NotReady("a stage of the graph is not ready") from None

    # ----- routes -----
    def __serve_build_asgi_app__(self):
        # Serve calls this after __init__ and serves what it returns. POST /v1/classify, the route
        # that carries traffic, skips FastAPI's layers (see app/http.py); `self.app` is the FastAPI
        # app that @serve.ingress bound to this replica, and it keeps every other route.
        # The interop protocols' routes (app/protocols) are all served here too, each with its
        # own error shape; their paths are concrete, since the model name is known by now.
        routes, namespaces = {("POST", "/v1/classify"): Route(self._classify_http)}, {}
        for protocol in PROTOCOLS:
            routes |= protocol.routes(self)
            namespaces |= dict.fromkeys(protocol.NAMESPACES, protocol.render)
        return HotRoutes(self.app, routes, namespaces)

    async def _classify_http(self, scope: dict, receive) -> Reply:
        _, served = await self.infer(scope, receive, self._parse)
        return json_reply({
            # The version that served this request: during a rollout it may differ from this
            # replica's own (/v1/model), never from the stages' (app/rollout.py).
            "model": {"name": self.args.name, "version": served.version[:16]},
            "predictions": served.predictions,
            "usage": {"tokens": sum(p["tokens"] for p in served.predictions)},
        })

    @api.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        responses=ERROR_RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": ClassifyRequest.model_json_schema()}}}},
    )
    async def classify(self, request: Request) -> Response:
        """Classify one text or several. (Served by __serve_build_asgi_app__'s hot route; declared
        here so the OpenAPI document describes it from the same schemas.)"""
        reply = await self._classify_http(request.scope, request.receive)
        return Response(reply.body, reply.status, media_type=reply.content_type.decode())

    # ----- explanations (app/explainer.py) -----
    async def _explain_job(self, body: ExplainRequest) -> tuple[int | None, int]:
        """(label index or None, steps) once the request passed every limit; nothing is queued at
        the Explainer before this returns."""
        text, args = body.text, self.args
        self._check_texts(Job([text], None, True, field="text"))  # classify's text rules
        if body.target is not None and body.target not in self.info.labels:
            raise ValidationFailed(f"target {body.target!r} is not a label of this model; labels: {self.info.labels}")
        steps = body.steps or args.explain_default_steps
        if steps > args.explain_max_steps:
            raise ValidationFailed(f"steps may be at most {args.explain_max_steps}; got {steps}")
        # The Tokenizer stage counts the tokens, with the classify path's truncation: exact, and no
        # tokenizer copy here. One short call; the explainer re-tokenizes for its word offsets.
        tokens = int((await self.tokenizer.encode.remote([text]))["lengths"][0])
        cost = step_tokens(body.method, steps, tokens)
        if cost > args.explain_max_step_tokens:
            rows = steps if body.method == "integrated_gradients" else tokens
            raise PayloadTooLarge(
                f"{body.method} of {tokens} tokens at {rows} {'steps' if rows == steps else 'rows'} is "
                f"{rows} x {tokens} = {cost} step-tokens; at most {args.explain_max_step_tokens} "
                f"(send fewer steps or a shorter text)")
        target = None if body.target is None else self.info.labels.index(body.target)
        return target, steps

    async def _run_explainer(self, body: ExplainRequest, target: int | None, steps: int) -> dict:
        timeout = self.args.explain_timeout_s
        started = time.monotonic()
        response = self.explainer.explain.remote(body.text, target, body.method, steps, time.time() + timeout)
        try:
            # The Explainer checks the deadline between chunks; the grace covers a lost replica.
            out = await asyncio.wait_for(self._resolve(response), timeout + 5)
        except BackPressureError:
            raise Overloaded("the explainer is at capacity; retry shortly", math.ceil(2 * self.explain_s)) from None
        except (DeadlineExceeded, asyncio.TimeoutError):
            response.cancel()
            raise Overloaded(f"the explanation did not finish within {timeout:g} s; retry later or with fewer steps",
                             math.ceil(self.explain_s)) from None
        except (RayActorError, RayServeException) as err:
            log.warning("the explainer failed: %s", type(err).__name__)
            raise Overloaded("the explainer is unavailable; retry shortly") from None
        self.explain_s = 0.8 * self.explain_s + 0.2 * (time.monotonic() - started)
        return out

    @staticmethod
    async def _resolve(response):
        return await response

    @api.post("/v1/explain", response_model=ExplainResponse, responses=ERROR_RESPONSES)
    async def explain(self, request: Request) -> dict:
        """Which words drove the prediction: per-word attributions for one label (scope `explain`)."""
        self._authorize(request.headers.get("authorization"), "explain")
        raw = await read_body(request.scope, request.receive, self.args.max_body_bytes)
        body = validate(ExplainRequest, parse_json(raw))  # the same 400/422 rules as /v1/classify
        target, steps = await self._explain_job(body)
        out = await self._run_explainer(body, target, steps)
        labels, best = self.info.labels, max(range(len(out["probabilities"])), key=out["probabilities"].__getitem__)
        ig = body.method == "integrated_gradients"
        return {
            "model": {"name": self.args.name, "version": self.info.version[:16]},
            "prediction": {"label": labels[best], "score": out["probabilities"][best]},
            "target": labels[out["target"]], "score": out["score"], "method": body.method,
            "steps": steps if ig else None, "baseline": {"kind": "pad", "score": out["baseline_score"]},
            "attributions": out["attributions"], "completeness": out["completeness"], "truncated": out["truncated"],
            "usage": {"tokens": out["tokens"], "forward_rows": out["rows"], "cpu_ms": out["cpu_ms"]},
        }

    @api.get("/v1/model", response_model=ModelInfo, responses=ERROR_RESPONSES)
    async def model_info(self, request: Request) -> dict:
        self._authorize(request.headers.get("authorization"), "admin")
        return {
            "name": self.args.name, "version": self.info.version[:16], "labels": self.info.labels,
            "multi_label": self.info.multi_label, "max_length": self.info.max_length,
            "base_model": self.info.base_model, "metrics": self.info.metrics,
            "temperature": None if self.info.multi_label else self.info.temperature,
            "thresholds": dict(zip(self.info.labels, self.info.thresholds or [0.5] * len(self.info.labels)))
            if self.info.multi_label else None,
        }

    @api.get("/v1/stats", responses=ERROR_RESPONSES)
    async def stats(self, request: Request) -> dict:
        """Counters of this ingress replica and the classifier replicas: shows how requests coalesce."""
        self._authorize(request.headers.get("authorization"), "admin")
        # Serve has no broadcast: calls are repeated (the router picks between replicas at random
        # when they are idle) until every running replica answered, and the answers are summed.
        running = await asyncio.to_thread(self._running_classifiers)  # serve.status() blocks
        replicas = {}
        for _ in range(STATS_MAX_CALLS):
            reply = await self.classifier.get_stats.remote()
            replicas[reply.pop("replica")] = reply
            if len(replicas) >= running:
                break
        first = next(iter(replicas.values()))
        classifier = {key: sum(r[key] for r in replicas.values()) for key in first if key != "max_batch_size"}
        classifier.update(max_batch_size=max(r["max_batch_size"] for r in replicas.values()), replicas=len(replicas),
                          texts_by_replica=sorted(r["texts"] for r in replicas.values()))
        return {"ingress": dict(self.stats), "classifier": classifier}

    @staticmethod
    def _running_classifiers() -> int:
        app = serve.get_replica_context().app_name
        states = serve.status().applications[app].deployments["Classifier"].replica_states
        return max(1, states.get("RUNNING", 0))

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> dict:
        self._authorize(request.headers.get("authorization"), "classify")
        return self._openapi()

    def _openapi(self) -> dict:
        """FastAPI's document plus the interop protocols' JSON routes (served by the hot routes)."""
        document = dict(api.openapi())
        document["paths"] = dict(document["paths"])
        schemas = dict(document.get("components", {}).get("schemas", {}))
        for protocol in PROTOCOLS:
            paths, models = protocol.openapi(self.args.name)
            document["paths"] |= paths
            schemas |= models
        document["components"] = dict(document.get("components", {}), schemas=schemas)
        return document

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request):
        self._authorize(request.headers.get("authorization"), "classify")
        return get_swagger_ui_html(openapi_url="/openapi.json", title=api.title)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz", responses={503: {"model": ErrorBody}})
    async def readyz(self) -> dict:
        await self.ready()
        return {"status": "ready"}
