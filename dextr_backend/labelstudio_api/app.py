"""The ML-backend HTTP protocol Label Studio speaks, served by FastAPI: routes only.

The masks come from a segmenter (:mod:`.segmenters`): this process, or with ``REDIS_URL`` set the
workers of the ``dextr-predict`` queue, which keep the model loaded; training requests go to
:mod:`.training`. Both are chosen once, here, so no route branches on the mode, and every error
is answered the same way: a clear ``detail``, the status of ``errors.http_status``, redacted and
logged (a worker's error too).

Cost is bounded per request: every limit of :mod:`.requests` is checked before any work, and the
segmenters bound what computes at once (in-process: ``DEXTR_MAX_CONCURRENT`` slots taken once the
image is in memory; queue mode: the workers, with the pictures fetched here first). ``/health``
and ``/metrics`` answer from their own small thread pool, so they are never queued behind
predictions. ``/predict``, ``/setup`` and ``/webhook`` read ``application/json`` only (else 415).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from .. import __version__
from ..errors import DextrError, InputError, ServiceTimeout, http_status
from ..labelstudio.images import fetch_rules
from ..labelstudio.predictions import answer, segment_and_answer
from ..labelstudio.protocol import project_id
from ..labelstudio.requests import first_picture, parse_request, work
from ..labelstudio.setups import check_hostname
from ..redact import redact_text
from ..service.resident import ResidentPredictor
from ..settings import Settings
from ..threads import configure_threads
from .health import health, metrics_text
from .metrics import Metrics
from .requests import UnsupportedMediaType, authorized, check_image_urls, check_url_length, read_json
from .segmenters import make_segmenter
from .training import make_training

log = logging.getLogger(__name__)

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
OPEN_ROUTES = ("/", "/health", "/metrics")


def create_app(settings: Settings | None = None, resident: ResidentPredictor | None = None) -> FastAPI:
    """The app for ``settings`` (default: the environment's), serving ``resident`` (default: a new
    resident predictor; in queue mode the API only reads its version, the workers load the model)."""
    settings = settings or Settings.from_env()
    if settings.threads:
        configure_threads(settings.threads)
    if settings.label_studio_api_key and not settings.label_studio_url:
        log.warning(
            "LABEL_STUDIO_API_KEY is set but LABEL_STUDIO_URL is not: the key is never used "
            "(it goes only to the Label Studio that LABEL_STUDIO_URL names)"
        )
    app = FastAPI(
        title="dextr-backend",
        version=__version__,
        description="DEXTR extreme-click segmentation as a Label Studio ML backend",
    )
    resident = resident or ResidentPredictor(settings)
    segmenter = make_segmenter(settings, resident)
    training = make_training(settings, segmenter)
    fetch_rules(settings)  # this process's image-fetch lanes and minimum rate
    app.state.settings, app.state.resident, app.state.segmenter = settings, resident, segmenter
    metrics = Metrics()
    _guard_and_errors(app, settings, metrics)
    _status_routes(app, resident, segmenter, metrics)
    _prediction_routes(app, settings, resident, segmenter)
    _training_routes(app, settings, training)
    return app


def _guard_and_errors(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Basic auth, request metrics, and the one error path: every error a ``detail`` with its
    status, redacted of this process's secrets and logged; a bug a bare 500."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        if settings.basic_auth_user and request.url.path not in OPEN_ROUTES and not authorized(request, settings):
            response = JSONResponse(
                {"detail": "basic auth required"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="dextr-backend"'},
            )
        else:
            try:
                response = await call_next(request)
            except Exception:  # noqa: BLE001 - a bug; log it, answer without internals
                log.exception("request crashed", extra={"path": request.url.path})
                response = JSONResponse({"detail": "internal error; see the server log"}, status_code=500)
        route = request.scope.get("route")
        metrics.observe(getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - started)
        return response

    @app.exception_handler(DextrError)
    async def refused(request: Request, exc: DextrError):
        status = 415 if isinstance(exc, UnsupportedMediaType) else http_status(exc)
        detail = redact_text(str(exc), (settings.label_studio_api_key, settings.basic_auth_pass))
        log.info("request refused", extra={"path": request.url.path, "status": status, "detail": detail})
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return JSONResponse({"detail": f"no route {request.method} {request.url.path}"}, status_code=404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc):
        allowed = sorted(
            {
                m
                for r in app.routes
                if getattr(r, "path", None) == request.url.path
                for m in (getattr(r, "methods", None) or ())
            }
        )
        return JSONResponse(
            {"detail": f"{request.method} is not allowed on {request.url.path}"},
            status_code=405,
            headers={"Allow": ", ".join(allowed)},
        )


def _status_routes(app: FastAPI, resident: ResidentPredictor, segmenter, metrics: Metrics) -> None:
    """``/health``, ``/metrics`` (from their own threads) and ``/versions``."""
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dextr-health")

    async def off_the_request_path(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))

    @app.get("/")
    @app.get("/health")
    async def health_route():
        body, status = await off_the_request_path(health, resident, segmenter)
        return JSONResponse(body, status_code=status)

    @app.get("/metrics")
    async def prometheus():
        text = await off_the_request_path(metrics_text, metrics, resident, segmenter)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/versions")
    def versions():
        """Every version, the one served, and those that use corrective clicks (the others ignore
        them, and say so in the log)."""
        known = resident.store.versions()
        return {
            "versions": [v.name for v in known],
            "current": resident.version,
            "take_corrections": [v.name for v in known if v.takes_corrections],
        }


def _prediction_routes(app: FastAPI, settings: Settings, resident: ResidentPredictor, segmenter) -> None:
    """``/setup`` (where a project's Label Studio is) and ``/predict``."""
    # Threads of requests in flight: computing (DEXTR_MAX_CONCURRENT at most), fetching or waiting.
    request_threads = anyio.CapacityLimiter(64)

    @app.post("/setup")
    async def setup(request: Request):
        body = await read_json(request, settings)
        if not isinstance(body, dict):
            raise InputError("setup body must be a JSON object")
        pid = project_id(body.get("project"))
        if pid is None:
            raise InputError("setup body needs the 'project' Label Studio sends (e.g. \"3.1700000000\")")
        hostname = body.get("hostname")
        check_url_length("hostname", hostname, settings)
        if hostname:
            check_hostname(hostname)
            if settings.label_studio_url:
                log.info("/setup hostname not used: LABEL_STUDIO_URL is set", extra={"project": pid})
            else:
                await run_in_threadpool(segmenter.setups.put, pid, hostname, body.get("access_token"))
        return {"model_version": await run_in_threadpool(lambda: resident.version)}

    @app.post("/predict")
    async def predict(request: Request):
        deadline = time.monotonic() + settings.predict_timeout
        body = await read_json(request, settings)
        parsed = parse_request(body, settings)  # 4xx before any work or queueing
        check_image_urls(parsed.tasks, parsed.config, settings)
        todo = work(parsed)
        if not todo:  # a task opening (or too few clicks yet): nothing to segment
            if settings.prefetch and (opened := first_picture(parsed)) is not None:
                segmenter.prefetch(opened)  # in the background: the first click finds it fetched
            version = await run_in_threadpool(lambda: resident.version)
            return JSONResponse(answer(parsed, [], version, [], settings.output))
        result = None
        with anyio.move_on_after(settings.predict_timeout):
            result = await anyio.to_thread.run_sync(
                segment_and_answer, parsed, todo, segmenter, deadline, settings.output,
                limiter=request_threads, abandon_on_cancel=True,
            )  # fmt: skip
        if result is None:
            raise ServiceTimeout(
                f"no answer within {settings.predict_timeout:g} s (DEXTR_PREDICT_TIMEOUT); "
                "the backend is busy: retry, add workers, or raise DEXTR_PREDICT_TIMEOUT"
            )
        # Plain data already: FastAPI's encoder would first copy every region (100 brush masks) once more.
        return JSONResponse(result)


def _training_routes(app: FastAPI, settings: Settings, training) -> None:
    """``/webhook`` (*Start Training* and the annotations ``DEXTR_TRAIN_EVERY`` counts) and ``/train/status``."""

    @app.post("/webhook")
    async def webhook(request: Request):
        body = await read_json(request, settings)
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            raise InputError("webhook body must be a JSON object with an 'action'")
        action = body["action"]
        if action == "START_TRAINING":
            return JSONResponse(await run_in_threadpool(training.start, body.get("project")), status_code=201)
        if action not in TRAIN_EVENTS:
            return JSONResponse({"status": "Unknown event"}, status_code=200)
        for key in ("annotation", "task"):
            if body.get(key) is not None and not isinstance(body[key], dict):
                raise InputError(f"webhook {action}: '{key}' must be an object")
        pid = project_id(body.get("project"))
        if not settings.train_every:
            answer = {"training": "off (DEXTR_TRAIN_EVERY=0)"}
        elif pid is None:
            answer = {"training": "needs REDIS_URL and a project"}
        else:
            answer = await run_in_threadpool(training.annotated, pid)
        return JSONResponse({"status": "ok", **answer}, status_code=201)

    @app.get("/train/status")
    def train_status():
        return training.status()
