"""DEXTR as a CVAT *native* interaction function, served by ``cvat-cli``'s agent.

Register it once, then keep an agent running next to the model (any machine that can reach CVAT)::

    cvat-cli --server-host https://cvat.example.com --auth USER function create-native "DEXTR" \\
        --function-file dextr_backend/cvat/native.py
    cvat-cli --server-host https://cvat.example.com --auth USER function run-agent FUNCTION_ID \\
        --function-file dextr_backend/cvat/native.py

(``--function-module dextr_backend.cvat.native`` works too once the package is installed; the
file is loaded under another module name by ``--function-file``, so it imports the package by
absolute names only.)

Prompts (the rule of :mod:`dextr_backend.service.prompts`, the same as Label Studio's):

- **four positive points** are the extreme points: the classic DEXTR clicks;
- **a box** with fewer points works: its side midpoints stand in for the extreme points;
- **every other point corrects the mask**: positive points after the fourth (all of them after a
  box) and every negative point (``min_neg_points=0``, so CVAT offers negative clicks), all at
  once, by the version's corrector; a version that takes none ignores them, and the log says so.

Why ``min_pos_points=0`` and not 4: the agent refuses any request with fewer positive points
than ``min_pos_points`` *even when it carries a box*, and CVAT's UI sends nothing until that many
points are placed, so ``min_pos_points=4`` would make a box alone unusable. With 0 (and the box
optional, ``min_bounding_boxes=0``), requests with one to three clicks and no box get no shape
back, so CVAT shows no mask until the fourth click.

The result is one ``mask`` shape (the only type CVAT's UI uses from interactors), encoded with
:func:`cvat_sdk.masks.encode_mask`, with the model's confidence (mean probability inside the
mask) as the ``CONFIDENCE`` attribute. ``preprocess_image`` decodes the frame once; the agent
caches its result, so further clicks on the same frame skip the decoding.

The predictor is the process's resident one (:mod:`dextr_backend.service.resident`), loaded on
first use: weights ``$DEXTR_WEIGHTS`` (a version name or a ``.pt`` file; default the current
version, taken up again when training promotes a new one), device ``$DEXTR_DEVICE``.
"""

from __future__ import annotations

import logging

import cvat_sdk.auto_annotation as cvataa
import numpy as np
import PIL.Image
from cvat_sdk import models
from cvat_sdk.masks import encode_mask

from dextr_backend.cvat.prompts import cvat_prompt
from dextr_backend.service import resident
from dextr_backend.service.segmentation import segment_picture

log = logging.getLogger("dextr_backend.cvat.native")

spec = cvataa.InteractionFunctionSpec(min_pos_points=0, min_neg_points=0, min_bounding_boxes=0)


def image_array(image: PIL.Image.Image) -> np.ndarray:
    """A frame as a read-only RGB uint8 ``(H, W, 3)`` array."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    arr = np.array(image, dtype=np.uint8)
    arr.setflags(write=False)  # cached by the agent and shared between clicks
    return arr


def preprocess_image(context: cvataa.InteractionFunctionContext, image: PIL.Image.Image) -> np.ndarray:
    """Decode the frame once; the agent keeps the result for further clicks on it."""
    return image_array(image)


def detect(
    context: cvataa.InteractionFunctionContext, image, prompts: cvataa.InteractionPrompts
) -> list[cvataa.InteractionResultShape]:
    """One mask shape for the object the prompts point at (none while the prompts are not enough)."""
    if isinstance(image, PIL.Image.Image):  # called without preprocess_image
        image = image_array(image)
    height, width = image.shape[:2]
    prompt = cvat_prompt(prompts.pos_points, prompts.neg_points, prompts.bounding_box, width, height)
    if prompt is None:
        return []
    pred = segment_picture(resident.shared().get(), image, prompt)
    if not pred.mask.any():
        return []
    confidence = models.AttributeValRequest(
        spec_id=int(cvataa.InteractionResultAttributes.CONFIDENCE), value=f"{min(max(pred.score, 0.0), 1.0):.4f}"
    )
    return [cvataa.InteractionResultShape(type="mask", points=encode_mask(pred.mask), attributes=[confidence])]
