"""How much can a finer output stride gain at most? Push the ground truth itself through the network's path.

Each object's true mask is cropped and resized exactly as the image would be (extreme points,
50 px margin, the working size), averaged down to the logits' grid (stride 4 for ``lite0``,
2 for ``lite0r``'s refiner), upsampled back as the network's logits are, pasted into the picture
and cut at 0.5. The mIoU of these masks is the best any network with that output stride could
score; the gap to the model's own mIoU is what better features, not a finer grid, must close.

    python benchmarks/stride_ceiling.py ../shared/data/GrabCut --strides 1,2,4,8
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from dextr_backend import geometry
from dextr_backend.data.benchmarks import load_dataset
from dextr_backend.errors import DextrError
from dextr_backend.evaluation.metrics import iou
from dextr_backend.settings import Settings


def ceiling(objects, stride: int, size: int) -> float:
    """mIoU (percent) of the true masks after a round trip through a ``stride`` grid."""
    scores = []
    for obj in objects:
        points = geometry.extreme_points(obj.mask)
        as_image = np.repeat(obj.mask.astype(np.uint8)[:, :, None] * 255, 3, axis=2)
        x, crop = geometry.prepare_input(as_image, points, size)
        share = np.clip(
            cv2.resize(x[:, :, 0] / 255.0, (size // stride, size // stride), interpolation=cv2.INTER_AREA),
            1e-4,
            1 - 1e-4,
        )
        logits = cv2.resize(np.log(share / (1 - share)), (size, size), interpolation=cv2.INTER_LINEAR)
        prob = geometry.paste_back(1 / (1 + np.exp(-logits)), crop)
        scores.append(iou(prob > 0.5, obj.mask, obj.ignore))
    return 100 * float(np.mean(scores))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("datasets", nargs="+", help="benchmark folders (layouts as for `dextr-backend evaluate`)")
    p.add_argument("--strides", default="1,2,4", help="output strides to try (default 1,2,4)")
    p.add_argument("--size", type=int, default=384, help="the network's working size (default 384)")
    args = p.parse_args(argv)
    try:
        strides = [int(s) for s in args.strides.split(",")]
        print(f"{'dataset':<40} " + " ".join(f"{'stride ' + str(s):>9}" for s in strides))
        for root in args.datasets:
            objects = list(load_dataset(root, shared_data=Settings.from_env().shared_data))
            print(f"{str(root)[-40:]:<40} " + " ".join(f"{ceiling(objects, s, args.size):>9.2f}" for s in strides))
    except (DextrError, ValueError) as exc:  # bad folder or stride list: one line, not a traceback
        p.exit(2, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
