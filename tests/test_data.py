"""data/: object references whose decoded files are never served stale after a re-export."""

from __future__ import annotations

import cv2
import numpy as np

from dextr_backend.data.objects import folder_objects, load_object


def write_folder(root, value: int):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    image = np.full((40, 50, 3), value, np.uint8)
    mask = np.zeros((40, 50), np.uint8)
    mask[10:30, 10 : 20 + value // 20] = 255
    cv2.imwrite(str(root / "images" / "1.png"), image)
    cv2.imwrite(str(root / "masks" / "0_1.png"), mask)


def test_a_re_export_under_the_same_paths_is_read_afresh(tmp_path):
    write_folder(tmp_path, 40)
    (ref,) = folder_objects(tmp_path, min_area=1)
    image, mask = load_object(ref)
    assert image[0, 0, 0] == 40 and mask.sum() == 20 * 12
    write_folder(tmp_path, 200)  # the project was exported again: same file names
    (ref,) = folder_objects(tmp_path, min_area=1)
    image, mask = load_object(ref)
    assert image[0, 0, 0] == 200 and mask.sum() == 20 * 20
