"""The promotion rule: promote a newly trained version unless it is measurably worse.

Why a rule of its own: with a handful of held-out objects one object's IoU moves the mean by more
than a real gain. A job that held out 4 of 25 labels refused a version that was 5 points better on
95 objects it had not seen (issue 27). So the two versions are scored on the same objects with the
same click sets (the exact extreme points and jittered ones, as people click), the differences are
paired per object, and the noise is measured: the objects are resampled (a bootstrap) to give an
interval for the mean gain. The rule, with the defaults of :class:`Rule`:

- the team's objects: not promoted when the whole 95 % interval of the gain lies below
  ``-tolerance`` (0.5 points), i.e. it is measurably worse. An interval that contains 0 means "no
  measurable difference"; ``when_unsure`` decides it, by default "promote": the new version
  learned from the team's own labels, and nothing measured says it is worse;
- the guard objects (never trained on; they catch forgetting, and labels that teach something
  other than the outlines): not promoted when the mean paired gain there is below
  ``-guard_margin`` (2 points), i.e. it lost more than 2 points on average. The interval is
  reported, not required to lie above -2: a 50-object guard's interval is about +-2.5 points wide,
  and demanding it kept out a version 4.6 points better on unseen frames, its guard interval
  -3.2 to +1.7 (README, "How a new version is promoted"). Wrong labels move the guard far beyond any
  such noise: masks shifted by a quarter of their box -14.7 and -21.4, swapped between tasks
  -11.6, against about -1 to +2 for right labels.

Pure numpy and seeded: the same scores always give the same decision.

It runs over 300 lines: the rule, its statistics (paired bootstrap, Student's t) and the
sentence that explains a decision to an admin are read together.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

WHEN_UNSURE = ("promote", "keep")
BETTER, SAME, WORSE = "better", "no measurable difference", "worse"


@dataclass(frozen=True)
class Rule:
    confidence: float = 0.95  # two-sided bootstrap interval of the mean paired gain
    tolerance: float = 0.5  # mIoU points the team's objects may lose, beyond the noise
    guard_margin: float = 2.0  # mIoU points the guard objects may lose on average
    when_unsure: str = "promote"  # the interval contains 0: "promote" or "keep"
    resamples: int = 4000
    seed: int = 0

    def __post_init__(self):
        if self.when_unsure not in WHEN_UNSURE:
            raise ValueError(f"when_unsure must be one of {', '.join(WHEN_UNSURE)}, got {self.when_unsure!r}")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must lie in [0.5, 1), got {self.confidence}")

    def text(self) -> str:
        """The rule in one line, as the model card and /train/status record it."""
        unsure = "promoted" if self.when_unsure == "promote" else "kept out"
        return (
            f"promote unless measurably worse: not promoted when the {self.confidence:.0%} bootstrap "
            f"interval of the paired mIoU gain (per object, over its click sets) lies wholly below "
            f"-{self.tolerance:g} points on the team's objects, or when on the guard objects the mean paired "
            f"gain is below -{self.guard_margin:g} (a loss of more than {self.guard_margin:g} points on average); on "
            f"the team's objects an interval containing 0 "
            f"(no measurable difference) is {unsure}"
        )


@dataclass(frozen=True)
class Exam:
    """One comparison on one set of objects: means, the paired gain and its interval (points)."""

    name: str  # "labels", "guard", "labels after 2 corrections"
    where: str  # e.g. "25 labelled objects (2-fold cross-validation)"
    objects: int
    variants: int  # click sets per object
    candidate: float
    incumbent: float | None
    gain: float | None
    low: float | None
    high: float | None
    allowed: float  # the loss tolerated (team's objects: beyond the noise; guard: on average)
    confidence: float = 0.95
    on_average: bool = False  # the guard: the mean loss must stay within ``allowed``, the interval is told

    @property
    def verdict(self) -> str:
        if self.gain is None or self.low is None or self.high is None:  # no incumbent: nothing compared
            return SAME
        if (self.gain if self.on_average else self.high) < -self.allowed:
            return WORSE
        return BETTER if self.low > 0 else SAME

    @property
    def passed(self) -> bool:
        return self.verdict != WORSE

    def to_dict(self) -> dict:
        out = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        for key in ("low", "high"):
            if isinstance(out[key], float) and not math.isfinite(out[key]):
                out[key] = None  # one object: no interval (JSON has no infinity)
        return {**out, "verdict": self.verdict}

    def numbers(self, current: str | None = None) -> str:
        """``79.9 vs 74.8 for v2 (+5.1 points, 95 % interval +3.2 to +7.0)``."""
        if self.gain is None or self.low is None or self.high is None:  # no incumbent: nothing compared
            return f"{self.candidate:.1f}"
        span = (
            "one object: no interval"
            if not math.isfinite(self.low)
            else f"{self.confidence:.0%} interval {self.low:+.1f} to {self.high:+.1f}"
        )
        return (
            f"{self.candidate:.1f} vs {self.incumbent:.1f}{f' for {current}' if current else ''} "
            f"({self.gain:+.1f} points, {span})"
        )


@dataclass(frozen=True)
class Decision:
    promoted: bool
    verdict: str  # better | no measurable difference | worse | too little evidence | first version
    sentence: str  # for the admin, with the numbers that decided
    rule: str
    exams: tuple[Exam, ...] = field(default_factory=tuple)
    forced: bool = False

    def exam(self, name: str) -> Exam | None:
        return next((e for e in self.exams if e.name == name), None)

    def to_dict(self) -> dict:
        return {
            "promoted": self.promoted,
            "verdict": self.verdict,
            "sentence": self.sentence,
            "rule": self.rule,
            "forced": self.forced,
            "exams": [e.to_dict() for e in self.exams],
        }


def as_scores(values, what: str) -> np.ndarray:
    """``(objects, click sets)`` float scores; one column where a flat list is given."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{what}: need scores of shape (objects, click sets), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: scores must be finite numbers")
    return array


def student_t(q: float, df: int) -> float:
    """Student's t quantile (q > 0.5), by integrating its density on a fine grid (numpy only)."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    x = np.linspace(0.0, 400.0, 400_001)
    pdf = c * (1 + x * x / df) ** (-(df + 1) / 2)
    cdf = 0.5 + np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * (x[1] - x[0]))])
    return float(x[min(int(np.searchsorted(cdf, q)), len(x) - 1)])


def paired_interval(candidate, incumbent, rule: Rule = Rule()) -> tuple[float, float, float]:
    """Mean paired gain and its ``rule.confidence`` interval, resampling whole objects (an object's
    click sets move together: they are not independent evidence).

    Small samples: a plain bootstrap of 4 objects is far too sure of itself, so the resampled
    means' spread around the gain is stretched by sqrt(n / (n - 1)) and by Student's t quantile
    over the normal one. For symmetric differences that is close to the paired t interval; the
    bootstrap keeps the skew of IoU differences (a rare failed object). One object: no interval."""
    cand, inc = as_scores(candidate, "candidate"), as_scores(incumbent, "incumbent")
    if cand.shape != inc.shape:
        raise ValueError(f"paired scores need the same objects and click sets: {cand.shape} vs {inc.shape}")
    per_object = (cand - inc).mean(axis=1)
    n, gain = len(per_object), float(per_object.mean())
    if n < 2:
        return gain, -math.inf, math.inf
    rng = np.random.default_rng(rule.seed)
    means = per_object[rng.integers(0, n, size=(rule.resamples, n))].mean(axis=1)
    q = (1.0 + rule.confidence) / 2
    z = float(np.sqrt(2.0) * _erfinv(2 * q - 1))
    stretch = math.sqrt(n / (n - 1)) * student_t(q, n - 1) / z
    low, high = gain + (np.quantile(means, [1.0 - q, q]) - gain) * stretch
    return gain, float(low), float(high)


def _erfinv(y: float) -> float:
    """Inverse error function by bisection on ``math.erf`` (monotone; 60 halvings suffice)."""
    lo, hi = 0.0, 6.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erf(mid) < y else (lo, mid)
    return (lo + hi) / 2


def examine(
    name: str, where: str, candidate, incumbent, allowed: float, rule: Rule = Rule(), on_average: bool = False
) -> Exam:
    """One exam; ``incumbent`` None (nothing current yet) records the candidate's mean alone."""
    cand = as_scores(candidate, name)
    if incumbent is None:
        return Exam(
            name,
            where,
            cand.shape[0],
            cand.shape[1],
            float(cand.mean()),
            None,
            None,
            None,
            None,
            allowed,
            rule.confidence,
            on_average,
        )
    gain, low, high = paired_interval(cand, incumbent, rule)
    return Exam(
        name,
        where,
        cand.shape[0],
        cand.shape[1],
        float(cand.mean()),
        float(np.mean(incumbent)),
        gain,
        low,
        high,
        allowed,
        rule.confidence,
        on_average,
    )


def _points(n: float) -> str:
    return f"{n:g} point{'s' if n != 1 else ''}"


def _loss(exam: Exam, current: str | None) -> str:
    """Why a failed exam stops the promotion, in words and numbers."""
    hint = "labels that teach something other than the objects' outlines, such as shifted or swapped masks, do this"
    if exam.name == "guard":
        return (
            f"on the {exam.objects} guard objects it scores {exam.numbers(current)}: it lost more than the "
            f"{_points(exam.allowed)} allowed there on average ({hint})"
        )
    after = " after 2 corrective clicks" if exam.name != "labels" else ""
    return f"on the {exam.where}{after} it scores {exam.numbers(current)}: measurably worse"


def _account(exams: list[Exam], current: str | None, skip: set[str]) -> str:
    """The exams not already told, as clauses."""
    parts = []
    for exam in exams:
        if exam.name in skip:
            continue
        where = f"the {exam.objects} guard objects" if exam.name == "guard" else f"the {exam.where}"
        if exam.name == "labels after 2 corrections":
            where += " after 2 corrective clicks"
        parts.append(f"on {where} it scores {exam.numbers(current)}")
    return "; ".join(parts)


def _settle(
    exams: list[Exam], current: str | None, blockers: tuple[str, ...], force: bool, rule: Rule
) -> tuple[bool, str, str, bool]:
    """``(promoted, verdict, sentence, forced)``."""
    labels = exams[0]
    worse = [e for e in exams if not e.passed]
    unsure_kept = not worse and labels.gain is not None and labels.verdict == SAME and rule.when_unsure == "keep"
    stays = f"{current} stays current" if current else "nothing becomes current"
    if labels.gain is None and not blockers:
        return (
            True,
            "first version",
            ("Promoted: there is no current version to compare with; " + _account(exams, None, set()) + "."),
            False,
        )
    why = list(blockers) + [_loss(e, current) for e in worse]
    if unsure_kept:
        why.append(
            f"on the {labels.where} it scores {labels.numbers(current)}: no measurable difference, and "
            f"this rule keeps the current version unless the new one is measurably better"
        )
    verdict = "too little evidence" if blockers else WORSE if worse else labels.verdict
    told = {e.name for e in worse} | ({"labels"} if unsure_kept else set())
    rest = _account(exams, current, told)
    if why and force:
        return True, verdict, f"Promoted by --force although {'; '.join(why)}" + (f"; {rest}." if rest else "."), True
    if why:
        return False, verdict, f"Not promoted: {'; '.join(why)}" + (f"; {rest}" if rest else "") + f"; {stays}.", False
    if labels.verdict == BETTER:
        how = "measurably better"
    elif labels.high is not None and labels.high < 0:
        how = f"a loss within the {_points(labels.allowed)} the rule tolerates beyond the noise"
    else:
        how = "no measurable difference, and the rule promotes unless the new version is measurably worse"
    guard = [e for e in exams if e.name == "guard"]
    tail = (
        f"; on the {guard[0].objects} guard objects {guard[0].numbers()}, within the "
        f"{_points(guard[0].allowed)} allowed on average"
        if guard and guard[0].gain is not None
        else ""
    )
    more = _account(exams, current, {"labels", "guard"})
    return (
        True,
        verdict,
        (
            f"Promoted: on the {labels.where} it scores {labels.numbers(current)}: {how}{tail}"
            + (f"; {more}" if more else "")
            + "."
        ),
        False,
    )


def decide(
    candidate,
    incumbent,
    *,
    where: str = "held-out objects",
    guard: tuple | None = None,
    corrected: tuple | None = None,
    current: str | None = None,
    blockers: tuple[str, ...] = (),
    force: bool = False,
    rule: Rule = Rule(),
) -> Decision:
    """Whether to promote, from per-object, per-click-set scores (percent) of the new version
    (``candidate``) and the current one (``incumbent``, None when nothing is current).

    ``where`` names the team's objects in the sentence ("25 labelled objects (2-fold
    cross-validation)"). ``guard``: ``(candidate, incumbent)`` scores on the guard objects, which
    must not lose more than ``rule.guard_margin`` on average;
    ``corrected``: the same on the team's objects after 2 corrective clicks, for versions that take
    them (a veto too when measurably worse: their 4-click masks may not move at all).
    ``blockers``: reasons that stop a promotion whatever the scores (no full epoch, too few
    objects); ``force`` overrides them and the scores. ``current`` names the current version."""
    exams = [examine("labels", where, candidate, incumbent, rule.tolerance, rule)]
    if guard is not None:
        exams.append(
            examine(
                "guard",
                "guard objects",
                guard[0],
                guard[1] if incumbent is not None else None,
                rule.guard_margin,
                rule,
                on_average=True,
            )
        )
    if corrected is not None:
        exams.append(
            examine(
                "labels after 2 corrections",
                where,
                corrected[0],
                corrected[1] if incumbent is not None else None,
                rule.tolerance,
                rule,
            )
        )
    promoted, verdict, sentence, forced = _settle(exams, current, tuple(blockers), force, rule)
    return Decision(promoted, verdict, sentence, rule.text(), tuple(exams), forced)


__all__ = ["BETTER", "SAME", "WORSE", "Decision", "Exam", "Rule", "decide", "examine", "paired_interval"]
