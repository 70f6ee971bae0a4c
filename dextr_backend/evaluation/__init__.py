"""Benchmarking: read interactive-segmentation datasets, simulate clicks, score masks, report.

Programmatic use (training compares two models on exactly the same clicks)::

    from dextr_backend.evaluation import load_dataset, evaluate_objects
    objects = list(load_dataset("../shared/data/GrabCut"))
    a = evaluate_objects(predictor_a, objects, jitter=5, seed=0)
    b = evaluate_objects(predictor_b, objects, jitter=5, seed=0)
    print(a.miou, b.miou)
"""

from .datasets import Dataset, EvalObject, load_dataset
from .grabcut import grabcut_baseline
from .metrics import iou, mean_iou
from .report import write_report
from .runner import EvalResult, ObjectResult, evaluate_objects

__all__ = ["Dataset", "EvalObject", "EvalResult", "ObjectResult", "evaluate_objects", "grabcut_baseline",
           "iou", "load_dataset", "mean_iou", "write_report"]
