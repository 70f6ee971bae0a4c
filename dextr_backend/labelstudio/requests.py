"""A Label Studio ``/predict`` body, checked: the tasks, the label config, and the objects each
task asks for (interactive clicks from ``params.context``, else the task's stored keypoints and
rectangles), each within the request limits (``DEXTR_MAX_TASKS``, ``_OBJECTS``, ``_POINTS``);
then the objects ready to segment as tool-neutral items (:func:`work`).

Checking happens before anything is queued, so a bad request gets its 4xx from the API at once.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import InputError
from ..service.segmentation import ImageRef, SegmentItem
from ..settings import Settings
from .protocol import LabelConfig, ObjectClicks, newest_first, project_id, prompts_from_results, task_image_url


class ParsedRequest(NamedTuple):
    """A checked /predict body: its tasks, label config, interactive context (None: a batch), the
    objects each task asks for, and the project (None where the body names none usable)."""

    tasks: list[dict]
    config: LabelConfig
    context: dict | None
    objects: list[list[ObjectClicks]]
    project: int | None = None


class Work(NamedTuple):
    """An object ready to segment: its task's index, its clicks as Label Studio sent them (for
    the answer's labels and names), and the tool-neutral item a segmenter takes."""

    task: int
    clicks: ObjectClicks
    item: SegmentItem


def work(parsed: ParsedRequest) -> list[Work]:
    """The objects of every task with enough clicks to segment, in order; the others wait for more."""
    out = []
    for index, (task, objects) in enumerate(zip(parsed.tasks, parsed.objects)):
        for clicks in objects:
            prompt = clicks.prompt()
            if prompt is not None:
                ref = ImageRef(task_image_url(task, parsed.config.image_key(clicks.to_name)), parsed.project)
                out.append(Work(index, clicks, SegmentItem(ref, prompt, (clicks.width, clicks.height))))
    return out


def first_picture(parsed: ParsedRequest) -> ImageRef | None:
    """The picture of a request's only task, which its first click will need: called for a request
    with nothing to segment yet (a task opening, or fewer than four clicks). None for a batch."""
    if len(parsed.tasks) != 1:
        return None
    try:
        return ImageRef(task_image_url(parsed.tasks[0], parsed.config.image_key()), parsed.project)
    except InputError:
        return None


def parse_request(request, settings: Settings | None = None) -> ParsedRequest:
    """Validate a /predict body: ``tasks`` (non-empty list), ``label_config``, ``params.context``,
    and the objects each task asks for, within the limits of ``settings`` (its defaults if None)."""
    settings = settings or Settings()
    if not isinstance(request, dict):
        raise InputError("request body must be a JSON object")
    tasks = request.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise InputError("'tasks' must be a non-empty list")
    if len(tasks) > settings.max_tasks:
        raise InputError(
            f"{len(tasks)} tasks in one request exceed the limit of {settings.max_tasks} (DEXTR_MAX_TASKS)"
        )
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
    return ParsedRequest(tasks, config, context, per_task, project_id(request.get("project")))


def _check_limits(task: dict, prompts: list[ObjectClicks], settings: Settings) -> None:
    if len(prompts) > settings.max_objects:
        raise InputError(
            f"task {_task_id(task)}: {len(prompts)} objects exceed the limit of "
            f"{settings.max_objects} per task (DEXTR_MAX_OBJECTS)"
        )
    for p in prompts:
        clicks = len(p.points) + len(p.negatives)
        if clicks > settings.max_points:
            raise InputError(
                f"task {_task_id(task)}: an object with {clicks} clicks exceeds the limit of "
                f"{settings.max_points} (DEXTR_MAX_POINTS)"
            )


def _task_id(task: dict) -> str:
    value = task.get("id")
    return str(value)[:40] if isinstance(value, (int, str)) else "?"


def stored_prompts(task: dict) -> list[ObjectClicks]:
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
