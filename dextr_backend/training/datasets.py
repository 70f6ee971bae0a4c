"""Objects to train on: every region of an image counts as one object.

A dataset is a list of :class:`ObjectRef` plus a way to load its image and mask, so that
BSDS500 regions, benchmark-layout folders and Label Studio tasks all look the same to the
trainer. The train/validation split is by image and deterministic (a hash of the image key).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from ..evaluation.datasets import decode_objects, load_dataset, read_mask_file
from ..imageio import read_image


@dataclass(frozen=True)
class ObjectRef:
    image: str        # path of the picture
    source: str       # path of the mask file holding the object
    label: int        # value of the object in a label map, or its index among the file's objects
    area: int
    fmt: str = "labels"   # "labels" (value == label) or an evaluation mask format (see decode_objects)


def is_validation(image_key: str, fraction: float = 0.1) -> bool:
    """Deterministic split by image: the same image is always on the same side."""
    digest = hashlib.sha1(Path(image_key).stem.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


@lru_cache(maxsize=512)
def _label_map(path: str) -> np.ndarray:
    return read_mask_file(Path(path))


@lru_cache(maxsize=512)
def _image(path: str) -> np.ndarray:
    return read_image(path)


@lru_cache(maxsize=512)
def _decoded(path: str, fmt: str) -> list[np.ndarray]:
    return [obj for _, obj, _ in decode_objects(read_mask_file(Path(path)), fmt)]


def load_object(ref: ObjectRef) -> tuple[np.ndarray, np.ndarray]:
    """``(RGB image, bool mask)`` of one object."""
    if ref.fmt == "labels":
        return _image(ref.image), _label_map(ref.source) == ref.label
    return _image(ref.image), _decoded(ref.source, ref.fmt)[ref.label]


def folder_objects(root: str | Path, mask_format: str = "auto", min_area: int = 64) -> list[ObjectRef]:
    """Objects of a benchmark-layout folder (the layouts ``evaluate`` reads), including the plain
    ``images/`` + ``masks/`` layout whose masks hold instance ids."""
    ds = load_dataset(root, mask_format)
    refs = []
    for pair in ds.pairs:
        fmt = ds.rule
        for i, obj in enumerate(_decoded(str(pair.mask_path), fmt)):
            if obj.sum() >= min_area:
                refs.append(ObjectRef(str(pair.image_path), str(pair.mask_path), i, int(obj.sum()), fmt))
    if not refs:
        raise InputError(f"{root}: no objects of at least {min_area} pixels")
    return refs


def spans_image(mask: np.ndarray) -> bool:
    """True for a region touching two opposite borders: sky, ground, water, walls - background
    "stuff" rather than an object anyone would outline with four clicks."""
    return bool((mask[:, 0].any() and mask[:, -1].any()) or (mask[0].any() and mask[-1].any()))


def bsds_regions(root: str | Path, min_area: float = 0.01, max_area: float = 0.8,
                 drop_background: bool = False) -> list[ObjectRef]:
    """BSDS500 human segmentations (``segmentations/<id>_<k>.png``, uint16 region labels).

    Most regions are tiny, so keep those covering ``min_area`` to ``max_area`` of the image;
    ``drop_background`` also leaves out regions spanning the image side to side (16 % of them).
    """
    if not 0.0 <= min_area < max_area:
        raise InputError(f"minimum region area {min_area:g} must be a share of the picture from 0 to below "
                         f"{max_area:g}")
    root = Path(root)
    seg_dir, img_dir = root / "segmentations", root / "images"
    if not seg_dir.is_dir() or not img_dir.is_dir():
        raise InputError(f"{root}: not a BSDS500 folder (needs images/ and segmentations/)")
    refs = []
    for seg in sorted(seg_dir.glob("*.png")):
        image = img_dir / (seg.stem.rsplit("_", 1)[0] + ".jpg")
        if not image.exists():
            continue
        labels = read_mask_file(seg)
        values, counts = np.unique(labels, return_counts=True)
        total = labels.size
        for v, c in zip(values, counts):
            if v != 0 and min_area * total <= c <= max_area * total:
                if drop_background and spans_image(labels == v):
                    continue
                refs.append(ObjectRef(str(image), str(seg), int(v), int(c)))
    if not refs:
        raise InputError(f"{root}: no regions found")
    return refs


def file_digest(path: str | Path) -> bytes:
    """sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").digest()


def objects_key(refs: list[ObjectRef]) -> str:
    """sha1 over which objects a run trains on, by content: the bytes of every image and mask file
    (each hashed once) plus which object of the mask each one is. A resumed run must never train on
    labels corrected since its checkpoint, and two runs that filter the same folder differently
    (``--min-area``, ``--drop-background``) must never resume each other's checkpoint."""
    digests: dict[str, str] = {}

    def digest_of(path: str) -> str:
        if path not in digests:
            digests[path] = file_digest(path).hex()
        return digests[path]

    digest = hashlib.sha1()
    for ref in refs:
        digest.update(f"{digest_of(ref.image)}|{digest_of(ref.source)}|{ref.label}|{ref.fmt}\n".encode())
    return digest.hexdigest()


def spread(refs: list[ObjectRef], n: int) -> list[ObjectRef]:
    """``n`` objects evenly spaced through ``refs``: a capped validation set still covers every
    image instead of the first few (the list is ordered by image)."""
    if n >= len(refs):
        return list(refs)
    return [refs[int(i * len(refs) / n)] for i in range(n)]


def split(refs: list[ObjectRef], fraction: float = 0.1) -> tuple[list[ObjectRef], list[ObjectRef]]:
    train = [r for r in refs if not is_validation(r.image, fraction)]
    val = [r for r in refs if is_validation(r.image, fraction)]
    return train, val


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
    from ..labelstudio.fetch import shown
    from ..labelstudio.protocol import LabelConfig, task_image_url
    from ..labelstudio.regions import accepted_annotation, result_regions

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
                region_mask = cv2.resize(region.mask.astype(np.uint8), image.shape[1::-1],
                                         interpolation=cv2.INTER_NEAREST) > 0
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


def folder_hash(folder: str | Path) -> str:
    """sha256 over every file's relative path and content: names the exact data a model saw."""
    h = hashlib.sha256()
    root = Path(folder)
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        h.update(str(p.relative_to(root)).encode())
        h.update(file_digest(p))
    return h.hexdigest()


def as_eval_objects(refs: list[ObjectRef]):
    """The objects in the form ``evaluation.evaluate_objects`` scores, so training and
    ``evaluate`` measure alike."""
    from ..evaluation.datasets import EvalObject

    for i, ref in enumerate(refs):
        image, mask = load_object(ref)
        yield EvalObject(Path(ref.image), f"{Path(ref.source).stem}:{ref.label}", mask,
                         np.zeros(mask.shape, bool), image=image)
