"""The answer to a Label Studio ``/predict`` body: masks as brush or polygon regions.

Both the in-process server and the queue workers run :class:`LabelStudioBackend` on this
process's resident predictor and image cache (:mod:`dextr_backend.service`).

Every request has a bounded cost: its limits are checked first (:mod:`.requests`); objects go
through the network in batches whose results become Label Studio regions at once (memory stays
flat with their number); and the whole request, image fetches included, ends by its deadline
(``DEXTR_PREDICT_TIMEOUT``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import cast

import numpy as np

from ..errors import InputError, ServiceTimeout
from ..predictor import DextrPredictor
from ..service.cache import ImageCache, shared_cache
from ..service.prompts import Prompt
from ..service.resident import ResidentPredictor
from ..settings import Settings
from .client import LabelStudioClient
from .images import ImageFetcher
from .protocol import LabelConfig, ObjectClicks, brush_result, polygon_results, task_image_url
from .requests import ParsedRequest, parse_request
from .setups import Connection

log = logging.getLogger(__name__)


class LabelStudioBackend:
    """Label Studio's requests, answered by a resident predictor, with images from a shared cache."""

    def __init__(self, settings: Settings, resident: ResidentPredictor, cache: ImageCache | None = None):
        self.settings = settings
        self.resident = resident
        self.cache = cache if cache is not None else shared_cache(settings)
        self._clients: dict[Connection, LabelStudioClient] = {}
        self._lock = threading.Lock()

    def fetcher(self, connection: Connection | None = None) -> ImageFetcher:
        """Images of a request: from ``connection`` (its origin, with its token) or allowed hosts.
        One client (one connection pool) per Label Studio and token, kept for the process."""
        client = None
        if connection is not None:
            with self._lock:
                client = self._clients.get(connection)
                if client is None:
                    client = self._clients[connection] = LabelStudioClient(
                        connection.url,
                        connection.api_key,
                        allowed_hosts=self.settings.allowed_hosts,
                        fetch_timeout=self.settings.fetch_timeout,
                    )
        return ImageFetcher(
            client,
            self.settings.allowed_hosts,
            self.cache,
            max_bytes=self.settings.max_image_mb * 1024 * 1024,
            timeout=self.settings.fetch_timeout,
            max_pixels=self.settings.max_image_pixels,
        )

    def predict(
        self,
        request: dict,
        *,
        connection: Connection | None = None,
        deadline: float | None = None,
        parsed: ParsedRequest | None = None,
    ) -> dict:
        """Answer a /predict body. ``connection`` says which Label Studio relative image URLs come
        from (see :mod:`.setups`; never taken from the body); ``deadline`` is a ``time.monotonic()``
        instant after which the request ends with :class:`ServiceTimeout` (HTTP 504). ``parsed``:
        the body as the caller already checked it (``parse_request``), so it is read once."""
        if deadline is None:
            deadline = time.monotonic() + self.settings.predict_timeout
        tasks, config, _context, prompts_per_task = parsed or parse_request(request, self.settings)
        fetcher = self.fetcher(connection)
        predictor = self.resident.get()
        results = [
            self._task_result(task, config, prompts, predictor, fetcher, deadline)
            for task, prompts in zip(tasks, prompts_per_task)
        ]
        return {"results": results, "model_version": predictor.version}

    def _check_time(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise ServiceTimeout(
                f"the request took longer than {self.settings.predict_timeout:g} s "
                "(DEXTR_PREDICT_TIMEOUT); send fewer tasks or objects at once, or raise it"
            )

    def _task_result(
        self,
        task: dict,
        config: LabelConfig,
        prompts: list[ObjectClicks],
        predictor: DextrPredictor,
        fetcher: ImageFetcher,
        deadline: float,
    ) -> dict | list:
        """One prediction for ``task`` (a dict), or none (``[]``) when there is nothing to segment.

        Label Studio reads each item of ``results`` as one prediction or a list of them. ``[]``
        stores nothing when a task opens (an empty prediction of this model version would make
        *Retrieve predictions* skip the task for good), and the labeling page keeps its keypoints
        with Auto-Accept Suggestions on (accepting an empty result deletes them)."""
        ready = [p for p in prompts if p.ready]
        if not ready:
            return []
        result, scores = [], []
        batch = max(1, predictor.batch_size)
        for start in range(0, len(ready), batch):
            self._check_time(deadline)
            items, owners = [], []
            for p in ready[start : start + batch]:
                image = fetcher.get(task_image_url(task, config.image_key(p.to_name)), deadline=deadline)
                h, w = image.shape[:2]
                if (w, h) != (p.width, p.height):  # LS measured another size (e.g. EXIF rotation)
                    p = p.scaled(w, h)
                # The extreme points (pass 1), then every correction at once (pass 2, versions
                # that take them; the predictor logs the ones a version ignores).
                prompt = cast(Prompt, p.prompt())  # p is ready: it has a box or four clicks
                items.append((image, prompt.extreme_points, prompt.positives, prompt.negatives))
                owners.append(p)
            self._check_time(deadline)
            for p, pred in zip(owners, predictor.predict_batch(items)):
                result.extend(self._regions(config, p, pred.mask, pred.score))
                scores.append(pred.score)
        score = float(np.mean(scores)) if scores else 0.0
        return {"result": result, "score": round(score, 4), "model_version": predictor.version}

    def _regions(self, config: LabelConfig, p: ObjectClicks, mask: np.ndarray, score: float) -> list[dict]:
        brush = config.output("BrushLabels", p.to_name, p.label)
        polygon = config.output("PolygonLabels", p.to_name, p.label)
        mode = self.settings.output
        want_brush = brush is not None and mode in ("auto", "brush", "both")
        want_polygon = polygon is not None and (mode in ("polygon", "both") or (mode == "auto" and brush is None))
        if brush is None and polygon is None:
            raise InputError(f"the label config has no BrushLabels or PolygonLabels for image {p.to_name!r}")
        out = [brush_result(mask, p, brush, score)] if want_brush and brush is not None else []
        if want_polygon and polygon is not None:
            out.extend(polygon_results(mask, p, polygon, score))
        if not out:  # e.g. DEXTR_OUTPUT=polygon but the config only has brushes
            if brush is not None:
                out = [brush_result(mask, p, brush, score)]
            elif polygon is not None:  # one of the two is there (checked above)
                out = polygon_results(mask, p, polygon, score)
        return out
