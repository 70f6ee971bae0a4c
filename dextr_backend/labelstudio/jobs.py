"""What the queue workers run for Label Studio: :func:`segment` (tool-neutral items in, packed
masks out, :func:`dextr_backend.service.segmentation.run_job`) with Label Studio's pictures, and
:func:`train_project` around :mod:`.retrain`. Each returns plain data, with user errors as data
(``errors.error_payload``), so the API answers with the worker's own message and status instead
of a generic failure.

The server passes these functions to the queue (``QueueClient.call``) and to the training runs
(``TrainingRuns.request``); neither knows job bodies.
"""

from __future__ import annotations

import logging
import traceback
from typing import cast

from ..errors import DextrError, error_payload
from ..redact import redact_text
from ..service import resident
from ..service.segmentation import run_job
from ..training_runs import Run, RunTakenOver, TrainingRuns
from .images import LabelStudioImages
from .setups import SetupStore

log = logging.getLogger(__name__)

_IMAGES: LabelStudioImages | None = None


def _images(settings, connection) -> LabelStudioImages:
    """The worker's image source, kept for the process (its clients and cache), reading /setup
    records from the Redis the job came from (the job's arguments carry no credentials)."""
    global _IMAGES
    if _IMAGES is None or _IMAGES.settings is not settings or _IMAGES.setups.redis is not connection:
        _IMAGES = LabelStudioImages(settings, SetupStore(connection))
    return _IMAGES


def _crashed(what: str, exc: Exception, answer: str, **extra) -> dict:
    """A bug: logged in full, answered with ``answer`` (no internals)."""
    log.error(f"{what} job crashed", extra={**extra, "error": repr(exc), "trace": traceback.format_exc()})
    return {"error": answer, "status": 500, "kind": "InternalError"}


def segment(payload: dict) -> dict:
    """Segment a job's items (``service.segmentation.job_payload``) on the worker's resident
    predictor, by the API's deadline; pictures staged by the API are read from Redis, any others
    fetched by Label Studio's rules."""
    from rq import get_current_job

    try:
        serving = cast(resident.ResidentPredictor, resident.shared())  # a worker loads its own
        job = get_current_job()
        images = _images(serving.settings, job.connection if job is not None else None)
        return {"ok": run_job(payload, serving.get(), images, serving.settings.predict_timeout)}
    except DextrError as exc:
        return error_payload(exc)
    except Exception as exc:  # noqa: BLE001 - see _crashed
        return _crashed("segment", exc, f"internal error in the worker ({type(exc).__name__})")


def train_project(project: int) -> dict:
    """Fine-tune on a Label Studio project's accepted labels; promote unless measurably worse
    (``training.decision``).

    The arguments name the project only: the worker takes Label Studio's address and token from
    its own settings, else from what Label Studio sent to ``/setup`` (kept in Redis by the API).
    If another request for this project came while a run went on, the job runs once more
    (``TrainingRuns.work``), so labels accepted meanwhile are not left out and two runs never overlap."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:  # called directly, not by a worker: no state to keep
        return _train_once(project, None, None)
    return TrainingRuns(job.connection).work(
        project, job.id, job.worker_name or "", lambda run: _train_once(project, run, job.connection)
    )


def _train_once(project: int, run: Run | None, redis_conn) -> dict:
    from ..settings import Settings
    from .retrain import label_studio_client, retrain_project

    try:
        settings = Settings.from_env()
        client = label_studio_client(settings, SetupStore(redis_conn) if redis_conn else None, project)
        if run is None:
            return {"ok": retrain_project(settings, client, project)}
        return {
            "ok": retrain_project(
                settings, client, project, last_trained=run.last_trained(), stage=run.stage, progress=run.progress
            )
        }
    except RunTakenOver:
        raise
    except DextrError as exc:
        return error_payload(exc)
    except Exception as exc:  # noqa: BLE001 - a bug (see _crashed); the run still ends, as failed
        return _crashed(
            "training",
            exc,
            f"internal error in the training worker ({type(exc).__name__}: {redact_text(str(exc))[:200]})",
            project=project,
        )
