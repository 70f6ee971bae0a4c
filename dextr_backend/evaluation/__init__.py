"""Benchmarking: simulate clicks, score masks, report (the folders it reads: ``data.benchmarks``).

Programmatic use (training compares two models on exactly the same clicks)::

    from dextr_backend.data.benchmarks import load_dataset
    from dextr_backend.evaluation import evaluate_objects
    objects = list(load_dataset("../shared/data/GrabCut"))
    a = evaluate_objects(predictor_a, objects, jitter=5, seed=0)
    b = evaluate_objects(predictor_b, objects, jitter=5, seed=0)
    print(a.miou, b.miou)
"""

from .grabcut import grabcut_baseline
from .metrics import iou, mean_iou
from .report import write_report
from .results import EvalResult, ObjectResult
from .runner import evaluate_objects

__all__ = ["EvalResult", "ObjectResult", "evaluate_objects", "grabcut_baseline", "iou", "mean_iou", "write_report"]
