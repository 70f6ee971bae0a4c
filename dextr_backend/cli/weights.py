"""``dextr-backend weights ...``: see, fetch, import and choose the weights that serve."""

from __future__ import annotations

import argparse
import json

from ..models import ARCHITECTURES
from ..settings import Settings
from ..weights.registry import KNOWN_WEIGHTS, KnownWeights
from ..weights.store import Version, WeightsStore


def _store() -> WeightsStore:
    return WeightsStore.from_settings(Settings.from_env())


def _metrics(metrics: dict, limit: int = 3) -> str:
    """A trained version: both exams that decided its promotion, each against its baseline with the
    interval of the paired gain; others: the first few metrics."""
    if "val_miou" in metrics:

        def exam(name: str, key: str, gain: str) -> str:
            base, diff, low, high = (metrics.get(k) for k in (f"baseline_{key}", gain, f"{gain}_low", f"{gain}_high"))
            span = "" if low is None or high is None else f" [{low:+.1f}, {high:+.1f}]"  # the 95 % interval
            change = "" if diff is None else f", gain {diff:+.1f}{span}"
            return f"{name}={metrics[key]:g}" + ("" if base is None else f" (base {base:g}{change})")

        return " ".join(
            exam(n, k, g)
            for n, k, g in (("val", "val_miou", "gain"), ("guard", "guard_miou", "guard_gain"))
            if k in metrics
        )
    items = list(metrics.items())[:limit]
    return " ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in items) or "-"


def _mask_rule(threshold: float, trim: int) -> str:
    """How probabilities become a mask: the two settings that differ between versions of one file."""
    return f"t={threshold:g}" + (f" trim {trim}" if trim else "")


def _clicks(arch: str) -> str:
    """``4``: the extreme points only; ``4+fix``: corrective clicks after them too."""
    spec = ARCHITECTURES.get(arch)
    return "4+fix" if spec is not None and spec.corrections else "4"


def _installed_json(v: Version, current: str | None) -> dict:
    return {
        **v.to_record(),
        "path": str(v.path),
        "shipped": v.shipped,
        "current": v.name == current,
        "downloaded": True,
        "takes_corrections": v.takes_corrections,
    }


def _known_json(k: KnownWeights) -> dict:
    return {
        "name": k.name,
        "arch": k.arch,
        "input_size": k.input_size,
        "threshold": k.threshold,
        "url": k.url,
        "mirrors": list(k.mirrors),
        "sha256": k.sha256,
        "metrics": dict(k.metrics),
        "license": k.license,
        "description": k.description,
        "downloaded": False,
    }


def cmd_list(args: argparse.Namespace) -> int:
    store = _store()
    current = store.current_name()
    installed = store.versions()
    available = store.not_downloaded()
    if args.json:
        print(
            json.dumps(
                {
                    "current": current,
                    "versions": [_installed_json(v, current) for v in installed],
                    "available": [_known_json(k) for k in available],
                },
                indent=2,
            )
        )
        return 0
    rows = [("", "NAME", "ARCH", "CLICKS", "SIZE", "MASK", "METRICS", "PARENT", "CREATED", "SOURCE")]
    for v in installed:
        created = (v.created or "-").replace("T", " ")[:16]
        source = "shipped" if v.shipped else (v.source or "-")
        clicks = "4+fix" if v.takes_corrections else "4"  # its network's or its corrector's
        rows.append(
            (
                "*" if v.name == current else "",
                v.name,
                v.arch,
                clicks,
                str(v.input_size),
                _mask_rule(v.threshold, v.trim),
                _metrics(v.metrics),
                v.parent or "-",
                created,
                source,
            )
        )
    for k in available:
        rows.append(
            (
                "",
                k.name,
                k.arch,
                _clicks(k.arch),
                str(k.input_size),
                _mask_rule(k.threshold, 0),
                _metrics(k.metrics),
                "-",
                "-",
                f"not downloaded (dextr-backend weights download {k.name})",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    if current is None:
        print(
            "\nno current weights: run `dextr-backend weights download dextr_pascal-sbd` "
            "or `dextr-backend weights import PATH`"
        )
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    import sys

    from ..weights.download import install

    settings = Settings.from_env()
    v = install(
        WeightsStore.from_settings(settings),
        args.name,
        mirror=settings.weights_mirror,
        url=args.url,
        sha256=args.sha256,
        make_current=args.use,
        report=lambda line: print(line, file=sys.stderr),
    )
    print(
        f"{v.name}: {v.arch}, {(v.size or 0) / 2**20:.1f} MiB, sha256 {v.sha256}, at {v.path}"
        + ("; now current" if args.use else f"; make it current with `dextr-backend weights use {v.name}`")
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    v = _store().import_file(
        args.path,
        name=args.name,
        arch=args.arch,
        make_current=args.use,
        input_size=args.input_size,
        threshold=args.threshold,
        trim=args.trim,
    )
    print(f"imported {v.name}: {v.arch}, sha256 {v.sha256}, at {v.path}" + ("; now current" if args.use else ""))
    return 0


def cmd_use(args: argparse.Namespace) -> int:
    v = _store().use(args.version)
    trim = f", trim {v.trim} px" if v.trim else ""
    print(f"current weights: {v.name} ({v.arch}, input {v.input_size}, threshold {v.threshold:g}{trim})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = _store()
    name = args.version
    if name in KNOWN_WEIGHTS and name not in {v.name for v in store.versions()}:
        print(json.dumps(_known_json(KNOWN_WEIGHTS[name]), indent=2))
        return 0
    v = store.get(name)
    out = _installed_json(v, store.current_name())
    card_file = v.card.get("file")
    if v.shipped and isinstance(card_file, str) and v.path is not None:
        card_path = v.path.parent / card_file
        if card_path.is_file():
            out["card_text"] = card_path.read_text(encoding="utf-8")
    print(json.dumps(out, indent=2))
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="list, download, import and choose weights versions",
        description="Weights versions: the official DEXTR checkpoints, imported files and trained versions. "
        "User versions live in $DEXTR_WEIGHTS_DIR (default ~/.cache/dextr-backend/weights).",
    )
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser(
        "list",
        help="every version, the current one marked *, plus downloadable ones",
        description="Table of installed versions (current marked *) with metrics and lineage, "
        "and the official checkpoints not downloaded yet.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    _download_parser(sub)
    _import_parser(sub)
    p = sub.add_parser(
        "use",
        help="make a version the current one",
        description="Choose the version servers and commands load by default.",
    )
    p.add_argument("version", metavar="VERSION")
    p.set_defaults(func=cmd_use)

    p = sub.add_parser(
        "show",
        help="print a version's record and model card as JSON",
        description="Print a version's record (checksum, metrics, lineage) and model card.",
    )
    p.add_argument("version", metavar="VERSION")
    p.set_defaults(func=cmd_show)


def _download_parser(sub) -> None:
    """``weights download``: a published checkpoint, or any URL, into the store."""
    p = sub.add_parser(
        "download",
        help="download a published checkpoint (or any URL) into the store",
        description="Download, verify and record weights. Known names: "
        f"{', '.join(KNOWN_WEIGHTS)}. $DEXTR_WEIGHTS_MIRROR replaces the "
        "download directory with a mirror's.",
    )
    p.add_argument("name", metavar="NAME", help="a known name, a URL, or a new name together with --url")
    p.add_argument("--url", help="download from this URL instead of the registry's")
    p.add_argument("--sha256", metavar="HEX", help="expected sha256; the download fails if it differs")
    p.add_argument("--use", action="store_true", help="make it the current version")
    p.set_defaults(func=cmd_download)


def _import_parser(sub) -> None:
    """``weights import``: a weights file, checked against its architecture, into the store."""
    p = sub.add_parser(
        "import",
        help="copy a .pt/.pth weights file into the store",
        description="Check that a weights file fits an architecture strictly, then copy it in.",
    )
    p.add_argument(
        "path",
        metavar="PATH",
        help="the weights file: a state dict, a dict with 'state_dict', or a training run's "
        "checkpoint.pt (its moving average, else its model: the last epoch it finished)",
    )
    p.add_argument("--name", help="version name (default: the file name without extension)")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), help="architecture (default: detected)")
    p.add_argument(
        "--input-size", type=int, default=None, help="crop side the file was trained for (default: the architecture's)"
    )
    p.add_argument(
        "--threshold", type=float, default=None, help="mask probability threshold (default: the architecture's)"
    )
    p.add_argument(
        "--trim", type=int, default=0, help="pixels eroded off each mask's boundary after thresholding (default: 0)"
    )
    p.add_argument("--use", action="store_true", help="make it the current version")
    p.set_defaults(func=cmd_import)


__all__ = ["add_parser"]
