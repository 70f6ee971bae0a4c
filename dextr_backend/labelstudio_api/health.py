"""What ``/health`` and ``/metrics`` report: the version served and whether its file is sound, the
engine that runs it in this process once loaded, and
the segmenter's own part (in queue mode: whether Redis answers and a worker listens). Both are
open without auth, so every message passes through :func:`redact_text` (a Redis URL may carry a
password)."""

from __future__ import annotations

from .. import __version__
from ..errors import WeightsError
from ..redact import redact_text
from ..service.resident import ResidentPredictor
from .metrics import Metrics


def health(resident: ResidentPredictor, segmenter) -> tuple[dict, int]:
    """``(body, status)``: 200 UP, or 503 DOWN with the reason."""
    body = {"status": "UP", "model_class": "DEXTR", "version": __version__, "mode": segmenter.mode}
    try:
        body["model_version"] = resident.version
        resident.check()
    except WeightsError as exc:
        return {**body, "status": "DOWN", "reason": redact_text(str(exc))}, 503
    if segmenter.mode == "in-process" and resident.engine is not None:
        body["engine"] = resident.engine  # what runs pass 1 here (a worker logs its own)
    more, down = segmenter.health()
    body.update(more)
    if down is not None:
        return {**body, "status": "DOWN", "reason": redact_text(down)}, 503
    return body, 200


def metrics_text(metrics: Metrics, resident: ResidentPredictor, segmenter) -> str:
    """The Prometheus exposition: request counters and latencies, plus these gauges."""
    gauges: dict[str, tuple[str, float, dict]] = {}
    try:
        gauges["dextr_model_info"] = ("Weights version served.", 1, {"version": resident.version})
    except WeightsError:
        pass
    gauges.update(segmenter.gauges())
    return metrics.render(gauges)
