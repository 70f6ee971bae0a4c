"""The promotion rule on synthetic per-object, per-click-set scores (``training.decision``): a
clear gain on 4 objects is promoted, a clear loss is not, pure noise falls back to the documented
default, and the guard vetoes forgetting. Pure numpy: no model runs here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dextr_backend.training.decision import SAME, WORSE, Rule, decide, paired_interval, student_t


def incumbent_scores(objects: int = 4, sets: int = 3, seed: int = 0) -> np.ndarray:
    """IoU in percent of a current version: objects of varied difficulty, click sets a little apart."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.uniform(55, 90, (objects, 1)) + rng.normal(0, 2, (objects, sets)), 0, 100)


def test_a_clear_gain_on_four_objects_is_promoted():
    """Issue 27's case: 4 held-out objects. Every object gains 4 to 8 points under every click set."""
    inc = incumbent_scores()
    cand = inc + np.array([[5.0], [8.0], [4.0], [6.5]]) + np.random.default_rng(1).normal(0, 0.5, inc.shape)
    decision = decide(cand, inc, where="4 held-out objects", current="v2")
    labels = decision.exam("labels")
    assert decision.promoted and decision.verdict == "better"
    assert labels.low > 0 and labels.gain == pytest.approx((cand - inc).mean())
    assert decision.sentence.startswith("Promoted: on the 4 held-out objects it scores")
    assert "for v2" in decision.sentence and "measurably better" in decision.sentence
    assert f"{labels.low:+.1f} to {labels.high:+.1f}" in decision.sentence  # the interval is told


def test_a_clear_loss_on_four_objects_is_not_promoted():
    inc = incumbent_scores()
    cand = inc - np.array([[5.0], [8.0], [4.0], [6.5]]) + np.random.default_rng(2).normal(0, 0.5, inc.shape)
    decision = decide(cand, inc, where="4 held-out objects", current="v2")
    assert not decision.promoted and decision.verdict == WORSE
    assert decision.exam("labels").high < -Rule().tolerance
    assert decision.sentence.startswith("Not promoted: on the 4 held-out objects")
    assert "measurably worse" in decision.sentence and decision.sentence.endswith("v2 stays current.")


def test_pure_noise_falls_back_to_the_documented_default():
    """Differences that cancel out: no measurable difference, so ``when_unsure`` decides; its
    default (promote) is what the module docstring and the README document."""
    inc = incumbent_scores(objects=25)
    noise = np.random.default_rng(3).normal(0, 4, inc.shape)
    cand = inc + noise - noise.mean()  # centred: the interval must straddle 0
    default = decide(cand, inc, current="v2")
    labels = default.exam("labels")
    assert labels.low < 0 < labels.high and default.verdict == SAME
    assert Rule().when_unsure == "promote" and default.promoted
    assert "no measurable difference, and the rule promotes unless" in default.sentence
    kept = decide(cand, inc, current="v2", rule=Rule(when_unsure="keep"))
    assert not kept.promoted and kept.verdict == SAME and "v2 stays current" in kept.sentence


def test_the_guard_vetoes_a_version_that_forgot_although_it_gained_on_the_labels():
    inc, guard = incumbent_scores(), incumbent_scores(objects=20, seed=5)
    rng = np.random.default_rng(4)
    decision = decide(inc + 6, inc, current="v2", guard=(guard - 9 + rng.normal(0, 1, guard.shape), guard))
    assert not decision.promoted and decision.verdict == WORSE
    assert decision.exam("labels").verdict == "better" and decision.exam("guard").verdict == WORSE
    assert (
        "guard objects" in decision.sentence and "more than the 2 points allowed there on average" in decision.sentence
    )
    small_loss = decide(inc + 6, inc, current="v2", guard=(guard - 0.3 + rng.normal(0, 0.3, guard.shape), guard))
    assert small_loss.promoted and "within the 2 points allowed on average" in small_loss.sentence


def test_the_guard_bounds_the_mean_loss_and_reports_its_noise():
    """The guard's mean loss must stay within the margin; its interval is told, not required above
    -2: a wide guard interval with a small mean loss promotes (a 50-object guard spans about +-2.5
    points), a mean loss beyond 2 points does not, however noisy."""
    inc, guard = incumbent_scores(), incumbent_scores(objects=5, seed=7)
    swings = np.array([[-12.0], [6.0], [-9.0], [7.0], [3.0]])  # mean -1, but all over the place
    decision = decide(inc + 6, inc, current="v2", guard=(guard + swings, guard))
    exam = decision.exam("guard")
    assert exam.gain == pytest.approx(-1.0) and exam.low < -2 < exam.high
    assert exam.verdict == SAME and decision.promoted
    assert "within the 2 points allowed on average" in decision.sentence
    assert f"interval {exam.low:+.1f} to {exam.high:+.1f}" in decision.sentence
    lost = decide(inc + 6, inc, current="v2", guard=(guard + swings - 1.5, guard))  # mean -2.5
    assert lost.exam("guard").low < -2 < lost.exam("guard").high  # the noise spans the margin ...
    assert not lost.promoted and lost.verdict == WORSE  # ... but on average it lost more than 2
    assert "lost more than the 2 points allowed there on average" in lost.sentence


def test_blockers_force_and_a_first_version():
    inc = incumbent_scores()
    blocked = decide(inc + 6, inc, current="v2", blockers=("no full epoch finished (stopped: time budget)",))
    assert not blocked.promoted and blocked.verdict == "too little evidence"
    assert blocked.sentence.startswith("Not promoted: no full epoch finished (stopped: time budget)")
    forced = decide(inc - 10, inc, current="v2", force=True)
    assert forced.promoted and forced.forced and forced.sentence.startswith("Promoted by --force although")
    assert not decide(inc + 6, inc, force=True).forced  # nothing to override
    first = decide(inc, None)
    assert first.promoted and first.verdict == "first version" and first.exam("labels").gain is None


def test_the_interval_is_close_to_the_paired_t_interval_and_wider_than_a_plain_bootstrap():
    """The bootstrap's spread is stretched to Student's t, so 4 objects are not over-trusted."""
    per_object = np.linspace(-5.0, 5.0, 12)
    gain, low, high = paired_interval(per_object + 50, np.full(12, 50.0), Rule(resamples=40000))
    t_half = student_t(0.975, 11) * per_object.std(ddof=1) / math.sqrt(12)
    assert gain == pytest.approx(0) and low == pytest.approx(-t_half, rel=0.06)
    assert high == pytest.approx(t_half, rel=0.06)
    four = np.array([-3.0, -1.0, 1.0, 3.0])
    _, low4, high4 = paired_interval(four + 50, np.full(4, 50.0))
    plain = np.quantile(four[np.random.default_rng(0).integers(0, 4, (4000, 4))].mean(axis=1), [0.025, 0.975])
    assert low4 < 1.5 * plain[0] and high4 > 1.5 * plain[1]
    assert student_t(0.975, 3) == pytest.approx(3.182, abs=2e-3)
    assert paired_interval([70.0], [60.0])[1:] == (-math.inf, math.inf)  # one object: no interval


def test_the_same_scores_give_the_same_decision_and_bad_shapes_are_refused():
    inc = incumbent_scores(objects=10)
    cand = inc + np.random.default_rng(6).normal(0.5, 3, inc.shape)
    assert decide(cand, inc).to_dict() == decide(cand, inc).to_dict()
    with pytest.raises(ValueError, match="same objects and click sets"):
        decide(cand[:5], inc)
    with pytest.raises(ValueError, match="finite"):
        decide(np.full((3, 2), np.nan), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="when_unsure"):
        Rule(when_unsure="maybe")


def test_a_corrections_version_worse_after_two_clicks_is_not_promoted():
    """Its 4-click masks are its frozen parent's (no difference at all); the 6-click masks are what
    its training changed, so a measurable loss there stops it too."""
    inc = incumbent_scores(objects=8)
    six = np.clip(inc + 5, 0, 100)
    worse = decide(inc.copy(), inc, current="v2", corrected=(six - 4, six))
    assert worse.exam("labels").verdict == SAME and worse.exam("labels after 2 corrections").verdict == WORSE
    assert not worse.promoted and "after 2 corrective clicks" in worse.sentence
    better = decide(inc.copy(), inc, current="v2", corrected=(six + 2, six))
    assert better.promoted and "after 2 corrective clicks" in better.sentence
