#!/usr/bin/env python
"""Put a trained weights file into the repository's ``weights/`` folder as a shipped version.

Shipped versions are what ``predict``, ``evaluate`` and the server use right after install,
offline. This writes ``weights/<name>.pt`` (fp32 state dict, or fp16 with ``--half``), records
it with its sha256, size and metrics in ``weights/index.json``, makes it the default, and keeps
the model card (``weights/<name>.md``) beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch

from dextr_backend.errors import WeightsError
from dextr_backend.models import detect_architecture, get_architecture
from dextr_backend.weights.files import atomic_write, locked, read_state_file, sha256_file
from dextr_backend.weights.versions import check_trim

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def split_base(index: dict, over: str, state: dict) -> tuple[dict, dict]:
    """The parent file's record and the tensors ``state`` adds to it; its ``base.*`` tensors must be
    exactly the parent file's (a frozen parent), or nothing is shipped."""
    parent = next((v for v in index["versions"] if v["name"] == over), None)
    if parent is None:
        raise SystemExit(f"--over {over}: not a shipped version")
    own = read_state_file(WEIGHTS / parent["file"])
    base = {k[len("base.") :]: v for k, v in state.items() if k.startswith("base.")}
    if set(base) != set(own) or any(not torch.equal(base[k].to(own[k].dtype), own[k]) for k in own):
        raise SystemExit(f"--over {over}: the state's base.* tensors are not exactly {parent['file']}'s")
    record = {"file": parent["file"], "sha256": parent["sha256"], "size": parent["size"]}
    return record, {k: v for k, v in state.items() if not k.startswith("base.")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("state", nargs="?", help="trained .pt file (a state dict); leave out with --same-weights-as")
    p.add_argument(
        "--same-weights-as",
        metavar="VERSION",
        default=None,
        help="ship a new version that reuses this shipped version's file: same weights, new "
        "inference settings (e.g. a threshold chosen on other data); no second copy",
    )
    p.add_argument("--name", required=True, help="version name, e.g. bsds-lite0-v1")
    p.add_argument("--threshold", type=float, required=True, help="probability threshold chosen on validation")
    p.add_argument(
        "--trim",
        type=int,
        default=0,
        help="pixels eroded off each mask's boundary after thresholding, chosen on validation (default 0)",
    )
    p.add_argument("--metrics", default="{}", help="JSON object of measured metrics")
    p.add_argument("--card", required=True, help="markdown model card to ship beside the weights")
    p.add_argument(
        "--input-size", type=int, default=None, help="crop side it was trained for (default: the architecture's)"
    )
    p.add_argument("--parent", default=None, help="version it was fine-tuned from")
    p.add_argument(
        "--over",
        metavar="VERSION",
        default=None,
        help="for a network that grows a frozen parent (lite0h): ship only what it adds, and name "
        "this shipped version's file as its base (its base.* tensors must equal that file's), "
        "so the parent is not stored twice",
    )
    p.add_argument(
        "--corrector", default=None, help="how the version serves corrective clicks by default, e.g. network+consistent"
    )
    p.add_argument("--no-default", action="store_true", help="ship it without making it the default")
    p.add_argument(
        "--half",
        action="store_true",
        help="store floats as fp16: half the size, for an intermediate version a later run resumes "
        "from (loading turns them back into fp32)",
    )
    args = p.parse_args(argv)
    try:
        check_trim(args.trim)
    except WeightsError as exc:
        p.error(str(exc))

    index_path = WEIGHTS / "index.json"
    with locked(WEIGHTS / ".index.lock"):  # two ship runs never lose each other's record
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if (args.state is None) == (args.same_weights_as is None):
            p.error("give a state file or --same-weights-as VERSION (one of them)")
        source, base = None, None
        if args.same_weights_as:
            source = next((v for v in index["versions"] if v["name"] == args.same_weights_as), None)
            if source is None:
                p.error(f"--same-weights-as {args.same_weights_as}: not a shipped version")
            dest = WEIGHTS / source["file"]
            arch = detect_architecture(read_state_file(dest))
        else:
            dtype = torch.float16 if args.half else torch.float32
            state = {
                k: v.to(dtype) if v.is_floating_point() else v for k, v in read_state_file(Path(args.state)).items()
            }
            arch = detect_architecture(state)
            if args.over:
                base, state = split_base(index, args.over, state)
            dest = WEIGHTS / f"{args.name}.pt"
            atomic_write(dest, lambda fh: torch.save(state, fh))
        card = WEIGHTS / f"{args.name}.md"
        if Path(args.card).resolve() != card.resolve():
            text = Path(args.card).read_text(encoding="utf-8").encode("utf-8")
            atomic_write(card, lambda fh: fh.write(text))
        record = {
            "name": args.name,
            "arch": arch,
            "input_size": (args.input_size or (source or {}).get("input_size") or get_architecture(arch).input_size),
            "threshold": args.threshold,
            "trim": args.trim,
            "file": dest.name,
            "sha256": sha256_file(dest),
            "size": dest.stat().st_size,
            "metrics": json.loads(args.metrics),
            "parent": args.parent,
            "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source": "shipped",
            "card": card.name,
            "base": base,
            "corrector": args.corrector,
        }
        index["versions"] = [v for v in index["versions"] if v["name"] != args.name] + [record]
        if not args.no_default:
            index["default"] = args.name
        data = (json.dumps(index, indent=2) + "\n").encode("utf-8")
        atomic_write(index_path, lambda fh: fh.write(data))
    print(json.dumps({k: record[k] for k in ("name", "arch", "size", "sha256")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
