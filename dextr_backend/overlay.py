"""Pictures for people: a mask drawn over its image with the clicked points."""

from __future__ import annotations

import cv2
import numpy as np


def draw_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    points=None,
    *,
    color=(255, 40, 40),
    alpha: float = 0.45,
    truth: np.ndarray | None = None,
    text: str | None = None,
) -> np.ndarray:
    """RGB copy of ``image`` with ``mask`` tinted, its outline, optional ground truth outline (green),
    the clicks as dots and a caption."""
    out = image.copy()
    m = mask.astype(bool)
    tint = np.array(color, dtype=np.float32)
    out[m] = (out[m] * (1 - alpha) + tint * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, color, 1)
    if truth is not None:
        gt, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, gt, -1, (40, 220, 40), 1)
    r = max(3, round(min(image.shape[:2]) / 120))
    for x, y in points if points is not None else []:
        cv2.circle(out, (int(round(x)), int(round(y))), r + 1, (0, 0, 0), -1)
        cv2.circle(out, (int(round(x)), int(round(y))), r, (255, 230, 0), -1)
    if text:
        cv2.putText(out, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return out
