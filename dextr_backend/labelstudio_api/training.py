"""What the server does with training requests: *Start Training*, the annotations that count
towards ``DEXTR_TRAIN_EVERY``, and ``/train/status``. Training runs on the queue's training
workers (:mod:`dextr_backend.training_runs` keeps each project's runs); without ``REDIS_URL``
every request says so. Like the segmenters, the app picks one of the two when it is made.
"""

from __future__ import annotations

from ..errors import InputError, ServiceUnavailable
from ..labelstudio import jobs
from ..labelstudio.setups import SetupStore, connection_for
from ..queue.client import QueueClient
from ..queue.liveness import heartbeat
from ..settings import Settings
from ..training_runs import TrainingRuns, training_project

NEEDS_QUEUE = "training runs on the queue: set REDIS_URL and start `dextr-backend worker --queues dextr-train`"


class QueueTraining:
    """Training requests as runs on the ``dextr-train`` queue: one run per project plus at most one
    more; the job names the project only, and the worker finds the credentials (``labelstudio.jobs``)."""

    def __init__(self, settings: Settings, queue: QueueClient, setups: SetupStore):
        self.settings, self.queue, self.setups = settings, queue, setups
        self.runs = TrainingRuns(queue.redis)

    def start(self, project) -> dict:
        pid = training_project(project)  # 422: no project, or an id outside 1 .. 2**31 - 1
        if connection_for(self.settings, self.setups, pid) is None:
            raise InputError(
                f"no Label Studio for project {pid}: LABEL_STUDIO_URL is not set and Label Studio "
                "has not called /setup for this project yet"
            )
        self.queue.reap_dead_workers()  # a dead training worker's run is handed on first
        return {"status": "ok", "training": self.runs.request(self.queue.train_queue, jobs.train_project, pid)}

    def annotated(self, project: int) -> dict:
        """One more new or updated annotation of ``project``: a run starts at every multiple of
        ``DEXTR_TRAIN_EVERY``."""
        count = self.runs.count_annotation(project)
        due = count % self.settings.train_every == 0
        return {"annotations_since_start": count, **(self.start(project) if due else {"training": "not yet"})}

    def status(self) -> dict:
        return {"jobs": self.runs.status(heartbeat)}


class NoTraining:
    """The in-process server: no training workers to run anything on."""

    def start(self, project) -> dict:
        training_project(project)
        raise ServiceUnavailable(NEEDS_QUEUE)

    def annotated(self, project: int) -> dict:
        return {"training": "needs REDIS_URL and a project"}

    def status(self) -> dict:
        raise ServiceUnavailable("training status lives in Redis: set REDIS_URL")


def make_training(settings: Settings, segmenter) -> QueueTraining | NoTraining:
    """Runs on the queue where ``REDIS_URL`` is set (beside the queue segmenter), else none."""
    return QueueTraining(settings, segmenter.queue, segmenter.setups) if settings.redis_url else NoTraining()
