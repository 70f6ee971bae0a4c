"""A Label Studio project's accepted regions as a benchmark-layout folder, for training."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError


def export_labelstudio(client, project: int, folder: str | Path, image_key: str | None = None) -> Path:
    """Write a project's accepted brush and polygon regions as a benchmark-layout folder.

    ``images/<task>.<ext>`` holds each task's picture, fetched through the client's checked fetch
    (Label Studio's origin with its token, the client's ``allowed_hosts`` without, nothing else);
    ``masks/<k>_<task>.png`` one region each (the COCO-MVal naming ``folder_objects`` reads).
    The picture is the task data value the project's label config names (``image_key`` overrides).
    A picture that cannot be fetched fails the export with the task named: training on fewer
    pictures than the project has would hide the misconfiguration.
    Re-running refreshes the folder, so training always sees the project as it is now.
    """
    import shutil

    from ..errors import DextrError
    from ..imageio import decode_image
    from .fetch import shown
    from .protocol import LabelConfig, task_image_url
    from .regions import accepted_annotation, result_regions

    image_key = image_key or LabelConfig.parse(client.project(project).get("label_config", "")).image_key()
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    (staging / "masks").mkdir()
    count = 0
    for task in client.tasks(project):
        ann = accepted_annotation(task)
        regions = result_regions(ann["result"]) if ann else []
        if not regions:
            continue
        url = task_image_url(task, image_key)
        tid = int(task["id"])
        try:
            image = decode_image(client.fetch(url), shown(url))
        except DextrError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise type(exc)(f"project {project} task {tid}: {exc}") from None
        cv2.imwrite(str(staging / "images" / f"{tid}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        for k, region in enumerate(regions):
            if region.mask.shape != image.shape[:2]:
                region_mask = (
                    cv2.resize(region.mask.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
                )
            else:
                region_mask = region.mask
            cv2.imwrite(str(staging / "masks" / f"{k}_{tid}.png"), region_mask.astype(np.uint8) * 255)
            count += 1
    if count == 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"project {project} has no accepted brush or polygon regions to train on")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder
