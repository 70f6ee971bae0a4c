"""The ML-backend HTTP protocol Label Studio speaks, served by FastAPI.

With ``REDIS_URL`` set, ``/predict`` goes through the ``dextr-predict`` rq queue to workers that
keep the model loaded; without it, the same job function runs in this process.
Every error is an answer with a clear ``detail``: 400 malformed JSON, 413 body too large, 422 bad
content, 503 Redis down / no worker / no weights, 504 out of time.

Cost is bounded per request (see :mod:`..labelstudio.predict`), at most ``DEXTR_MAX_CONCURRENT``
predictions run at once per process, and ``/health`` and ``/metrics`` answer from their own small
thread pool, so they are never queued behind predictions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from .. import __version__
from ..errors import DextrError, InputError, ServiceTimeout, ServiceUnavailable, WeightsError
from ..labelstudio.predict import DEADLINE_KEY, Segmenter, parse_request
from ..labelstudio.protocol import project_id
from ..labelstudio.setups import SetupStore, check_hostname, connection_for
from ..queue import TRAIN_QUEUE
from ..redact import redact_text
from ..settings import Settings
from ..threads import configure_threads
from .metrics import Metrics

log = logging.getLogger(__name__)

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
OPEN_ROUTES = ("/", "/health", "/metrics")


MAX_JSON_DEPTH = 64       # Label Studio's deepest bodies nest about 8 levels


class MalformedBody(InputError):
    """Not JSON at all (HTTP 400), as opposed to JSON with bad content (422)."""


class BodyTooLarge(InputError):
    """A body over ``DEXTR_MAX_BODY_MB`` (HTTP 413)."""


def status_of(exc: DextrError) -> int:
    if isinstance(exc, MalformedBody):
        return 400
    if isinstance(exc, BodyTooLarge):
        return 413
    if isinstance(exc, ServiceTimeout):
        return 504
    if isinstance(exc, (ServiceUnavailable, WeightsError)):
        return 503
    return 422


def json_depth_within(value, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` containers deep (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def parse_json(raw: bytes):
    """A request body as JSON, or :class:`MalformedBody` saying why not."""
    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    try:
        body = json.loads(raw or b"null", parse_constant=no_constants)
    except RecursionError:
        raise MalformedBody(f"body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise MalformedBody(f"body is not valid JSON: {str(exc)[:200]}") from None
    if not json_depth_within(body, MAX_JSON_DEPTH):
        raise MalformedBody(f"body nests deeper than {MAX_JSON_DEPTH} levels")
    return body


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    if settings.threads:
        configure_threads(settings.threads)
    app = FastAPI(title="dextr-backend", version=__version__,
                  description="DEXTR extreme-click segmentation as a Label Studio ML backend")
    metrics = Metrics()
    segmenter = Segmenter(settings)
    queue = None
    if settings.redis_url:
        from ..queue.client import QueueClient

        queue = QueueClient(settings.redis_url)
    if settings.label_studio_api_key and not settings.label_studio_url:
        log.warning("LABEL_STUDIO_API_KEY is set but LABEL_STUDIO_URL is not: the key is never used "
                    "(it goes only to the Label Studio that LABEL_STUDIO_URL names)")
    setups = SetupStore(queue.redis if queue else None)     # project -> what Label Studio sent to /setup
    app.state.settings, app.state.segmenter, app.state.queue, app.state.setups = settings, segmenter, queue, setups
    # Own threads for /health and /metrics; a bounded number of predictions at once.
    health_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dextr-health")
    predict_slots = anyio.CapacityLimiter(max(1, settings.max_concurrent))
    queue_waits = anyio.CapacityLimiter(64)

    async def off_the_request_path(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(health_pool, functools.partial(fn, *args))

    async def body_of(request: Request):
        limit = settings.max_body_mb * 1024 * 1024
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise BodyTooLarge(f"body of {int(length)} bytes exceeds {settings.max_body_mb} MB (DEXTR_MAX_BODY_MB)")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise BodyTooLarge(f"body exceeds {settings.max_body_mb} MB (DEXTR_MAX_BODY_MB)")
        return parse_json(bytes(raw))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        if settings.basic_auth_user and request.url.path not in OPEN_ROUTES and not _authorized(request, settings):
            response = JSONResponse({"detail": "basic auth required"}, status_code=401,
                                    headers={"WWW-Authenticate": 'Basic realm="dextr-backend"'})
        else:
            try:
                response = await call_next(request)
            except Exception:  # noqa: BLE001 - a bug; log it, answer without internals
                log.exception("request crashed", extra={"path": request.url.path})
                response = JSONResponse({"detail": "internal error; see the server log"}, status_code=500)
        route = request.scope.get("route")
        metrics.observe(getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - started)
        return response

    def health_payload() -> tuple[dict, int]:
        body = {"status": "UP", "model_class": "DEXTR", "version": __version__,
                "mode": "queue" if queue else "in-process"}
        try:
            body["model_version"] = segmenter.model_version
            segmenter.check_weights()
        except WeightsError as exc:
            return {**body, "status": "DOWN", "reason": redact_text(str(exc))}, 503
        if queue:
            try:
                queue.ping()
                workers = queue.workers()
                body["workers"] = len(workers)
                body["queue_depth"] = queue.depth()
                body["train_workers"] = len(queue.workers(TRAIN_QUEUE))
                if not workers:
                    return {**body, "status": "DOWN", "reason": "no worker is serving the dextr-predict queue"}, 503
            except ServiceUnavailable as exc:
                return {**body, "status": "DOWN", "reason": redact_text(str(exc))}, 503
        return body, 200

    @app.get("/")
    @app.get("/health")
    async def health():
        body, status = await off_the_request_path(health_payload)
        return JSONResponse(body, status_code=status)

    @app.post("/setup")
    async def setup(request: Request):
        body = await body_of(request)
        if not isinstance(body, dict):
            raise InputError("setup body must be a JSON object")
        pid = project_id(body.get("project"))
        if pid is None:
            raise InputError("setup body needs the 'project' Label Studio sends (e.g. \"3.1700000000\")")
        hostname = body.get("hostname")
        if hostname:
            check_hostname(hostname)
        if hostname:
            if settings.label_studio_url:
                log.info("/setup hostname not used: LABEL_STUDIO_URL is set", extra={"project": pid})
            else:
                await run_in_threadpool(setups.put, pid, hostname, body.get("access_token"))
        return {"model_version": await run_in_threadpool(lambda: segmenter.model_version)}

    @app.post("/predict")
    async def predict(request: Request):
        deadline = time.monotonic() + settings.predict_timeout
        body = await body_of(request)
        parse_request(body, settings)            # 4xx before any queueing
        # Where credentials go is never the body's choice: drop what a caller may have put there.
        body = {k: v for k, v in body.items() if k not in ("hostname", "access_token", DEADLINE_KEY)}
        result = None
        with anyio.move_on_after(settings.predict_timeout):
            if queue is None:
                connection = await run_in_threadpool(connection_for, settings, setups, project_id(body.get("project")))
                result = await anyio.to_thread.run_sync(
                    functools.partial(segmenter.predict, body, connection=connection, deadline=deadline),
                    limiter=predict_slots, abandon_on_cancel=True)
            else:
                body[DEADLINE_KEY] = time.time() + settings.predict_timeout
                result = await anyio.to_thread.run_sync(queue.predict, body, settings.predict_timeout,
                                                         limiter=queue_waits, abandon_on_cancel=True)
        if result is None:
            raise ServiceTimeout(f"no answer within {settings.predict_timeout:g} s (DEXTR_PREDICT_TIMEOUT); "
                                 "the backend is busy: retry, add workers, or raise DEXTR_PREDICT_TIMEOUT")
        if queue is None:
            return result
        if "error" in result:
            return JSONResponse({"detail": result["error"]}, status_code=result.get("status", 422))
        return result["ok"]

    @app.post("/webhook")
    async def webhook(request: Request):
        body = await body_of(request)
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            raise InputError("webhook body must be a JSON object with an 'action'")
        action = body["action"]
        pid = project_id(body.get("project"))
        if action == "START_TRAINING":
            return JSONResponse(await run_in_threadpool(enqueue_training, body.get("project")), status_code=201)
        if action in TRAIN_EVENTS:
            for key in ("annotation", "task"):
                if body.get(key) is not None and not isinstance(body[key], dict):
                    raise InputError(f"webhook {action}: '{key}' must be an object")
            if not settings.train_every:
                return JSONResponse({"status": "ok", "training": "off (DEXTR_TRAIN_EVERY=0)"}, status_code=201)
            if queue is None or pid is None:
                return JSONResponse({"status": "ok", "training": "needs REDIS_URL and a project"}, status_code=201)
            count = await run_in_threadpool(queue.count_annotation, pid)
            due = count % settings.train_every == 0
            training = await run_in_threadpool(enqueue_training, pid) if due else {"training": "not yet"}
            return JSONResponse({"status": "ok", "annotations_since_start": count, **training}, status_code=201)
        return JSONResponse({"status": "Unknown event"}, status_code=200)

    def enqueue_training(project) -> dict:
        """The job names the project only; the worker finds the credentials (see queue.jobs)."""
        from ..queue.training import training_project

        pid = training_project(project)          # 422: no project, or an id outside 1 .. 2**31 - 1
        if queue is None:
            raise ServiceUnavailable("training runs on the queue: set REDIS_URL and start "
                                     "`dextr-backend worker --queues dextr-train`")
        if connection_for(settings, setups, pid) is None:
            raise InputError(f"no Label Studio for project {pid}: LABEL_STUDIO_URL is not set and Label Studio "
                             "has not called /setup for this project yet")
        return {"status": "ok", "training": queue.enqueue_training(pid)}

    @app.get("/versions")
    def versions():
        return {"versions": [v.name for v in segmenter.store.versions()],
                "current": segmenter.model_version}

    @app.get("/train/status")
    def train_status():
        if queue is None:
            raise ServiceUnavailable("training status lives in Redis: set REDIS_URL")
        return {"jobs": queue.training_status()}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(await off_the_request_path(render_metrics),
                                 media_type="text/plain; version=0.0.4")

    def render_metrics() -> str:
        gauges = {}
        try:
            gauges["dextr_model_info"] = ("Weights version served.", 1, {"version": segmenter.model_version})
        except WeightsError:
            pass
        if queue:
            try:
                gauges["dextr_queue_depth"] = ("Jobs waiting in dextr-predict.", queue.depth(), {})
                gauges["dextr_workers"] = ("Workers with a fresh heartbeat.", len(queue.workers()), {})
            except ServiceUnavailable:
                gauges["dextr_redis_up"] = ("Redis reachable.", 0, {})
        gauges["dextr_image_cache_items"] = ("Decoded images cached in this process.", len(segmenter.cache), {})
        return metrics.render(gauges)

    @app.exception_handler(DextrError)
    async def refused(request: Request, exc: DextrError):
        status = status_of(exc)
        detail = redact_text(str(exc), (settings.label_studio_api_key, settings.basic_auth_pass))
        log.info("request refused", extra={"path": request.url.path, "status": status, "detail": detail})
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return JSONResponse({"detail": f"no route {request.method} {request.url.path}"}, status_code=404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc):
        allowed = sorted({m for r in app.routes if getattr(r, "path", None) == request.url.path
                          for m in (getattr(r, "methods", None) or ())})
        return JSONResponse({"detail": f"{request.method} is not allowed on {request.url.path}"}, status_code=405,
                            headers={"Allow": ", ".join(allowed)})

    return app


def _authorized(request: Request, settings: Settings) -> bool:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return (secrets.compare_digest(user, settings.basic_auth_user or "")
            and secrets.compare_digest(password, settings.basic_auth_pass or ""))
