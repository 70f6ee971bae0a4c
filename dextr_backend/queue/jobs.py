"""Functions the rq workers run. They return plain dicts, with user errors as data, so the API
can answer 4xx with the worker's own message instead of a generic failure."""

from __future__ import annotations

import logging
import traceback

from ..errors import DextrError, InputError, WeightsError

log = logging.getLogger(__name__)


def error_payload(exc: Exception) -> dict:
    status = 503 if isinstance(exc, WeightsError) else 422
    return {"error": str(exc), "status": status, "kind": type(exc).__name__}


def predict(request: dict) -> dict:
    """Answer one Label Studio /predict body in the worker's resident Segmenter."""
    from ..labelstudio.predict import predict_job

    try:
        return {"ok": predict_job(request)}
    except DextrError as exc:
        return error_payload(exc)
    except Exception as exc:  # noqa: BLE001 - a bug: log it fully, answer without internals
        log.error("predict job crashed", extra={"error": repr(exc), "trace": traceback.format_exc()})
        return {"error": f"internal error in the worker ({type(exc).__name__})", "status": 500,
                "kind": "InternalError"}


def train_project(project: int, label_studio_url: str, api_key: str | None) -> dict:
    """Fine-tune on a Label Studio project's accepted labels; promote only if better.

    If another request for this project came while this one ran, the job runs once more, so
    the labels accepted meanwhile are not left out and two runs never overlap."""
    from rq import get_current_job

    from .client import TRAIN_AGAIN_KEY

    job = get_current_job()
    again = TRAIN_AGAIN_KEY.format(project=int(project))
    while True:
        result = _train_project(project, label_studio_url, api_key)
        if job is None or not job.connection.delete(again):
            return result


def _train_project(project: int, label_studio_url: str, api_key: str | None) -> dict:
    import os
    import tempfile
    from pathlib import Path

    from rq import get_current_job

    from ..labelstudio.client import LabelStudioClient
    from ..settings import Settings
    from ..training.datasets import export_labelstudio, folder_hash, folder_objects
    from ..training.promotion import train_and_promote
    from ..training.trainer import TrainConfig

    job = get_current_job()

    def progress(**fields):
        if job is not None:
            job.meta.update(fields)
            job.save_meta()

    try:
        progress(stage="exporting labels")
        client = LabelStudioClient(label_studio_url, api_key)
        cache = Path(os.environ.get("DEXTR_DATA_DIR", Path(tempfile.gettempdir()) / "dextr-backend")) / f"ls-{project}"
        folder = export_labelstudio(client, project, cache)
        refs = folder_objects(folder, "half")
        settings = Settings.from_env()
        config = TrainConfig(epochs=settings.train_epochs, max_minutes=settings.train_max_minutes, lr=3e-4,
                             patience=2, samples_per_epoch=settings.train_samples or min(2000, max(200, 10 * len(refs))))
        progress(stage="training", objects=len(refs), epoch=0, epochs=config.epochs)
        outcome = train_and_promote(
            refs, source={"kind": "labelstudio", "url": label_studio_url, "project": project,
                          "hash": folder_hash(folder)},
            config=config, val_fraction=0.2, guard=settings.train_guard_dir or None,
            on_epoch=lambda row: progress(epoch=row["epoch"], val_miou=row["val_miou"], loss=row["loss"]))
        progress(stage="done")
        return {"ok": outcome.summary()}
    except (DextrError, InputError) as exc:
        progress(stage="failed", error=str(exc))
        return error_payload(exc)
