"""Retraining for a Label Studio project, in one place: export its accepted labels, fine-tune the
current version on them, and promote the result unless it is measurably worse
(``training.promotion``; the rule is ``training.decision``'s). A small label set is
cross-validated, so every label is evidence and the shipped model trains on all of them.

Both ways in use it: *Start Training* (and ``DEXTR_TRAIN_EVERY``) through the queue
(:mod:`.jobs`), and ``dextr-backend train --labelstudio-project``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..data.objects import ObjectRef, folder_hash, folder_objects
from ..errors import InputError
from ..redact import redact_url
from ..settings import Settings
from .client import LabelStudioClient
from .export import export_labelstudio
from .setups import SetupStore, connection_for

log = logging.getLogger(__name__)

# Below this many objects the job cross-validates (``training.crossval``): every label is scored
# once by a model that never trained on it, and the shipped model trains on all of them, at the
# cost of FOLDS + 1 trainings. From here on a 15 % hold-out is 9+ objects and one training.
CROSS_VALIDATE_BELOW = 60
FOLDS = 2


def label_studio_client(settings: Settings, setups: SetupStore | None, project: int) -> LabelStudioClient:
    """A client for the project's Label Studio, with credentials from this process's settings or
    the project's /setup record (never from a job or a request body)."""
    conn = connection_for(settings, setups, project)
    if conn is None:
        raise InputError(
            f"no Label Studio for project {project}: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
            "for the worker, or connect the backend in the project's settings so Label Studio "
            "calls /setup"
        )
    return LabelStudioClient(
        conn.url, conn.api_key, allowed_hosts=settings.allowed_hosts, fetch_timeout=settings.fetch_timeout
    )


def export_project(settings: Settings, client: LabelStudioClient, project: int) -> tuple[list[ObjectRef], dict]:
    """The project's accepted labels as training objects, exported to an image/mask folder under
    ``DEXTR_DATA_DIR`` (refreshed in place), and the source record a model card keeps."""
    folder = export_labelstudio(client, project, settings.labelstudio_data_dir(project))
    return folder_objects(folder, "half"), {
        "kind": "labelstudio",
        "url": redact_url(client.url),
        "project": project,
        "hash": folder_hash(folder),
    }


def retrain_config(settings: Settings, objects: int):
    """The schedule of one *Start Training*: 10 epochs of 160 samples at the version's working
    size, lr 2e-3 (BatchNorm frozen under 500 objects, as the trainer does), more samples per
    epoch from 40 objects on (4 each, up to 2000), and no early stopping: a handful of held-out
    objects is too noisy to stop on or to pick an epoch by, so every epoch runs and the last is
    kept (``keep_last``; the held-out objects decide the promotion only). Under
    CROSS_VALIDATE_BELOW objects the shipped training runs this schedule and each of the FOLDS
    fold trainings (FOLDS-1)/FOLDS of it (``crossval.fold_epochs``), each with its share of the
    time budget. Why these: at 25 labels ``benchmarks/finetune_small_data.py`` gained +8.2
    on unseen frames in 2.5 minutes of training, where 6 epochs at 3e-4 gained +5.1 (README, the
    levers). ``DEXTR_TRAIN_*`` override each part; with ``DEXTR_TRAIN_PATIENCE`` set, the run
    holds images out, stops early and keeps its best epoch."""
    from ..training.trainer import TrainConfig

    samples = settings.train_samples or max(160, min(2000, 4 * objects))
    return TrainConfig(
        epochs=settings.train_epochs,
        max_minutes=settings.train_max_minutes,
        lr=settings.train_lr,
        patience=settings.train_patience or settings.train_epochs,
        samples_per_epoch=samples,
    )


def folds_for(settings: Settings, objects: int) -> int:
    """How many folds the job cross-validates over (0: a hold-out split). Early stopping
    (``DEXTR_TRAIN_PATIENCE``) needs validation after every epoch, hence a hold-out split."""
    return FOLDS if objects < CROSS_VALIDATE_BELOW and not settings.train_patience else 0


def retrain_project(
    settings: Settings,
    client: LabelStudioClient,
    project: int,
    *,
    last_trained: dict | None = None,
    stage: Callable[[str], None] = lambda name: None,
    progress: Callable[..., None] = lambda force=False, **fields: None,
) -> dict:
    """Export, then train and promote; the run's summary. Skipped (``skipped: True``) when the
    labels and the starting version are those of ``last_trained``, the project's previous run."""
    from ..training.promotion import TrainRequest, train_and_promote
    from ..weights.store import WeightsStore

    stage("exporting labels")
    refs, source = export_project(settings, client, project)
    store = WeightsStore.from_settings(settings)
    data_hash, start = source["hash"], store.current_name()
    same = last_trained
    if same and same["data_hash"] == data_hash and start in (same["started_from"], same["version"]):
        return {
            "skipped": True,
            "data_hash": data_hash,
            "started_from": start,
            "reason": f"not trained: the labels are unchanged since run {same['run']}, which "
            f"trained on them from {same['started_from']} and made {same['version']} "
            f"(current: {start})",
        }
    config = retrain_config(settings, len(refs))
    if not settings.train_guard_dir:
        log.warning(
            "no guard folder (DEXTR_TRAIN_GUARD_DIR): labels that are consistently wrong (shifted or "
            "swapped masks) cannot be told from a new domain; only the project's own labels decide",
            extra={"project": project},
        )
    folds = folds_for(settings, len(refs))
    progress(objects=len(refs), epoch=0, epochs_done=0)  # the run's epochs and folds follow once it is planned
    request = TrainRequest(
        refs,
        source,
        config,
        guard=settings.train_guard_dir or None,
        folds=folds,
        val_fraction=settings.train_val_fraction,
        hold_out_objects=settings.train_min_val_objects,
        min_val_objects=settings.train_min_val_objects,
        keep_last=settings.train_patience == 0,
    )
    outcome = train_and_promote(request, store=store, listeners=_listeners(stage, progress))
    return {**outcome.summary(), "data_hash": data_hash, "started_from": start}


def _listeners(stage: Callable[[str], None], progress: Callable[..., None]):
    """The run's stages, epochs and steps as progress of the run in Redis (``/train/status``)."""
    from ..training.promotion import Listeners

    def on_epoch(row: dict) -> None:
        progress(
            True,
            epochs_done=row["epoch"],
            epoch=row["epoch"],
            epochs=row["epochs"],
            part=row.get("part"),
            val_miou=row["val_miou"],
            loss=row["loss"],
            **({"guard_miou": row["guard_miou"]} if "guard_miou" in row else {}),
        )

    def on_step(fields: dict) -> None:
        done = fields["epoch"] - 1 + fields["step"] / fields["steps_per_epoch"]
        progress(**fields, fraction=round(done / fields["epochs"], 4))

    return Listeners(
        on_plan=lambda shape: progress(True, **shape),
        on_stage=stage,
        on_epoch=on_epoch,
        on_progress=on_step,
        on_resume=lambda epoch: progress(True, resumed_from_epoch=epoch),
    )
