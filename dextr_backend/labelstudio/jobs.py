"""What the queue workers run for Label Studio: thin entry points around :mod:`.backend` and
:mod:`.retrain`. Each returns plain data, with user errors as data (``errors.error_payload``), so
the API answers with the worker's own message and status instead of a generic failure.

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
from ..training_runs import Run, RunTakenOver, TrainingRuns
from .backend import LabelStudioBackend
from .protocol import project_id
from .requests import request_deadline
from .setups import SetupStore, connection_for

log = logging.getLogger(__name__)

_BACKEND: LabelStudioBackend | None = None


def backend() -> LabelStudioBackend:
    """The worker's backend on its resident predictor (``dextr-backend worker`` loads it before
    taking jobs, so the first request does not pay for it)."""
    global _BACKEND
    shared = resident.shared()
    if _BACKEND is None or _BACKEND.resident is not shared:
        worker = cast(resident.ResidentPredictor, shared)  # a worker loads its own; only library callers pin one
        _BACKEND = LabelStudioBackend(worker.settings, worker)
    return _BACKEND


def _crashed(what: str, exc: Exception, answer: str, **extra) -> dict:
    """A bug: logged in full, answered with ``answer`` (no internals)."""
    log.error(f"{what} job crashed", extra={**extra, "error": repr(exc), "trace": traceback.format_exc()})
    return {"error": answer, "status": 500, "kind": "InternalError"}


def predict(request: dict) -> dict:
    """Answer one Label Studio /predict body, with the project's Label Studio connection looked up
    here (the job's arguments carry no credentials) and the API's deadline."""
    from rq import get_current_job

    try:
        answering = backend()
        job = get_current_job()
        setups = SetupStore(job.connection) if job is not None else None
        connection = connection_for(answering.settings, setups, project_id(request.get("project")))
        deadline = request_deadline(request, answering.settings.predict_timeout)
        return {"ok": answering.predict(request, connection=connection, deadline=deadline)}
    except DextrError as exc:
        return error_payload(exc)
    except Exception as exc:  # noqa: BLE001 - see _crashed
        return _crashed("predict", exc, f"internal error in the worker ({type(exc).__name__})")


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
