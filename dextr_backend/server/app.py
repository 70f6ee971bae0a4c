"""The ML-backend HTTP protocol Label Studio speaks, served by FastAPI: routes only.

With ``REDIS_URL`` set, ``/predict`` goes through the ``dextr-predict`` rq queue to workers that
keep the model loaded (``labelstudio.jobs.predict``); without it, the same
:class:`~dextr_backend.labelstudio.backend.LabelStudioBackend` answers in this process.
Every error is an answer with a clear ``detail`` and the status of ``errors.http_status``.

Cost is bounded per request (see :mod:`..labelstudio.backend`; every limit of :mod:`.requests`
is checked before any work), at most ``DEXTR_MAX_CONCURRENT`` predictions compute at once per
process, taking their slot only once their image is in memory (:mod:`.slots`); in queue mode
the server fetches a request's pictures before it queues it (``ImageFetcher.stage``), so that no
worker waits on a slow host. ``/health`` and ``/metrics`` answer from their own small thread
pool, so they are never queued behind predictions. ``/predict``, ``/setup`` and ``/webhook`` read
``application/json`` only (else 415).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import redis
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from .. import __version__
from ..errors import DextrError, InputError, ServiceTimeout, ServiceUnavailable, http_status
from ..labelstudio import jobs
from ..labelstudio.backend import LabelStudioBackend
from ..labelstudio.images import COMPUTE_SLOT, fetch_rules
from ..labelstudio.protocol import project_id, task_image_url
from ..labelstudio.requests import DEADLINE_KEY, parse_request
from ..labelstudio.setups import SetupStore, check_hostname, connection_for
from ..queue.runs import training_project
from ..redact import redact_text
from ..service.resident import ResidentPredictor
from ..settings import Settings
from ..threads import configure_threads
from .health import health, metrics_text
from .metrics import Metrics
from .requests import UnsupportedMediaType, authorized, check_image_urls, check_url_length, read_json
from .slots import ComputeSlots

log = logging.getLogger(__name__)

STAGED_IMAGES = 4          # pictures of a queued request fetched here first; a worker fetches any more
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
OPEN_ROUTES = ("/", "/health", "/metrics")


def create_app(settings: Settings | None = None, resident: ResidentPredictor | None = None) -> FastAPI:
    """The app for ``settings`` (default: the environment's), serving ``resident`` (default: a new
    resident predictor; in queue mode the API only reads its version, the workers load the model)."""
    settings = settings or Settings.from_env()
    if settings.threads:
        configure_threads(settings.threads)
    app = FastAPI(title="dextr-backend", version=__version__,
                  description="DEXTR extreme-click segmentation as a Label Studio ML backend")
    metrics = Metrics()
    resident = resident or ResidentPredictor(settings)
    queue = backend = None
    if settings.redis_url:
        from ..queue.client import QueueClient

        queue = QueueClient(settings.redis_url)
    else:
        backend = LabelStudioBackend(settings, resident)
    stager = LabelStudioBackend(settings, resident) if queue else None     # its fetchers only: no model
    if settings.label_studio_api_key and not settings.label_studio_url:
        log.warning("LABEL_STUDIO_API_KEY is set but LABEL_STUDIO_URL is not: the key is never used "
                    "(it goes only to the Label Studio that LABEL_STUDIO_URL names)")
    # project -> what Label Studio sent to /setup: in Redis (seen by every server process and
    # worker) when REDIS_URL is set, else in this process only.
    setups = SetupStore(queue.redis if queue else None)
    app.state.settings, app.state.resident, app.state.backend = settings, resident, backend
    app.state.queue, app.state.setups = queue, setups
    health_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dextr-health")
    fetch_rules(settings)                       # this process's image-fetch lanes and minimum rate
    slots = ComputeSlots(settings.max_concurrent)
    # Threads of requests in flight: computing (DEXTR_MAX_CONCURRENT at most), fetching or waiting.
    request_threads = anyio.CapacityLimiter(64)

    async def off_the_request_path(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(health_pool, functools.partial(fn, *args))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        if settings.basic_auth_user and request.url.path not in OPEN_ROUTES and not authorized(request, settings):
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

    @app.get("/")
    @app.get("/health")
    async def health_route():
        body, status = await off_the_request_path(health, resident, queue)
        return JSONResponse(body, status_code=status)

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
                await run_in_threadpool(setups.put, pid, hostname, body.get("access_token"))
        return {"model_version": await run_in_threadpool(lambda: resident.version)}

    @app.post("/predict")
    async def predict(request: Request):
        deadline = time.monotonic() + settings.predict_timeout
        body = await read_json(request, settings)
        tasks, config, _, prompts = parse_request(body, settings)   # 4xx before any queueing
        check_image_urls(tasks, config, settings)
        # Where credentials go is never the body's choice: drop what a caller may have put there.
        body = {k: v for k, v in body.items() if k not in ("hostname", "access_token", DEADLINE_KEY)}
        result = None
        with anyio.move_on_after(settings.predict_timeout):
            if queue is None:
                connection = await run_in_threadpool(connection_for, settings, setups, project_id(body.get("project")))
                result = await anyio.to_thread.run_sync(in_process, body, connection, deadline,
                                                         limiter=request_threads, abandon_on_cancel=True)
            else:
                body[DEADLINE_KEY] = time.time() + settings.predict_timeout
                await anyio.to_thread.run_sync(stage, body, tasks, config, prompts, deadline,
                                               limiter=request_threads, abandon_on_cancel=True)
                result = await anyio.to_thread.run_sync(queue.call, jobs.predict, body, settings.predict_timeout,
                                                         limiter=request_threads, abandon_on_cancel=True)
        if result is None:
            raise ServiceTimeout(f"no answer within {settings.predict_timeout:g} s (DEXTR_PREDICT_TIMEOUT); "
                                 "the backend is busy: retry, add workers, or raise DEXTR_PREDICT_TIMEOUT")
        if queue is not None and "error" in result:
            return JSONResponse({"detail": result["error"]}, status_code=result.get("status", 422))
        # Plain data already: FastAPI's encoder would first copy every region (100 brush masks) once more.
        return JSONResponse(result if queue is None else result["ok"])

    def in_process(body: dict, connection, deadline: float) -> dict:
        """The prediction in this thread, holding a compute slot only while its image is in memory."""
        slot = slots.slot()
        token = COMPUTE_SLOT.set(slot)
        try:
            return backend.predict(body, connection=connection, deadline=deadline)
        finally:
            slot.give_back()
            COMPUTE_SLOT.reset(token)

    def stage(body: dict, tasks: list, config, prompts: list, deadline: float) -> None:
        """Queue mode: the request's first pictures fetched here, left in Redis for its worker."""
        urls = dict.fromkeys(task_image_url(task, config.image_key(p.to_name))
                             for task, wanted in zip(tasks, prompts) for p in wanted if p.ready)
        try:
            fetcher = stager.fetcher(connection_for(settings, setups, project_id(body.get("project"))))
            for url in list(urls)[:STAGED_IMAGES]:
                fetcher.stage(url, deadline, queue.redis, int(settings.predict_timeout) + 60)
        except redis.RedisError:
            pass                         # Redis is away: queue.call says so (or a worker fetches them)

    @app.post("/webhook")
    async def webhook(request: Request):
        body = await read_json(request, settings)
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            raise InputError("webhook body must be a JSON object with an 'action'")
        action = body["action"]
        pid = project_id(body.get("project"))
        if action == "START_TRAINING":
            return JSONResponse(await run_in_threadpool(start_training, body.get("project")), status_code=201)
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
            training = await run_in_threadpool(start_training, pid) if due else {"training": "not yet"}
            return JSONResponse({"status": "ok", "annotations_since_start": count, **training}, status_code=201)
        return JSONResponse({"status": "Unknown event"}, status_code=200)

    def start_training(project) -> dict:
        """The job names the project only; the worker finds the credentials (see labelstudio.jobs)."""
        pid = training_project(project)          # 422: no project, or an id outside 1 .. 2**31 - 1
        if queue is None:
            raise ServiceUnavailable("training runs on the queue: set REDIS_URL and start "
                                     "`dextr-backend worker --queues dextr-train`")
        if connection_for(settings, setups, pid) is None:
            raise InputError(f"no Label Studio for project {pid}: LABEL_STUDIO_URL is not set and Label Studio "
                             "has not called /setup for this project yet")
        return {"status": "ok", "training": queue.request_training(jobs.train_project, pid)}

    @app.get("/versions")
    def versions():
        """Every version, the one served, and those that use corrective clicks (the others ignore
        them, and say so in the log)."""
        known = resident.store.versions()
        return {"versions": [v.name for v in known], "current": resident.version,
                "take_corrections": [v.name for v in known if v.takes_corrections]}

    @app.get("/train/status")
    def train_status():
        if queue is None:
            raise ServiceUnavailable("training status lives in Redis: set REDIS_URL")
        return {"jobs": queue.training_status()}

    @app.get("/metrics")
    async def prometheus():
        text = await off_the_request_path(metrics_text, metrics, resident, queue, backend and backend.cache)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

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
        allowed = sorted({m for r in app.routes if getattr(r, "path", None) == request.url.path
                          for m in (getattr(r, "methods", None) or ())})
        return JSONResponse({"detail": f"{request.method} is not allowed on {request.url.path}"}, status_code=405,
                            headers={"Allow": ", ".join(allowed)})

    return app
