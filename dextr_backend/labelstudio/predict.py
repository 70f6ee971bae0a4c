"""A Label Studio ``/predict`` request answered with masks: the one function both the in-process
server and the rq workers run.

A :class:`Segmenter` keeps the network and the image cache resident for the life of a process
and takes up a newly promoted weights version between requests, without a restart.

Every request has a bounded cost: at most ``DEXTR_MAX_TASKS`` tasks, ``DEXTR_MAX_OBJECTS`` objects
per task and ``DEXTR_MAX_POINTS`` clicks per object; objects go through the network in batches
whose results become Label Studio regions at once (memory stays flat with their number); and the
whole request, image fetches included, ends by its deadline (``DEXTR_PREDICT_TIMEOUT``).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from ..errors import InputError, ServiceTimeout
from ..predictor import DextrPredictor
from ..settings import Settings
from ..weights.store import WeightsStore
from .client import LabelStudioClient
from .images import ImageCache, ImageFetcher
from .protocol import (LabelConfig, Prompt, brush_result, polygon_results, project_id, prompts_from_results,
                       task_image_url)
from .regions import newest_first
from .setups import Connection, SetupStore, connection_for

# The key under which the API hands a queued request its deadline (seconds since the epoch): the
# worker's clock is not the API's monotonic clock, and the body carries no other private field.
DEADLINE_KEY = "dextr_deadline"

log = logging.getLogger(__name__)


class Segmenter:
    def __init__(self, settings: Settings, store: WeightsStore | None = None):
        self.settings = settings
        self.store = store or WeightsStore()
        self.cache = ImageCache(settings.image_cache_mb * 1024 * 1024)
        self._predictor: DextrPredictor | None = None
        self._lock = threading.Lock()
        self._clients: dict[Connection, LabelStudioClient] = {}

    # ---------------------------------------------------------------- model
    def wanted_version(self) -> str:
        return self.settings.weights or self.store.current().name

    def predictor(self) -> DextrPredictor:
        """The resident predictor, reloaded only when the wanted version changed."""
        wanted = self.wanted_version()
        with self._lock:
            if self._predictor is None or self._predictor.version != wanted:
                log.info("loading weights", extra={"version": wanted,
                                                   "previous": self._predictor and self._predictor.version})
                self._predictor = DextrPredictor.from_weights(wanted, device=self.settings.device, store=self.store)
            return self._predictor

    @property
    def model_version(self) -> str:
        return self.wanted_version()

    def check_weights(self) -> None:
        """Raise :class:`WeightsError` when the wanted version's file is missing or corrupt."""
        self.store.check(self.wanted_version())

    # ---------------------------------------------------------------- images
    def fetcher(self, connection: Connection | None = None) -> ImageFetcher:
        """Images of a request: from ``connection`` (its origin, with its token) or allowed hosts."""
        client = None
        if connection is not None:
            with self._lock:
                client = self._clients.get(connection)
                if client is None:
                    client = self._clients[connection] = LabelStudioClient(
                        connection.url, connection.api_key, allowed_hosts=self.settings.allowed_hosts,
                        fetch_timeout=self.settings.fetch_timeout)
        return ImageFetcher(client, self.settings.allowed_hosts, self.cache,
                            max_bytes=self.settings.max_image_mb * 1024 * 1024, timeout=self.settings.fetch_timeout)

    # ---------------------------------------------------------------- predict
    def predict(self, request: dict, *, connection: Connection | None = None, deadline: float | None = None) -> dict:
        """Answer a /predict body. ``connection`` says which Label Studio relative image URLs come
        from (see :mod:`.setups`; never taken from the body); ``deadline`` is a ``time.monotonic()``
        instant after which the request ends with :class:`ServiceTimeout` (HTTP 504)."""
        if deadline is None:
            deadline = time.monotonic() + self.settings.predict_timeout
        tasks, config, context, prompts_per_task = parse_request(request, self.settings)
        fetcher = self.fetcher(connection)
        predictor = self.predictor()
        results = []
        for task, prompts in zip(tasks, prompts_per_task):
            results.append(self._task_result(task, config, prompts, predictor, fetcher, deadline))
        return {"results": results, "model_version": predictor.version}

    def _check_time(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise ServiceTimeout(f"the request took longer than {self.settings.predict_timeout:g} s "
                                 "(DEXTR_PREDICT_TIMEOUT); send fewer tasks or objects at once, or raise it")

    def _task_result(self, task: dict, config: LabelConfig, prompts: list[Prompt], predictor: DextrPredictor,
                     fetcher: ImageFetcher, deadline: float) -> dict | list:
        """One prediction for ``task`` (a dict), or none (``[]``) when there is nothing to segment.

        Label Studio reads each item of ``results`` as one prediction or a list of them. ``[]``
        stores nothing when a task opens (an empty prediction of this model version would make
        *Retrieve predictions* skip the task for good), and the labeling page keeps its keypoints
        with Auto-Accept Suggestions on (accepting an empty result deletes them)."""
        ready = [p for p in prompts if p.ready]
        if any(p.negatives for p in prompts):
            log.info("negative clicks ignored: DEXTR uses extreme points only",
                     extra={"task": task.get("id"), "negatives": sum(len(p.negatives) for p in prompts)})
        if not ready:
            return []
        result, scores = [], []
        batch = max(1, predictor.batch_size)
        for start in range(0, len(ready), batch):
            self._check_time(deadline)
            items, owners = [], []
            for p in ready[start:start + batch]:
                image = fetcher.get(task_image_url(task, config.image_key(p.to_name)), deadline=deadline)
                points = p.extreme_points()
                h, w = image.shape[:2]
                if (w, h) != (p.width, p.height):     # LS measured another size (e.g. EXIF rotation)
                    points = points * [w / p.width, h / p.height]
                    points = np.minimum(points, [w - 1, h - 1])
                    p = Prompt(p.to_name, p.label, w, h, p.points, p.negatives, p.box)
                items.append((image, points))
                owners.append(p)
            self._check_time(deadline)
            for p, pred in zip(owners, predictor.predict_batch(items)):
                result.extend(self._regions(config, p, pred.mask, pred.score))
                scores.append(pred.score)
        score = float(np.mean(scores)) if scores else 0.0
        return {"result": result, "score": round(score, 4), "model_version": predictor.version}

    def _regions(self, config: LabelConfig, p: Prompt, mask: np.ndarray, score: float) -> list[dict]:
        brush = config.output("BrushLabels", p.to_name, p.label)
        polygon = config.output("PolygonLabels", p.to_name, p.label)
        mode = self.settings.output
        want_brush = brush is not None and mode in ("auto", "brush", "both")
        want_polygon = polygon is not None and (mode in ("polygon", "both") or (mode == "auto" and brush is None))
        if brush is None and polygon is None:
            raise InputError(f"the label config has no BrushLabels or PolygonLabels for image {p.to_name!r}")
        out = [brush_result(mask, p, brush, score)] if want_brush else []
        if want_polygon:
            out.extend(polygon_results(mask, p, polygon, score))
        if not out:     # e.g. DEXTR_OUTPUT=polygon but the config only has brushes
            out = [brush_result(mask, p, brush, score)] if brush else polygon_results(mask, p, polygon, score)
        return out


def parse_request(request, settings: Settings | None = None
                  ) -> tuple[list[dict], LabelConfig, dict | None, list[list[Prompt]]]:
    """Validate a /predict body: ``tasks`` (non-empty list), ``label_config``, ``params.context``,
    and the objects each task asks for, within the limits of ``settings`` (its defaults if None)."""
    settings = settings or Settings()
    if not isinstance(request, dict):
        raise InputError("request body must be a JSON object")
    tasks = request.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise InputError("'tasks' must be a non-empty list")
    if len(tasks) > settings.max_tasks:
        raise InputError(f"{len(tasks)} tasks in one request exceed the limit of {settings.max_tasks} "
                         "(DEXTR_MAX_TASKS)")
    if not all(isinstance(t, dict) for t in tasks):
        raise InputError("every task must be an object")
    config = LabelConfig.parse(request.get("label_config"))
    params = request.get("params")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise InputError("'params' must be an object")
    context = params.get("context")
    if context is not None and not isinstance(context, dict):
        raise InputError("'params.context' must be an object or null")
    if context is not None:
        prompts = prompts_from_results(context.get("result") or [])
        per_task = [prompts] * len(tasks)
    else:
        per_task = [stored_prompts(task) for task in tasks]
    for task, prompts in zip(tasks, per_task):
        _check_limits(task, prompts, settings)
    return tasks, config, context, per_task


def _check_limits(task: dict, prompts: list[Prompt], settings: Settings) -> None:
    if len(prompts) > settings.max_objects:
        raise InputError(f"task {_task_id(task)}: {len(prompts)} objects exceed the limit of "
                         f"{settings.max_objects} per task (DEXTR_MAX_OBJECTS)")
    for p in prompts:
        clicks = len(p.points) + len(p.negatives)
        if clicks > settings.max_points:
            raise InputError(f"task {_task_id(task)}: an object with {clicks} clicks exceeds the limit of "
                             f"{settings.max_points} (DEXTR_MAX_POINTS)")


def _task_id(task: dict) -> str:
    value = task.get("id")
    return str(value)[:40] if isinstance(value, (int, str)) else "?"


def stored_prompts(task: dict) -> list[Prompt]:
    """Batch mode: extreme-point groups and rectangles already saved on the task, from its newest
    annotation, else its newest prediction."""
    for key in ("annotations", "predictions"):
        entries = task.get(key) or []
        if not isinstance(entries, list):
            raise InputError(f"task {_task_id(task)}: {key!r} must be a list")
        if not all(isinstance(e, dict) for e in entries):
            raise InputError(f"task {_task_id(task)}: every item of {key!r} must be an object")
        entries = [e for e in entries if not e.get("was_cancelled")]
        for entry in newest_first(entries, f"task {_task_id(task)}: {key[:-1]}"):
            prompts = prompts_from_results(entry.get("result") or [], group_keypoints=True)
            if prompts:
                return prompts
    return []


def request_deadline(request: dict, default_seconds: float) -> float:
    """The ``time.monotonic()`` deadline of a queued request, from the wall-clock one the API set."""
    wall = request.get(DEADLINE_KEY) if isinstance(request, dict) else None
    if isinstance(wall, (int, float)) and not isinstance(wall, bool) and np.isfinite(wall):
        return time.monotonic() + min(float(wall) - time.time(), default_seconds)
    return time.monotonic() + default_seconds


_SEGMENTER: Segmenter | None = None


def resident_segmenter() -> Segmenter:
    """This process's Segmenter, created on first use and kept for the life of the process."""
    global _SEGMENTER
    if _SEGMENTER is None:
        _SEGMENTER = Segmenter(Settings.from_env())
    return _SEGMENTER


def predict_job(request: dict) -> dict:
    """The queue job: the resident Segmenter answers, with the project's Label Studio connection
    looked up here (the job's arguments carry no credentials) and the API's deadline."""
    from rq import get_current_job

    segmenter = resident_segmenter()
    job = get_current_job()
    setups = SetupStore(job.connection) if job is not None else None
    connection = connection_for(segmenter.settings, setups, project_id(request.get("project")))
    deadline = request_deadline(request, segmenter.settings.predict_timeout)
    return segmenter.predict(request, connection=connection, deadline=deadline)
