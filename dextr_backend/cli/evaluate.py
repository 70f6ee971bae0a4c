"""``dextr-backend evaluate``: mIoU and speed of a weights version on a benchmark folder.

Results go to stdout (a human summary, then with ``--json`` one JSON line last); the progress
bar and logs go to stderr, so ``... --json | tail -n 1`` is always parseable.

It runs over 300 lines: one command, whose options, side-by-side correctors and printed
tables are read together.
"""

from __future__ import annotations

import argparse
import json
import logging

from ..data.benchmarks import MASK_FORMATS, load_dataset
from ..errors import InputError
from ..evaluation.runner import BASELINES, evaluate_objects
from .options import add_engine

log = logging.getLogger(__name__)

WORST = 8

EPILOG = """\
dataset layouts (matched by file stem):
  <DATASET>/images|img|data_GT/<id>.jpg|jpeg|png|bmp   pictures
  <DATASET>/masks|gt|boundary_GT/<id>.png|bmp           masks, one object per file;
      COCO-MVal style <class><k>_<id>.png gives several objects per picture
mask conventions (--mask-format auto picks by folder):
  boundary_GT -> grabcut : 255 object, 128 unknown band left out of IoU, 0 background
  masks       -> half    : object where value > 127 (max over RGB); a gray/16-bit mask
                           with only small values 1..K holds instance ids
  gt          -> nonzero : any non-zero value is the object
  instances   : every distinct non-zero value is a separate object

clicks are the 4 extreme points of the ground truth (seeded per object, so two runs
with the same --seed and --jitter see identical points).

--max-clicks N adds corrective clicks 5..N, each placed on the method's own current mask:
in the largest connected error region (missed object: positive, false object: negative,
the ignore band left out), at its point farthest from the region's boundary. A request
with corrections is served as always: pass 1 from the extreme points, then one pass with
all corrective clicks; versions without corrections ignore them (a flat curve). Reported:
NoC@85 / NoC@90 (mean clicks to reach IoU 0.85 / 0.90, the 4 extreme points included,
capped at N), NoF@90 (objects still under 0.90 after N clicks) and mIoU after 4..N clicks.

examples:
  dextr-backend evaluate ../shared/data/GrabCut --baseline grabcut --out runs/grabcut
  dextr-backend evaluate ../shared/data/DAVIS --weights my-model.pth --jitter 5 --json
"""


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _at_least_four(text: str) -> int:
    value = _non_negative(text)
    if value < 4:
        raise argparse.ArgumentTypeError(f"counts the 4 extreme points: must be 4 or more, got {value}")
    return value


def _methods(text: str) -> tuple[str, ...]:
    from ..correctors import parse_method

    methods = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    if not methods:
        raise argparse.ArgumentTypeError("name at least one corrector")
    for m in methods:
        if m not in ("auto", "none"):
            try:
                parse_method(m)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
    return methods


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="measure mIoU and speed on a benchmark folder",
        description="Simulate 4 extreme clicks per ground-truth object, predict a mask and report "
        "the mean IoU (percent) and milliseconds per object.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _objects_args(p.add_argument_group("what is scored"))
    _click_args(p.add_argument_group("clicks"))
    _run_args(p.add_argument_group("running"))
    _output_args(p.add_argument_group("output"))
    p.set_defaults(func=run)
    return p


def _objects_args(g) -> None:
    """What is scored: the benchmark, the weights, a classic baseline."""
    g.add_argument(
        "dataset",
        metavar="DATASET",
        help="benchmark folder (see layouts below), or a folder name under $DEXTR_SHARED_DATA",
    )
    g.add_argument(
        "--weights",
        metavar="W",
        default=None,
        help="weights version name or path to a .pt/.pth file (default: the current version)",
    )
    g.add_argument(
        "--baseline",
        choices=sorted(BASELINES),
        default=None,
        help="also score a classic method on the same clicks: grabcut = OpenCV GrabCut "
        "from the clicks' box enlarged by 10 px, 5 iterations",
    )
    g.add_argument(
        "--limit", metavar="N", type=_positive, default=None, help="evaluate only the first N objects (default: all)"
    )
    g.add_argument(
        "--mask-format",
        choices=MASK_FORMATS,
        default="auto",
        help="how masks encode the object; auto decides by mask folder name (default: auto)",
    )


def _click_args(g) -> None:
    """How the clicks are simulated and what corrects the mask after them."""
    g.add_argument(
        "--clicks",
        choices=("extreme", "box"),
        default="extreme",
        help="extreme: the 4 extreme points; box: the tight box's side midpoints, which is what a "
        "Label Studio rectangle becomes (default: extreme)",
    )
    g.add_argument(
        "--jitter",
        metavar="PX",
        type=_non_negative,
        default=0,
        help="move each simulated click at random up to PX pixels inward along the object, "
        "like a human click (default: 0, the exact extreme points)",
    )
    g.add_argument(
        "--seed", type=int, default=0, help="random seed of the click jitter; same seed, same clicks (default: 0)"
    )
    g.add_argument(
        "--max-clicks",
        metavar="N",
        type=_at_least_four,
        default=4,
        help="after the 4 extreme points, add corrective clicks up to N clicks in all and report "
        "NoC@85, NoC@90, NoF@90 and mIoU per click count (default: 4, no corrective clicks)",
    )
    g.add_argument(
        "--corrector",
        metavar="M[,M...]",
        type=_methods,
        default=None,
        help="how corrective clicks are used: auto (the version's own way), network (its trained "
        "pass 2), fbrs (f-BRS-B, no training), graphcut (a local GrabCut seeded by the network, no "
        "training), none; chain them with + (network+graphcut) and end with +consistent to put every "
        "clicked pixel on its side. Several, "
        "comma-separated, are scored side by side on the same clicks (default: $DEXTR_CORRECTOR, "
        "else auto)",
    )


def _run_args(g) -> None:
    """Where and how the model runs."""
    g.add_argument(
        "--device",
        default="auto",
        help="torch device for the model: auto (GPU if available), cpu, cuda, cuda:1 ... (default: auto)",
    )
    g.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average in the mirrored crop's prediction: twice the network time (default: $DEXTR_FLIP)",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: $DEXTR_THREADS, else all CPUs this process may use)",
    )
    add_engine(g)
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _output_args(g) -> None:
    """What is written and printed besides the summary."""
    g.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="write objects.csv, iou_histogram.png, summary.json and overlays of the "
        f"{WORST} worst objects (worst/) into DIR; with --max-clicks also clicks.png (mIoU by "
        "clicks) and each object's click counts in objects.csv",
    )
    g.add_argument(
        "--json",
        action="store_true",
        help="print one JSON line last on stdout: miou, n, ms_per_object, baseline_miou, "
        "baseline_ms_per_object, weights, dataset, jitter; with --max-clicks also noc85, noc90, "
        'nof90, miou_by_clicks ({"4": mIoU after 4 clicks, ..., "N": ...}), '
        "ms_per_correction, and baseline_noc85 ... for the baseline",
    )


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _print_clicks(result, baseline: str | None, corrections: bool) -> None:
    """NoC, NoF and the mIoU curve, for the model and the baseline."""
    n = result.max_clicks
    note = "" if corrections else "  (these weights take no corrective clicks: a flat curve)"
    print(
        f"corrections     clicks 5..{n} by the protocol; {_pct(result.correction_ms)} ms per corrected prediction{note}"
    )
    methods = [("model", False)] if result.miou is not None else []
    methods += [(baseline, True)] if baseline else []
    for name, is_base in methods:
        by = result.miou_by_clicks(is_base)
        print(
            f"{name:<15} NoC@85 {result.noc(0.85, is_base):.2f}  NoC@90 {result.noc(0.90, is_base):.2f}  "
            f"NoF@90 {result.nof(0.90, is_base)} of {result.n}"
        )
        print(f"{'':<15} mIoU by clicks " + "  ".join(f"{k}:{v:.1f}" for k, v in by.items()))


def _summary_line(result, args, info: dict) -> dict:
    """The ``--json`` fields of one scored method."""
    s = result.summary()
    line = {
        "miou": s["miou"],
        "n": s["n"],
        "ms_per_object": s["ms_per_object"],
        "baseline_miou": s["baseline_miou"],
        "baseline_ms_per_object": s["baseline_ms_per_object"],
        "baseline": s["baseline"],
        **info,
    }
    if args.max_clicks > 4:
        line.update({k: v for k, v in s.items() if k not in line})
    return line


def _score(args, settings, dataset, corrector: str, baseline):
    """One corrector's predictor and its result on the dataset."""
    from ..build import build_predictor

    predictor = build_predictor(
        args.weights,
        settings=settings,
        device=args.device,
        corrector=corrector,
        **({} if args.flip is None else {"flip": args.flip}),
        **({} if args.engine is None else {"engine": args.engine}),
    )
    log.info(
        "weights %s on %s, pass 1 on %s (flip: %s, corrector: %s)",
        predictor.version,
        predictor.device,
        predictor.engine_name,
        predictor.flip,
        predictor.corrector_name,
    )
    result = evaluate_objects(
        predictor,
        dataset,
        jitter=args.jitter,
        seed=args.seed,
        clicks=args.clicks,
        baseline=baseline,
        progress=not args.no_progress,
        keep_worst=WORST if args.out else 0,
        max_clicks=args.max_clicks,
    )
    if result.n == 0:
        raise InputError(f"{dataset.root}: every mask is empty, nothing to evaluate")
    return predictor, result


def _print_summary(args: argparse.Namespace, dataset, predictor, result, others: list) -> None:
    """The human-readable summary: what was scored, mIoU and speed, and with corrective clicks each
    corrector's NoC table."""
    print(
        f"dataset         {dataset.root} ({result.n} objects, masks {dataset.masks_dir.name}/, "
        f"format {dataset.mask_format})"
    )
    print(f"weights         {predictor.version} on {predictor.device}, pass 1 on {predictor.engine_name}")
    what = "4 extreme points" if args.clicks == "extreme" else "box side midpoints"
    if args.max_clicks > 4:
        what += f", then corrective clicks up to {args.max_clicks}"
    print(f"clicks          {what}, jitter {args.jitter} px, seed {args.seed}")
    print(f"mIoU            {_pct(result.miou)} %")
    print(f"ms per object   {_pct(result.ms_per_object)}")
    if args.baseline:
        print(
            f"{args.baseline} mIoU    {_pct(result.baseline_miou)} %  "
            f"({_pct(result.baseline_ms_per_object)} ms per object)"
        )
    if args.max_clicks > 4:
        print(f"corrector       {predictor.corrector_name}")
        _print_clicks(result, args.baseline, predictor.corrections)
        for _name, (other, res) in others:
            print(f"corrector       {other.corrector_name}")
            _print_clicks(res, None, other.corrections)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import write_report
    from ..settings import Settings
    from ..threads import configure_threads

    settings = Settings.from_env()
    dataset = load_dataset(args.dataset, args.mask_format, args.limit, shared_data=settings.shared_data)
    configure_threads(args.threads if args.threads is not None else settings.threads)
    log.info("evaluating %s", dataset)
    methods = args.corrector or (settings.corrector,)
    predictor, result = _score(args, settings, dataset, methods[0], args.baseline)
    others = [(m, _score(args, settings, dataset, m, None)) for m in methods[1:]]
    info = {
        "weights": predictor.version,
        "dataset": str(dataset.root),
        "jitter": args.jitter,
        "clicks": args.clicks,
        "seed": args.seed,
        "mask_format": dataset.mask_format,
        "device": str(predictor.device),
        "engine": predictor.engine_name,
        "corrector": predictor.corrector_name,
    }

    _print_summary(args, dataset, predictor, result, others)
    if args.out:
        out = write_report(
            result,
            args.out,
            info,
            label=predictor.corrector_name,
            others=[(p.corrector_name, r) for _, (p, r) in others],
        )
        print(f"report          {out}")
    if args.json:
        line = _summary_line(result, args, info)
        if others:
            line["correctors"] = {predictor.corrector_name: dict(line)}
            line["correctors"].update(
                {
                    p.corrector_name: _summary_line(r, args, info | {"corrector": p.corrector_name})
                    for _, (p, r) in others
                }
            )
        print(json.dumps(line), flush=True)
    return 0


__all__ = ["add_parser", "run"]
