"""What Label Studio sends: label configs, tasks' pictures, and clicks and boxes as objects.

Pure data (dicts and numpy). Shapes follow ``shared/reference/label-studio.md``: coordinates in
results and contexts are percentages (0-100) of the image's original width and height. What goes
back (brush and polygon regions) is :mod:`.predictions`'.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..service.prompts import Prompt
from ..training_runs import training_project

CONTROL_TAGS = ("BrushLabels", "PolygonLabels", "KeyPointLabels", "RectangleLabels")


@dataclass(frozen=True)
class Control:
    """A labeling control of the config: ``from_name`` = ``name``, pointing at image ``to_name``."""

    tag: str
    name: str
    to_name: str
    labels: tuple[str, ...]
    smart: bool


@dataclass(frozen=True)
class LabelConfig:
    images: dict[str, str]  # Image tag name -> task data key ($image -> "image")
    controls: tuple[Control, ...]

    @classmethod
    def parse(cls, xml: object) -> LabelConfig:
        if not isinstance(xml, str) or not xml.strip():
            raise InputError("label_config is missing or empty")
        try:
            root = ET.fromstring(xml)
        except ET.ParseError as exc:
            raise InputError(f"label_config is not valid XML: {exc}") from None
        images = {
            image_name: (el.get("value") or "").lstrip("$")
            for el in root.iter()
            if el.tag == "Image" and (image_name := el.get("name"))
        }
        controls = []
        for el in root.iter():
            name, to_name = el.get("name"), el.get("toName")
            if el.tag in CONTROL_TAGS and name and to_name:
                labels = tuple(value for lab in el.iter("Label") if (value := lab.get("value")))
                smart = el.get("smart", "").lower() == "true" or any(
                    lab.get("smart", "").lower() == "true" for lab in el.iter("Label")
                )
                controls.append(Control(el.tag, name, to_name, labels, smart))
        if not images:
            raise InputError("label_config has no <Image> tag: this backend segments images")
        return cls(images, tuple(controls))

    def output(self, tag: str, to_name: str, label: str) -> Control | None:
        """The ``tag`` control for this image, preferring one that offers ``label``."""
        candidates = [c for c in self.controls if c.tag == tag and c.to_name == to_name]
        for c in candidates:
            if label in c.labels:
                return c
        return candidates[0] if candidates else None

    def image_key(self, to_name: str | None = None) -> str:
        """The task data key of the ``<Image>`` called ``to_name`` (default: the first one)."""
        key = self.images.get(to_name) if to_name is not None else None
        return key or next(iter(self.images.values()))


def project_id(value) -> int | None:
    """``"3.1700000000"`` (LS's ``<id>.<created>``), ``3`` or ``{"id": 3}`` -> 3; None when there is
    no usable id (missing, not a number, or outside 1 .. 2**31 - 1). The one rule, with the reason
    for a refusal, is ``training_runs.training_project``."""
    try:
        return training_project(value)
    except InputError:
        return None


def task_image_url(task: dict, key: str) -> str:
    """The picture of ``task`` under ``data[key]``: the one rule predictions and training exports share."""
    data = task.get("data")
    if not isinstance(data, dict):
        raise InputError(f"task {str(task.get('id'))[:40]}: 'data' must be an object holding the image URL")
    url = data.get(key)
    if not isinstance(url, str) or not url:
        raise InputError(f"task {str(task.get('id'))[:40]} has no image under data[{key!r}]")
    return url


@dataclass
class ObjectClicks:
    """One object as Label Studio sent it: its image, label, clicks and box in pixels, and the
    image size Label Studio measured. Which click is what is :mod:`dextr_backend.service.prompts`'
    rule, the same for every tool (:meth:`prompt`)."""

    to_name: str
    label: str
    width: int
    height: int
    points: list[tuple[float, float]] = field(default_factory=list)
    negatives: list[tuple[float, float]] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in pixels

    def prompt(self) -> Prompt | None:
        """The extreme points and corrections, or None while there are too few clicks."""
        return Prompt.from_clicks(self.points, self.negatives, self.box, width=self.width, height=self.height)

    @property
    def ready(self) -> bool:
        """Enough clicks to segment, by the same rule as :meth:`prompt`."""
        return self.prompt() is not None

    def size_matches(self, other: ObjectClicks) -> bool:
        return (self.width, self.height) == (other.width, other.height)


MAX_SIDE = 100_000  # pixels; Label Studio sizes beyond this are not images anyone annotates


def _number(value, what: str) -> float:
    """A finite JSON number (not a bool, not text), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise InputError(f"{what} is out of range") from None
    if not np.isfinite(number):
        raise InputError(f"{what} must be finite")
    return number


def _size(item: dict) -> tuple[int, int]:
    if "original_width" not in item or "original_height" not in item:
        raise InputError("a context item lacks original_width/original_height")
    w = _number(item["original_width"], "original_width")
    h = _number(item["original_height"], "original_height")
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE) or w != int(w) or h != int(h):
        raise InputError(f"bad image size {w:g}x{h:g} in a context item (whole pixels, 1 to {MAX_SIDE})")
    return int(w), int(h)


def _pixel(value: dict, w: int, h: int) -> tuple[float, float]:
    """Percent to pixels. 0-100 % is the image (100 % is its last pixel); beyond is an error."""
    if "x" not in value or "y" not in value:
        raise InputError("a point needs numeric 'x' and 'y' in percent")
    x, y = _number(value["x"], "a point's 'x'"), _number(value["y"], "a point's 'y'")
    if not (0.0 <= x <= 100.0 and 0.0 <= y <= 100.0):
        raise InputError(f"point ({x:g}%, {y:g}%) lies outside the image")
    return min(_from_percent(x, w), w - 1.0), min(_from_percent(y, h), h - 1.0)


def _from_percent(value: float, size: int) -> float:
    """Percent of ``size`` in pixels, rounded to a millionth of a pixel: Label Studio's percentages
    of whole pixels come back a hair off (251 of 321 px reads 250.99999999999997), and a crop
    edge floored from that would move a whole pixel."""
    return round(value * size / 100.0, 6)


def _label(value: dict, kind: str) -> str:
    labels = value.get(kind) or value.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise InputError(f"'{kind}' must be a list of label names")
    return labels[0] if labels else ""


def prompts_from_results(results: list, *, group_keypoints: bool = False) -> list[ObjectClicks]:
    """Objects in a list of LS result items (an interactive context, or a stored annotation).

    Keypoints of the same image and label form one object in interactive mode (LS re-sends
    every click of the label each time): the first four positive ones are the extreme points,
    later ones and Alt-clicked (negative) ones correct the mask. A smart rectangle followed by
    clicks of its label, fewer than four positive ones, is one object: the box stands in for the
    extreme points and the clicks correct it. In stored annotations (``group_keypoints``) each run
    of four keypoints of a label is one object, so a whole project's clicks convert in one go.
    """
    if not isinstance(results, list):
        raise InputError("context.result must be a list")
    prompts: list[ObjectClicks] = []
    groups: dict[tuple[str, str], list[ObjectClicks]] = {}
    boxes: dict[tuple[str, str], ObjectClicks] = {}
    for item in results:
        if not isinstance(item, dict):
            raise InputError("every context.result item must be an object")
        kind = item.get("type")
        value = item.get("value")
        if not isinstance(kind, str):
            raise InputError("every result item needs a 'type' string")
        if kind not in ("keypointlabels", "rectanglelabels"):
            continue
        if not isinstance(value, dict):
            raise InputError(f"{kind} item without a 'value' object")
        w, h = _size(item)
        to_name = str(item.get("to_name") or "")
        label = _label(value, kind)
        if kind == "rectanglelabels":
            x0, y0 = _pixel(value, w, h)
            if "width" not in value or "height" not in value:
                raise InputError("a rectangle needs numeric 'width' and 'height' in percent")
            bw = _number(value["width"], "a rectangle's 'width'")
            bh = _number(value["height"], "a rectangle's 'height'")
            if not (0.0 <= bw <= 100.0 and 0.0 <= bh <= 100.0):
                raise InputError("a rectangle's 'width' and 'height' must lie between 0 and 100 percent")
            bw, bh = _from_percent(bw, w), _from_percent(bh, h)
            if _number(value.get("rotation") or 0, "a rectangle's 'rotation'") != 0:
                raise InputError("rotated rectangles are not supported; draw the box unrotated")
            prompts.append(ObjectClicks(to_name, label, w, h, box=(x0, y0, x0 + bw, y0 + bh)))
            boxes[(to_name, label)] = prompts[-1]
            continue
        point = _pixel(value, w, h)
        key = (to_name, label)
        open_groups = groups.setdefault(key, [])
        if not open_groups or (group_keypoints and len(open_groups[-1].points) >= 4):
            open_groups.append(ObjectClicks(to_name, label, w, h))
            prompts.append(open_groups[-1])
        target = open_groups[-1]
        if item.get("is_positive", True) is False:
            target.negatives.append(point)
        else:
            target.points.append(point)
    if not group_keypoints:
        prompts = _clicks_on_boxes(prompts, boxes)
    return prompts


def _clicks_on_boxes(prompts: list[ObjectClicks], boxes: dict[tuple[str, str], ObjectClicks]) -> list[ObjectClicks]:
    """Interactive mode: a keypoint group of a label with fewer than four positive clicks, beside
    a rectangle of the same label and image, corrects that rectangle instead of waiting for more."""
    out = []
    for p in prompts:
        box = boxes.get((p.to_name, p.label))
        if p.box is None and box is not None and len(p.points) < 4 and box.size_matches(p):
            box.points.extend(p.points)
            box.negatives.extend(p.negatives)
            continue
        out.append(p)
    return out


def newest_first(entries: list[dict], where: str = "annotation") -> list[dict]:
    """Newest first by update (else creation) time, then id. Label Studio's times are ISO text and
    its ids numbers; anything else is a malformed task, refused rather than guessed at."""
    for e in entries:
        for name in ("updated_at", "created_at"):
            if e.get(name) is not None and not isinstance(e[name], str):
                raise InputError(f"{where} '{name}' must be a date text")
        if e.get("id") is not None and (isinstance(e["id"], bool) or not isinstance(e["id"], int)):
            raise InputError(f"{where} 'id' must be a number")
    return sorted(
        entries, key=lambda e: (e.get("updated_at") or e.get("created_at") or "", e.get("id") or 0), reverse=True
    )
