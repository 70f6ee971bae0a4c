"""A trained version's model card and metrics: where its data came from, how it was trained and
examined, and the promotion decision with its numbers, interval and rule, so that an admin can
explain the version to a team without rerunning anything."""

from __future__ import annotations

import platform
from dataclasses import asdict

import torch

from .crossval import Plan
from .decision import Decision
from .scoring import CLICK_JITTER, CLICK_SETS
from .trainer import TrainConfig


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def outcome_metrics(decision: Decision, current: str | None, clicks: int | None) -> dict:
    """The numbers ``weights list`` shows: each exam's mean for both versions and the paired gain
    with its interval (``gain_low``, ``gain_high``; ``guard_...`` on the guard folder)."""
    out: dict[str, float | str | None] = {}
    for exam, key, gain in (
        (decision.exam("labels"), "val_miou", "gain"),
        (decision.exam("guard"), "guard_miou", "guard_gain"),
        (decision.exam("labels after 2 corrections"), f"val_miou_{clicks}", f"gain_{clicks}"),
    ):
        if exam is None:
            continue
        out[key] = _r(exam.candidate)
        if exam.incumbent is not None:
            many = exam.objects > 1  # one object gives no interval
            out.update(
                {
                    f"baseline_{key}": _r(exam.incumbent),
                    gain: _r(exam.gain),
                    f"{gain}_low": _r(exam.low) if many else None,
                    f"{gain}_high": _r(exam.high) if many else None,
                }
            )
    if current is not None:
        out["baseline_version"] = current
    return out


def _folds(plan: Plan, runs: list[dict]) -> list[dict]:
    return [
        {
            "part": r["part"].name,
            "train_objects": len(r["part"].train),
            "test_objects": len(r["part"].test),
            "epochs_done": r["epochs_done"],
            "stopped": r["stopped"],
            "minutes": round(r["seconds"] / 60, 2),
        }
        for r in runs
        if r["part"] is not plan.shipped
    ]


def model_card(
    *,
    source: dict,
    config: TrainConfig,
    plan: Plan,
    runs: list[dict],
    decision: Decision,
    metrics: dict,
    parent: str | None,
    guard,
    guard_objects: list | None,
    minutes: float,
    keep_last: bool,
    freeze_bn: bool | None,
    device,
) -> dict:
    """The card ``store.add_version`` keeps with the weights (``weights show VERSION``)."""
    shipped, last = plan.shipped, runs[-1]
    examined = plan.exam_objects
    cross = plan.scheme["kind"] == "cross-validation"
    return {
        "data": {
            **source,
            "train_objects": len(shipped.train),
            "val_objects": len(examined),
            "train_images": len({r.image for r in shipped.train}),
            "val_images": len({r.image for r in examined}),
        },
        "evaluation": {
            **plan.scheme,
            "click_sets": CLICK_SETS,
            "jitter_px": CLICK_JITTER,
            "seed": config.seed,
            "clicks": "set 0: the exact extreme points; the others jittered by up to "
            f"{CLICK_JITTER} px, the same for both versions",
        },
        "hyper_parameters": {k: v for k, v in asdict(config).items() if k != "augment"}
        | {"augment": asdict(config.augment), "freeze_bn": freeze_bn},
        "metrics": metrics,
        "parent": parent,
        "guard": ({"path": str(guard), "objects": len(guard_objects)} if guard_objects else None),
        "duration_minutes": round(minutes, 2),
        "history": last["history"],
        "folds": _folds(plan, runs),
        "stopped": last["stopped"],
        "kept": (
            "last epoch (cross-validated: no per-epoch validation)"
            if cross
            else "last epoch"
            if keep_last and last["epochs_done"]
            else "best epoch by validation"
        ),
        "promoted": decision.promoted,
        "decision": decision.sentence,
        "rule": decision.rule,
        "promotion": decision.to_dict(),
        "forced": decision.forced,
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)},
    }


__all__ = ["model_card", "outcome_metrics"]
