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


def train_project(project: int) -> dict:
    """Fine-tune on a Label Studio project's accepted labels; promote only if better.

    The arguments name the project only: the worker takes Label Studio's address and token from
    its own settings, else from what Label Studio sent to ``/setup`` (kept in Redis by the API).
    If another request for this project came while a run went on, the job runs once more (see
    ``training``), so labels accepted meanwhile are not left out and two runs never overlap."""
    from rq import get_current_job

    from .training import Run, RunTakenOver

    job = get_current_job()
    if job is None:                      # called directly, not by a worker: no state to keep
        return _train_project(project, None, None)
    while True:
        run = Run.begin(job.connection, project, job.id, job.worker_name or "")
        try:
            result = _train_project(project, run, job.connection)
            again = run.finish(result=result.get("ok"), error=result.get("error"))
        except RunTakenOver as exc:
            log.warning("training run taken over", extra={"project": project, "detail": str(exc)})
            return error_payload(exc)
        if not again:
            return result


def label_studio_client(settings, setups, project: int):
    """A client for the project's Label Studio, with credentials from this process's settings or
    the project's /setup record (never from the job)."""
    from ..labelstudio.client import LabelStudioClient
    from ..labelstudio.setups import connection_for

    conn = connection_for(settings, setups, project)
    if conn is None:
        raise InputError(f"no Label Studio for project {project}: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
                         "for the worker, or connect the backend in the project's settings so Label Studio "
                         "calls /setup")
    return LabelStudioClient(conn.url, conn.api_key, allowed_hosts=settings.allowed_hosts), conn.url


def _forget_decoded_files() -> None:
    """The training data caches decoded files by path, and every export of a project rewrites the
    same paths: a long-lived worker must not train on the masks of an earlier export."""
    from ..training import datasets

    for cached in (datasets._image, datasets._label_map, datasets._decoded):
        cached.cache_clear()


def retrain_config(settings, objects: int):
    """The schedule of one *Start Training*: ``benchmarks/finetune_small_data.py``'s (6 epochs of
    160 samples at the version's working size, lr 3e-4; BatchNorm frozen under 500 objects, as the
    trainer does), more samples per epoch from 40 objects on (4 each, up to 2000), and no early
    stopping: a handful of held-out objects is too noisy to stop on or to pick an epoch by, so every
    epoch runs and the last is kept (``keep_last``; validation decides the promotion only).
    ``DEXTR_TRAIN_*`` override each part; with ``DEXTR_TRAIN_PATIENCE`` set, the run stops early
    and keeps its best epoch by validation."""
    from ..training.trainer import TrainConfig

    samples = settings.train_samples or max(160, min(2000, 4 * objects))
    return TrainConfig(epochs=settings.train_epochs, max_minutes=settings.train_max_minutes, lr=3e-4,
                       patience=settings.train_patience or settings.train_epochs, samples_per_epoch=samples)


def _train_project(project: int, run, redis_conn) -> dict:
    import os
    import tempfile
    from pathlib import Path

    from ..labelstudio.setups import SetupStore
    from ..redact import redact_url
    from ..settings import Settings
    from ..training.datasets import export_labelstudio, folder_hash, folder_objects
    from ..training.promotion import train_and_promote
    from ..weights.store import WeightsStore
    from .training import RunTakenOver

    def stage(name: str) -> None:
        if run is not None:
            run.stage(name)

    def progress(force: bool = False, **fields) -> None:
        if run is not None:
            run.progress(force, **fields)

    try:
        stage("exporting labels")
        settings = Settings.from_env()
        client, url = label_studio_client(settings, SetupStore(redis_conn) if redis_conn else None, project)
        cache = Path(os.environ.get("DEXTR_DATA_DIR", Path(tempfile.gettempdir()) / "dextr-backend")) / f"ls-{project}"
        folder = export_labelstudio(client, project, cache)
        _forget_decoded_files()
        data_hash, start = folder_hash(folder), WeightsStore().current_name()
        same = run.last_trained() if run is not None else None
        if same and same["data_hash"] == data_hash and start in (same["started_from"], same["version"]):
            return {"ok": {"skipped": True, "data_hash": data_hash, "started_from": start,
                           "reason": f"not trained: the labels are unchanged since run {same['run']}, which "
                                     f"trained on them from {same['started_from']} and made {same['version']} "
                                     f"(current: {start})"}}
        refs = folder_objects(folder, "half")
        config = retrain_config(settings, len(refs))
        progress(objects=len(refs), epoch=0, epochs=config.epochs, epochs_done=0)

        def on_epoch(row: dict) -> None:
            progress(True, epochs_done=row["epoch"], epoch=row["epoch"], val_miou=row["val_miou"], loss=row["loss"],
                     **({"guard_miou": row["guard_miou"]} if "guard_miou" in row else {}))

        def on_step(fields: dict) -> None:
            progress(**fields, fraction=round((fields["epoch"] - 1 + fields["step"] / fields["steps_per_epoch"])
                                              / config.epochs, 4))

        outcome = train_and_promote(
            refs, source={"kind": "labelstudio", "url": redact_url(url), "project": project, "hash": data_hash},
            config=config, val_fraction=settings.train_val_fraction, guard=settings.train_guard_dir or None,
            min_val_objects=settings.train_min_val_objects, hold_out_objects=settings.train_min_val_objects,
            keep_last=settings.train_patience == 0,
            on_epoch=on_epoch, on_progress=on_step,
            on_stage=stage, on_resume=lambda epoch: progress(True, resumed_from_epoch=epoch))
        return {"ok": {**outcome.summary(), "data_hash": data_hash, "started_from": start}}
    except RunTakenOver:
        raise
    except DextrError as exc:
        return error_payload(exc)
    except Exception as exc:  # noqa: BLE001 - a bug: log it fully; the run still ends, as failed
        log.error("training job crashed", extra={"project": project, "error": repr(exc),
                                                 "trace": traceback.format_exc()})
        from ..redact import redact_text

        return {"error": f"internal error in the training worker ({type(exc).__name__}: "
                         f"{redact_text(str(exc))[:200]})", "status": 500, "kind": "InternalError"}
