"""``dextr-backend train``: fine-tune the current weights on a folder or a Label Studio project,
and promote the result unless it is measurably worse (``training.decision``).

It runs over 300 lines: one command, whose options (in five groups), checks and sources of
labels are read together.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from ..settings import Settings

FORMATS = ("auto", "bsds", "grabcut", "half", "nonzero", "instances")


def part_list(text: str) -> tuple[str, ...]:
    """``--freeze backbone, decoder`` -> ``("backbone", "decoder")`` (an argparse type)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune on new labels; promote unless measurably worse",
        description="Fine-tune a weights version on a dataset folder or a Label Studio project. The new "
        "version and the current one are scored on the same held-out objects with the same "
        "click sets (the exact extreme points and 2 jittered sets); the new one becomes current "
        "unless the 95% bootstrap interval of the paired gain lies wholly below -0.5 points, or "
        "on the --guard objects reaches below -2 (--force overrides; `weights use` rolls back). "
        "Re-running the same command after a kill resumes where it stopped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  dextr-backend train --dataset ../shared/data/DAVIS --epochs 5 --max-minutes 10\n"
        "  dextr-backend train --labelstudio-url http://localhost:8080 --project 3 --api-key $KEY\n"
        "  dextr-backend train --dataset ../shared/data/BSDS500 --format bsds --init imagenet:lite0",
    )
    _add_label_arguments(p.add_argument_group("labels"))
    _add_network_arguments(p.add_argument_group("what trains"))
    _add_training_arguments(p.add_argument_group("training"))
    _add_promotion_arguments(p.add_argument_group("validation and promotion"))
    _add_run_arguments(p.add_argument_group("run"))
    p.set_defaults(func=run)


def _add_label_arguments(group: argparse._ArgumentGroup) -> None:
    """Where the labelled objects come from: a folder or a Label Studio project."""
    src = group.add_mutually_exclusive_group()
    src.add_argument(
        "--dataset",
        help="folder in a benchmark layout (images|img|data_GT + masks|gt|boundary_GT), "
        "plain images/ + masks/ with instance ids, or BSDS500",
    )
    src.add_argument(
        "--labelstudio-url",
        default=None,
        help="Label Studio base URL (default: $LABEL_STUDIO_URL when --project is given)",
    )
    group.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="how the folder's masks encode objects (default: auto; bsds for BSDS500)",
    )
    group.add_argument("--project", type=int, help="Label Studio project id")
    group.add_argument("--api-key", default=None, help="Label Studio token (default: $LABEL_STUDIO_API_KEY)")
    group.add_argument(
        "--drop-background",
        action="store_true",
        help="BSDS500 only: leave out regions spanning the image side to side (sky, ground, walls)",
    )
    group.add_argument(
        "--min-area",
        type=float,
        default=None,
        metavar="FRACTION",
        help="BSDS500 only: leave out regions smaller than this share of their picture "
        "(default: 0.01; larger values keep whole objects rather than their parts)",
    )


def _add_network_arguments(group: argparse._ArgumentGroup) -> None:
    """The network a run starts from, what it grows into and which of its parts learn."""
    group.add_argument(
        "--init",
        default=None,
        help="weights version to start from (default: the current one); "
        "imagenet:lite0 starts from the ImageNet backbone alone",
    )
    group.add_argument(
        "--arch",
        default=None,
        help="grow the --init version into this architecture, e.g. lite0r (lite0 + a stride-2 "
        "boundary refiner), lite0c (lite0 frozen + a corrector for corrective clicks) or lite0h "
        "(lite0 frozen + a small correction head for them); "
        "default: the --init version's own",
    )
    group.add_argument(
        "--freeze",
        type=part_list,
        default=(),
        metavar="PARTS",
        help="comma-separated parts of the network left untrained, e.g. backbone,decoder to train "
        "only lite0r's new refiner (default: none)",
    )
    group.add_argument(
        "--corrections",
        type=int,
        default=3,
        metavar="K",
        help="architectures that take corrective clicks (lite0c, lite0h): each sample gets 1 to K "
        "simulated clicks, each placed on the errors of the network's latest answer "
        "(default: 3)",
    )
    group.add_argument(
        "--error-weight",
        type=float,
        default=1.0,
        metavar="W",
        help="corrections architectures: the loss weighs the pixels pass 1 got wrong W times the "
        "others (default: 1, the plain class-balanced loss)",
    )


def _add_training_arguments(group: argparse._ArgumentGroup) -> None:
    """How long and how each training runs: epochs, samples, optimiser, augmentation, time budget."""
    group.add_argument("--epochs", type=int, default=10, help="epochs (default: 10)")
    group.add_argument(
        "--samples-per-epoch",
        type=int,
        default=None,
        help="augmented samples per epoch (default: 10 per training object, 200 to 2000)",
    )
    group.add_argument("--batch-size", type=int, default=8, help="batch size (default: 8)")
    group.add_argument(
        "--lr",
        type=float,
        default=None,
        help="decoder learning rate (default: 1e-3, 3e-4 for fine-tuning a trained version)",
    )
    group.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="crop side to train at; the new version works at it (default: the --init version's)",
    )
    group.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 autocast on the CPU: faster only on CPUs with native bf16 (avx512_bf16/amx), "
        "several times slower elsewhere; GPUs always use AMP",
    )
    group.add_argument(
        "--ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="keep a moving average of the weights (e.g. 0.998) and validate and ship it (default: off)",
    )
    group.add_argument(
        "--color-jitter",
        type=float,
        default=0.0,
        metavar="STRENGTH",
        help="scale each sample's brightness, contrast and saturation by up to +-STRENGTH, e.g. 0.2 "
        "(default: 0, off as in the paper)",
    )
    group.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop after this many minutes of this sitting; the best epoch so far becomes the version (default: none)",
    )
    group.add_argument("--patience", type=int, default=3, help="epochs without validation gain before stopping")
    group.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _add_promotion_arguments(group: argparse._ArgumentGroup) -> None:
    """Which objects examine the new version, and when it becomes current."""
    group.add_argument("--val-fraction", type=float, default=0.1, help="share of images held out (default: 0.1)")
    group.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="K",
        help="for small label sets: decide by K-fold cross-validation over the images (every "
        "object is scored once by a model that never trained on it), then train the shipped "
        "version on all of them; K+1 trainings, a fold's (K-1)/K of --epochs long, sharing --max-minutes "
        "(default: 0, a --val-fraction hold-out)",
    )
    group.add_argument(
        "--val-objects", type=int, default=200, help="validation objects scored per epoch (default: 200)"
    )
    group.add_argument(
        "--guard",
        metavar="DIR",
        default=None,
        help="a folder of whole objects you care about and never train on, in a layout `evaluate` "
        "reads; the new version must not lose more than 2 points there on average (its "
        "95%% interval is reported); it also catches labels that teach something other than the "
        "outlines; with a hold-out split it is also scored after every epoch "
        "(default: $DEXTR_TRAIN_GUARD_DIR)",
    )
    group.add_argument(
        "--min-val-objects",
        type=int,
        default=None,
        metavar="N",
        help="promote only when validated on at least N objects (default: $DEXTR_TRAIN_MIN_VAL_OBJECTS, else 3)",
    )
    group.add_argument("--force", action="store_true", help="make the new version current even if it is worse")
    group.add_argument("--name", default=None, help="name of the new version (default: v1, v2, ...)")


def _add_run_arguments(group: argparse._ArgumentGroup) -> None:
    """Where the run keeps its checkpoints and what it runs on."""
    group.add_argument("--run-dir", default=None, help="checkpoint folder (default: under $DEXTR_WEIGHTS_DIR/runs)")
    group.add_argument(
        "--fresh", action="store_true", help="start over: discard the run folder's checkpoint instead of resuming it"
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default: auto)")
    group.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: $DEXTR_THREADS, else the CPUs this process may use)",
    )


def load_refs(args: argparse.Namespace, settings: Settings):
    """The objects and a description of where they came from (for the model card)."""
    from ..data.objects import bsds_regions, folder_hash, folder_objects

    if args.dataset:
        root = Path(args.dataset)
        if not root.is_dir():
            raise InputError(f"dataset folder {root} does not exist")
        if args.format == "bsds" or (args.format == "auto" and (root / "segmentations").is_dir()):
            area = {} if args.min_area is None else {"min_area": args.min_area}
            refs = bsds_regions(root, drop_background=args.drop_background, **area)
            fmt = "bsds" + ("-objects" if args.drop_background else "")
            if area:
                fmt += f"-min{args.min_area:g}"
        else:
            refs = folder_objects(root, args.format)
            fmt = args.format
        return refs, {"kind": "folder", "path": str(root.resolve()), "format": fmt, "hash": folder_hash(root)}
    from ..labelstudio.client import LabelStudioClient
    from ..labelstudio.retrain import export_project

    url = args.labelstudio_url or settings.label_studio_url
    if not url or args.project is None:
        raise InputError("--labelstudio-url (or $LABEL_STUDIO_URL) and --project are needed to train from Label Studio")
    client = LabelStudioClient(
        url,
        args.api_key or settings.label_studio_api_key,
        allowed_hosts=settings.allowed_hosts,
        fetch_timeout=settings.fetch_timeout,
    )
    return export_project(settings, client, args.project)


def _check_args(args: argparse.Namespace) -> None:
    """Values argparse cannot check alone, refused before anything is loaded."""
    if args.labelstudio_url is None and args.dataset is None:
        raise InputError("give --dataset DIR or --labelstudio-url URL --project ID")
    if not 0.0 <= args.ema < 1.0:
        raise InputError(f"--ema {args.ema}: the decay must lie in [0, 1), e.g. 0.998 (0 = off)")
    if not 0.0 <= args.color_jitter < 1.0:
        raise InputError(f"--color-jitter {args.color_jitter}: the strength must lie in [0, 1), e.g. 0.2 (0 = off)")
    if args.error_weight <= 0:
        raise InputError(f"--error-weight {args.error_weight}: a positive weight, e.g. 4 (1 = off)")
    if args.corrections < 1:
        raise InputError(f"--corrections {args.corrections}: at least 1 simulated click per sample")
    if args.folds == 1 or args.folds < 0:
        raise InputError(f"--folds {args.folds}: 2 or more folds to cross-validate (0 = a hold-out split)")


def _train_config(args: argparse.Namespace, threads: int | None, n_train: int):
    """The loop's settings from the command line; a trained start fine-tunes at a gentler rate."""
    from ..training.samples import Augment
    from ..training.trainer import TrainConfig

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_minutes=args.max_minutes,
        patience=args.patience,
        seed=args.seed,
        threads=threads,
        val_objects=args.val_objects,
        resolution=args.resolution,
        cpu_bf16=args.bf16,
        ema_decay=args.ema,
        samples_per_epoch=args.samples_per_epoch or min(2000, max(200, 10 * n_train)),
        freeze=args.freeze,
        corrections=args.corrections,
        error_weight=args.error_weight,
        augment=Augment(color=args.color_jitter),
    )
    if args.lr is not None:
        config.lr = args.lr
    elif not (args.init or "").startswith("imagenet:"):
        config.lr = 3e-4  # fine-tuning a trained version: gentler than training from ImageNet
    return config


def run(args: argparse.Namespace) -> int:
    from ..threads import configure_threads
    from ..training.promotion import TrainRequest, train_and_promote

    _check_args(args)
    settings = Settings.from_env()
    threads = configure_threads(args.threads if args.threads is not None else settings.threads)
    min_val = settings.train_min_val_objects if args.min_val_objects is None else args.min_val_objects
    guard = args.guard if args.guard is not None else (settings.train_guard_dir or None)
    refs, source = load_refs(args, settings)
    config = _train_config(args, threads, len(refs))
    outcome = train_and_promote(
        TrainRequest(
            refs,
            source,
            config,
            init=args.init,
            arch=args.arch,
            name=args.name,
            guard=guard,
            folds=args.folds,
            val_fraction=args.val_fraction,
            min_val_objects=min_val,
            fresh=args.fresh,
            force=args.force,
            run_dir=args.run_dir,
            device=args.device,
        )
    )
    verdict = "now current" if outcome.promoted else "kept, not current"
    print(
        f"{outcome.version.name}: {verdict}. {outcome.reason} ({outcome.minutes:.1f} min, stopped: {outcome.stopped})"
    )
    print(f"rule: {outcome.decision['rule']}")
    print(json.dumps(outcome.summary()))
    return 0
