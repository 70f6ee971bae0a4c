"""Ways to turn corrective clicks into a corrected mask, chosen by name.

Every corrector works in pass 1's crop (``S x S``): it gets the network's 4-channel input, pass
1's probabilities and the clicks in crop pixels, and returns corrected probabilities there. The
predictor pastes them back, thresholds and cleans up exactly as it does pass 1, so all methods are
compared on equal terms.

- ``network``: the version's own trained pass 2 (versions that take corrections, e.g. ``lite0h``);
- ``fbrs``: f-BRS-B, a per-channel scale and bias on the decoder's features fitted to the clicks
  (no training; any ``lite`` version);
- ``graphcut``: GrabCut seeded by pass 1's probabilities and the clicks, free to change pass 1's
  mask only near the clicks (no training; any version).

Methods chain with ``+``, each step starting from the last one's probabilities (e.g.
``network+graphcut``), and may end with click consistency (``+consistent``): every clicked pixel
ends up on its own side, as an annotator expects of the pixel they clicked.
"""

from __future__ import annotations

from ..errors import InputError
from .fbrs import lite_network
from .job import CorrectionJob, make_consistent

METHODS = ("network", "fbrs", "graphcut")
CONSISTENT = "consistent"


def parse_method(spec: str) -> tuple[str, ...]:
    """``"network+graphcut+consistent"`` -> ``("network", "graphcut", "consistent")``: the steps in
    order, each taking the previous step's probabilities. ``network`` can only come first (it reads
    pass 1 itself) and ``consistent`` only last; an unknown or repeated name is a ``ValueError``."""
    steps = tuple(part.strip() for part in str(spec).strip().lower().split("+"))
    known = METHODS + (CONSISTENT,)
    bad = [s for s in steps if s not in known]
    if (
        bad
        or not steps
        or steps[0] == CONSISTENT
        or len(set(steps)) != len(steps)
        or "network" in steps[1:]
        or CONSISTENT in steps[:-1]
    ):
        raise ValueError(
            f"unknown corrector {spec!r}: use one of {', '.join(METHODS)}, optionally followed by "
            f"+graphcut or +fbrs and then +{CONSISTENT} (e.g. network+graphcut+{CONSISTENT})"
        )
    return steps


def choose_corrector(spec: str | None, network: bool, model) -> tuple[str, ...]:
    """The corrector's steps a predictor runs (``correctors.parse_method``); ``()`` for none.

    ``None`` or ``auto``: the network's own pass 2 where it has one, else none (clicks ignored);
    ``none``: no corrections at all; otherwise a ``correctors`` method, which must fit the model.
    """
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "none":
        return ()
    if text == "auto":
        return ("network",) if network else ()
    try:
        steps = parse_method(text)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if "network" in steps and not network:
        raise InputError(
            "corrector 'network' needs a version that takes corrections (e.g. lite0h); "
            "use fbrs or graphcut with this one"
        )
    if "fbrs" in steps and lite_network(model) is None:
        raise InputError("corrector 'fbrs' needs a light (lite) network; use graphcut with this one")
    return steps


__all__ = ["CONSISTENT", "METHODS", "CorrectionJob", "choose_corrector", "make_consistent", "parse_method"]
