"""Simulated corrective clicks for training a corrections network (``lite0c``).

Each sample's previous mask comes from the frozen parent (pass 1), exactly as when serving. Its
clicks are added one at a time, each on the errors of the network's latest answer (pass 1 for
the first, then no-grad corrector passes with the clicks so far), as RITM's iterative training
does: the corrector learns to fix its own mistakes, not only the parent's. Half of the clicks
follow the evaluation protocol, the rest land at a random interior point of the error region,
closer to how people click. Everything is simulated at crop resolution on the crop's target.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .. import geometry
from ..evaluation.clicks import next_click


def random_click(target: np.ndarray, rng: np.random.Generator) -> tuple[int, int, bool] | None:
    """For a sample without any error: a random positive inside the object or negative outside."""
    positive = bool(rng.random() < 0.5)
    for side in (positive, not positive):
        ys, xs = np.nonzero(target if side else ~target)
        if len(xs):
            i = int(rng.integers(len(xs)))
            return int(xs[i]), int(ys[i]), side
    return None


def add_click(
    pred: np.ndarray, target: np.ndarray, rng: np.random.Generator, clicks: list[tuple[int, int, bool]], first: bool
) -> bool:
    """Append the next click for one sample; False when there is nothing to fix (after the first)."""
    click = next_click(pred, target, rng=rng if rng.random() < 0.5 else None)
    if click is not None:
        clicks.append((click.x, click.y, click.positive))
        return True
    if first:
        extra = random_click(target, rng)
        if extra is not None:
            clicks.append(extra)
            return True
    return False


def correction_input(
    x4: np.ndarray, clicks: list[tuple[int, int, bool]], previous: np.ndarray, sigma: float | None = None
) -> np.ndarray:
    """The 7-channel ``(7, S, S)`` input from a ``(4, S, S)`` one, clicks in crop pixels and the
    pass-1 probabilities ``(S, S)``: the same channels as ``geometry.correction_channels``."""
    s = x4.shape[-1]
    pos = [(x, y) for x, y, p in clicks if p]
    neg = [(x, y) for x, y, p in clicks if not p]
    extra = np.stack(
        [
            geometry.click_map(np.asarray(pos, np.float64), s, sigma),
            geometry.click_map(np.asarray(neg, np.float64), s, sigma),
            np.asarray(previous, np.float32) * 255.0,
        ]
    )
    return np.concatenate([x4, extra], 0).astype(np.float32)


def simulate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    max_clicks: int,
    threshold: float,
    rng: np.random.Generator,
) -> torch.Tensor:
    """``(B, 4, S, S)`` inputs and ``(B, 1, S, S)`` targets -> ``(B, 7, S, S)`` inputs with 1 to
    ``max_clicks`` simulated corrective clicks each. ``forward`` returns probabilities, no grad."""
    xs = x.detach().cpu().numpy()
    targets = y[:, 0].detach().cpu().numpy() > 0.5
    previous = forward(x).cpu().numpy()
    wanted = rng.integers(1, max_clicks + 1, size=len(xs))
    clicks: list[list[tuple[int, int, bool]]] = [[] for _ in xs]
    current = previous > threshold
    active = [i for i in range(len(xs)) if add_click(current[i], targets[i], rng, clicks[i], True)]
    for round_ in range(1, int(wanted.max())):
        active = [i for i in active if wanted[i] > round_]
        if not active:
            break
        batch = np.stack([correction_input(xs[i], clicks[i], previous[i]) for i in active])
        probs = forward(torch.from_numpy(batch).to(x.device)).cpu().numpy()
        active = [i for i, p in zip(active, probs) if add_click(p > threshold, targets[i], rng, clicks[i], False)]
    batch = np.stack([correction_input(xs[i], clicks[i], previous[i]) for i in range(len(xs))])
    return torch.from_numpy(batch).to(x.device)
