"""What goes back to Label Studio: masks as brush or polygon regions, one prediction per task.

The masks come from any segmenter (:mod:`dextr_backend.service.segmentation`), in this process or
from a queue worker; this module only encodes them. Each mask becomes regions as soon as it is
read, so a request of many objects holds one full-size mask at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import numpy as np

from ..errors import InputError
from ..postprocess import mask_to_polygons
from ..service.segmentation import Segment, Segmenter
from .protocol import Control, LabelConfig, ObjectClicks
from .regions import mask_to_brush
from .requests import ParsedRequest, Work


def segment_and_answer(
    parsed: ParsedRequest, todo: list[Work], segmenter: Segmenter, deadline: float, output: str
) -> dict:
    """The masks of ``todo`` (:func:`.requests.work`) from ``segmenter``, in this process or through
    the queue, encoded as each is made."""
    segments = segmenter.segment([w.item for w in todo], deadline)
    return answer(parsed, todo, segments.version, segments.masks, output)


def answer(parsed: ParsedRequest, work: list[Work], version: str, masks: Iterable[Segment], output: str) -> dict:
    """The ``/predict`` answer: for each task a prediction of its objects' regions, or ``[]``.

    Label Studio reads each item of ``results`` as one prediction or a list of them. ``[]`` stores
    nothing when a task opens (an empty prediction of this model version would make *Retrieve
    predictions* skip the task for good), and the labeling page keeps its keypoints with
    Auto-Accept Suggestions on (accepting an empty result deletes them). ``output`` is
    ``DEXTR_OUTPUT``: auto, brush, polygon or both."""
    regions: list[list[dict]] = [[] for _ in parsed.tasks]
    scores: list[list[float]] = [[] for _ in parsed.tasks]
    for w, segment in zip(work, masks):
        regions[w.task].extend(_regions(parsed.config, w.clicks, segment, output))
        scores[w.task].append(segment.score)
    results: list[dict | list] = [
        {"result": r, "score": round(float(np.mean(s)), 4), "model_version": version} if s else []
        for r, s in zip(regions, scores)
    ]
    return {"results": results, "model_version": version}


def _regions(config: LabelConfig, p: ObjectClicks, segment: Segment, output: str) -> list[dict]:
    brush = config.output("BrushLabels", p.to_name, p.label)
    polygon = config.output("PolygonLabels", p.to_name, p.label)
    if brush is None and polygon is None:
        raise InputError(f"the label config has no BrushLabels or PolygonLabels for image {p.to_name!r}")
    want_brush = brush is not None and output in ("auto", "brush", "both")
    want_polygon = polygon is not None and (output in ("polygon", "both") or (output == "auto" and brush is None))
    if not want_brush and not want_polygon:  # e.g. DEXTR_OUTPUT=polygon but the config only has brushes
        want_brush, want_polygon = brush is not None, brush is None
    out = [brush_result(segment, p, brush)] if want_brush and brush is not None else []
    if want_polygon and polygon is not None:
        out.extend(polygon_results(segment, p, polygon))
    return out


def _region(control: Control, p: ObjectClicks, mask: np.ndarray, score: float, kind: str, value: dict) -> dict:
    height, width = mask.shape  # the picture as it decoded, which the mask covers
    return {
        "id": uuid.uuid4().hex[:10],
        "from_name": control.name,
        "to_name": p.to_name,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "type": kind,
        "value": value,
        "score": round(float(score), 4),
        "readonly": False,
    }


def brush_result(segment: Segment, p: ObjectClicks, control: Control) -> dict:
    value = {"format": "rle", "rle": mask_to_brush(segment.mask), "brushlabels": [p.label] if p.label else []}
    return _region(control, p, segment.mask, segment.score, "brushlabels", value)


def polygon_results(segment: Segment, p: ObjectClicks, control: Control) -> list[dict]:
    """One polygon result per outer boundary. LS polygons cannot have holes, so each hole is
    returned as a polygon of its own, marked ``"hole": true`` in ``meta`` for downstream tools."""
    out = []
    height, width = segment.mask.shape
    sx, sy = 100.0 / width, 100.0 / height
    label = [p.label] if p.label else []
    for poly in mask_to_polygons(segment.mask):
        for ring, is_hole in [(poly.exterior, False)] + [(h, True) for h in poly.holes]:
            if len(ring) < 3:
                continue
            pts = [[round(float(x) * sx, 4), round(float(y) * sy, 4)] for x, y in ring]
            value = {"points": pts, "polygonlabels": label, "closed": True}
            item = _region(control, p, segment.mask, segment.score, "polygonlabels", value)
            if is_hole:
                item["meta"] = {"hole": True}
            out.append(item)
    return out
