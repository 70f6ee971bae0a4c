"""A Label Studio ``/predict`` request answered with masks: the one function both the in-process
server and the rq workers run.

A :class:`Segmenter` keeps the network and the image cache resident for the life of a process
and takes up a newly promoted weights version between requests, without a restart.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from ..errors import InputError
from ..predictor import DextrPredictor
from ..settings import Settings
from ..weights.store import WeightsStore
from .client import LabelStudioClient
from .images import ImageCache, ImageFetcher
from .protocol import (LabelConfig, Prompt, brush_result, polygon_results, prompts_from_results,
                       task_image_url)

log = logging.getLogger(__name__)


class Segmenter:
    def __init__(self, settings: Settings, store: WeightsStore | None = None):
        self.settings = settings
        self.store = store or WeightsStore()
        self.cache = ImageCache(settings.image_cache_mb * 1024 * 1024)
        self._predictor: DextrPredictor | None = None
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str | None], LabelStudioClient] = {}

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

    # ---------------------------------------------------------------- images
    def fetcher(self, hostname: str | None = None, access_token: str | None = None) -> ImageFetcher:
        url = self.settings.label_studio_url or hostname
        key = self.settings.label_studio_api_key or access_token
        client = None
        if url:
            client = self._clients.get((url, key))
            if client is None:
                client = self._clients.setdefault((url, key), LabelStudioClient(url, key))
        return ImageFetcher(client, self.settings.allowed_hosts, self.cache,
                            max_bytes=self.settings.max_image_mb * 1024 * 1024)

    # ---------------------------------------------------------------- predict
    def predict(self, request: dict) -> dict:
        tasks, config, context = parse_request(request)
        fetcher = self.fetcher(request.get("hostname"), request.get("access_token"))
        predictor = self.predictor()
        results = []
        for task in tasks:
            if context is not None:
                prompts = prompts_from_results(context.get("result") or [])
            else:
                prompts = stored_prompts(task)
            results.append(self._task_result(task, config, prompts, predictor, fetcher))
        return {"results": results, "model_version": predictor.version}

    def _task_result(self, task: dict, config: LabelConfig, prompts: list[Prompt], predictor: DextrPredictor,
                     fetcher: ImageFetcher) -> dict:
        ready = [p for p in prompts if p.ready]
        if any(p.negatives for p in prompts):
            log.info("negative clicks ignored: DEXTR uses extreme points only",
                     extra={"task": task.get("id"), "negatives": sum(len(p.negatives) for p in prompts)})
        if not ready:
            return {"result": [], "score": 0.0, "model_version": predictor.version}
        items, owners = [], []
        for p in ready:
            image = fetcher.get(task_image_url(task, config.image_key(p.to_name)))
            points = p.extreme_points()
            h, w = image.shape[:2]
            if (w, h) != (p.width, p.height):     # LS measured another size (e.g. EXIF rotation)
                points = points * [w / p.width, h / p.height]
                points = np.minimum(points, [w - 1, h - 1])
                p = Prompt(p.to_name, p.label, w, h, p.points, p.negatives, p.box)
            items.append((image, points))
            owners.append(p)
        preds = predictor.predict_batch(items)
        result = []
        for p, pred in zip(owners, preds):
            result.extend(self._regions(config, p, pred.mask, pred.score))
        score = float(np.mean([pr.score for pr in preds])) if preds else 0.0
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


def parse_request(request) -> tuple[list[dict], LabelConfig, dict | None]:
    """Validate a /predict body: ``tasks`` (non-empty list), ``label_config``, ``params.context``."""
    if not isinstance(request, dict):
        raise InputError("request body must be a JSON object")
    tasks = request.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise InputError("'tasks' must be a non-empty list")
    if not all(isinstance(t, dict) for t in tasks):
        raise InputError("every task must be an object")
    config = LabelConfig.parse(request.get("label_config"))
    params = request.get("params") or {}
    if not isinstance(params, dict):
        raise InputError("'params' must be an object")
    context = params.get("context")
    if context is not None and not isinstance(context, dict):
        raise InputError("'params.context' must be an object or null")
    return tasks, config, context


def stored_prompts(task: dict) -> list[Prompt]:
    """Batch mode: extreme-point groups and rectangles already saved on the task, from its newest
    annotation, else its newest prediction."""
    for key in ("annotations", "predictions"):
        entries = [e for e in task.get(key) or [] if isinstance(e, dict) and not e.get("was_cancelled")]
        entries.sort(key=lambda e: (e.get("updated_at") or e.get("created_at") or "", e.get("id") or 0))
        for entry in reversed(entries):
            prompts = prompts_from_results(entry.get("result") or [], group_keypoints=True)
            if prompts:
                return prompts
    return []


_SEGMENTER: Segmenter | None = None


def predict_job(request: dict) -> dict:
    """The queue job: one process-wide Segmenter, created on first use and kept resident."""
    global _SEGMENTER
    if _SEGMENTER is None:
        _SEGMENTER = Segmenter(Settings.from_env())
    return _SEGMENTER.predict(request)
