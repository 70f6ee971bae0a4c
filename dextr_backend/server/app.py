"""The ML-backend HTTP protocol Label Studio speaks, served by FastAPI.

With ``REDIS_URL`` set, ``/predict`` goes through the ``dextr-predict`` rq queue to workers that
keep the model loaded; without it, the same job function runs in this process.
Every error is an answer with a clear ``detail``: 400 malformed JSON, 422 bad content,
503 Redis down / no worker / no weights, 504 worker timeout.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import time

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from .. import __version__
from ..errors import DextrError, InputError, ServiceTimeout, ServiceUnavailable, WeightsError
from ..labelstudio.predict import Segmenter, parse_request
from ..queue import TRAIN_QUEUE
from ..settings import Settings
from .metrics import Metrics

log = logging.getLogger(__name__)

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
OPEN_ROUTES = ("/", "/health", "/metrics")


class MalformedBody(InputError):
    """Not JSON at all (HTTP 400), as opposed to JSON with bad content (422)."""


def status_of(exc: DextrError) -> int:
    if isinstance(exc, ServiceTimeout):
        return 504
    if isinstance(exc, (ServiceUnavailable, WeightsError)):
        return 503
    return 422


def project_id(value) -> int | None:
    """``"3.1700000000"`` (LS's ``<id>.<created>``), ``3`` or ``{"id": 3}`` -> 3."""
    if isinstance(value, dict):
        value = value.get("id")
    try:
        return int(str(value).split(".", 1)[0])
    except (TypeError, ValueError):
        return None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    app = FastAPI(title="dextr-backend", version=__version__,
                  description="DEXTR extreme-click segmentation as a Label Studio ML backend")
    metrics = Metrics()
    segmenter = Segmenter(settings)
    queue = None
    if settings.redis_url:
        from ..queue.client import QueueClient

        queue = QueueClient(settings.redis_url)
    setups: dict[int, dict] = {}          # project -> hostname and token sent by /setup
    app.state.settings, app.state.segmenter, app.state.queue = settings, segmenter, queue

    async def body_of(request: Request):
        raw = await request.body()
        try:
            return json.loads(raw or b"null")
        except ValueError as exc:
            raise MalformedBody(f"body is not valid JSON: {exc}") from None

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
        except WeightsError as exc:
            return {**body, "status": "DOWN", "reason": str(exc)}, 503
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
                return {**body, "status": "DOWN", "reason": str(exc)}, 503
        return body, 200

    @app.get("/")
    @app.get("/health")
    def health():
        body, status = health_payload()
        return JSONResponse(body, status_code=status)

    @app.post("/setup")
    async def setup(request: Request):
        body = await body_of(request)
        if not isinstance(body, dict):
            raise InputError("setup body must be a JSON object")
        pid = project_id(body.get("project"))
        if pid is not None and (body.get("hostname") or body.get("access_token")):
            setups[pid] = {"hostname": body.get("hostname"), "access_token": body.get("access_token")}
        return {"model_version": segmenter.model_version}

    @app.post("/predict")
    async def predict(request: Request):
        body = await body_of(request)
        parse_request(body)                      # 4xx before any queueing
        pid = project_id(body.get("project"))
        body = {**body, **setups.get(pid, {})} if pid in setups else body
        if queue is None:
            return await run_in_threadpool(segmenter.predict, body)
        payload = await run_in_threadpool(queue.predict, body, settings.predict_timeout)
        if "error" in payload:
            return JSONResponse({"detail": payload["error"]}, status_code=payload.get("status", 422))
        return payload["ok"]

    @app.post("/webhook")
    async def webhook(request: Request):
        body = await body_of(request)
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            raise InputError("webhook body must be a JSON object with an 'action'")
        action = body["action"]
        pid = project_id(body.get("project"))
        if action == "START_TRAINING":
            return JSONResponse(enqueue_training(pid), status_code=201)
        if action in TRAIN_EVENTS:
            if not settings.train_every:
                return JSONResponse({"status": "ok", "training": "off (DEXTR_TRAIN_EVERY=0)"}, status_code=201)
            if queue is None or pid is None:
                return JSONResponse({"status": "ok", "training": "needs REDIS_URL and a project"}, status_code=201)
            count = await run_in_threadpool(queue.count_annotation, pid)
            due = count % settings.train_every == 0
            return JSONResponse({"status": "ok", "annotations_since_start": count,
                                 **(enqueue_training(pid) if due else {"training": "not yet"})}, status_code=201)
        return JSONResponse({"status": "Unknown event"}, status_code=200)

    def enqueue_training(pid: int | None) -> dict:
        if pid is None:
            raise InputError("the webhook names no project")
        if queue is None:
            raise ServiceUnavailable("training runs on the queue: set REDIS_URL and start "
                                     "`dextr-backend worker --queues dextr-train`")
        ls = setups.get(pid, {})
        url = settings.label_studio_url or ls.get("hostname")
        if not url:
            raise InputError("LABEL_STUDIO_URL is not set and Label Studio has not called /setup yet")
        key = settings.label_studio_api_key or ls.get("access_token")
        return {"status": "ok", "training": queue.enqueue_training(pid, url, key)}

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
    def prometheus():
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
        return PlainTextResponse(metrics.render(gauges), media_type="text/plain; version=0.0.4")

    @app.exception_handler(DextrError)
    async def refused(request: Request, exc: DextrError):
        status = 400 if isinstance(exc, MalformedBody) else status_of(exc)
        log.info("request refused", extra={"path": request.url.path, "status": status, "detail": str(exc)})
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return JSONResponse({"detail": f"no route {request.method} {request.url.path}"}, status_code=404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc):
        return JSONResponse({"detail": f"{request.method} is not allowed on {request.url.path}"}, status_code=405)

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
