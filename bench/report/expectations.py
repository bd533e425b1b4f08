"""The rules that decide whether a suite's expectation holds, one sentence per failure.

Numbers pool the seeds run (`bench.report.summary`: crossed seeds x prompts intervals).

- ``min_winrate`` / ``max_winrate`` / ``min_mean_reward``: the pooled point estimate against the
  bound.
- ``beats: B``: the 95% CI of the paired winrate difference A - B lies above 0 *and* is
  decidable (`bench.report.stats.crossed_mean`: two seeds that disagree give an interval too wide to
  support a claim).
- ``equivalent_to: B`` with ``margin: m``: the whole 95% CI of A - B lies inside (-m, +m), an
  equivalence claim by two one-sided tests at 2.5% each (Schuirmann 1987, J. Pharmacokinet.
  Biopharm. 15(6), 657-680; the 95% CI is the conservative form of the 90% one he uses).

A claim the data cannot decide fails as underpowered, naming the minimum detectable effect and
the seeds or prompts it would take (`bench.report.power`), rather than passing for lack of evidence.
"""

from __future__ import annotations

from collections.abc import Mapping

from bench.config import Expectation
from bench.report.power import minimum_detectable_effect, replication_needed
from bench.report.results import ResultLine
from bench.report.stats import CrossedEstimate
from bench.report.summary import difference, pool


def check_expectation(
    expectation: Expectation,
    method: str,
    budget: str,
    seeds: list[int],
    lines: Mapping[str, list[ResultLine]],
) -> list[str]:
    """Plain sentences, one per part of `expectation` that fails for `method` at `budget`.

    A pure function of result lines: `lines[name]` holds the lines of method entry `name` at
    this budget, one per seed of `seeds`, in that order, for `method` and every entry the
    expectation compares with (the session runs them first, `bench.run.session`).
    """
    where = f"{method} at {budget} ({_seed_words(seeds)})"
    numbers = pool(lines[method])
    failures = []
    winrate = numbers.winrate
    if expectation.min_winrate is not None and not (
        winrate and winrate.value >= expectation.min_winrate
    ):
        failures.append(
            f"{where} has winrate {describe(winrate)}, "
            f"below the expected minimum {expectation.min_winrate}."
        )
    if expectation.max_winrate is not None and not (
        winrate and winrate.value <= expectation.max_winrate
    ):
        failures.append(
            f"{where} has winrate {describe(winrate)}, "
            f"above the expected maximum {expectation.max_winrate}."
        )
    if expectation.min_mean_reward is not None:
        reward = numbers.mean_reward
        if not (reward and reward.value >= expectation.min_mean_reward):
            failures.append(
                f"{where} has mean reward {describe(reward)}, below the expected minimum "
                f"{expectation.min_mean_reward}."
            )
    if expectation.beats is not None:
        failure = beats_failure(difference(lines[method], lines[expectation.beats]))
        if failure:
            failures.append(f"{where} was expected to beat {expectation.beats}, but {failure}")
    if expectation.equivalent_to is not None:
        assert expectation.margin is not None  # the config requires it
        failure = equivalence_failure(
            difference(lines[method], lines[expectation.equivalent_to]),
            expectation.margin,
        )
        if failure:
            failures.append(
                f"{where} was expected to be within {expectation.margin:g} of "
                f"{expectation.equivalent_to}, but {failure}"
            )
    return failures


def beats_failure(diff: CrossedEstimate | None) -> str | None:
    """Why the difference does not show A beats B (None: it does)."""
    if diff is None:
        return "no prompt was judged on both sides."
    text = f"the winrate difference is {describe(diff, signed=True)}"
    if not diff.decidable:
        return f"{text}: {diff.note}."
    if diff.low > 0:
        return None
    if diff.high < 0:
        return f"{text}, whose 95% CI lies below 0: the other method is better."
    mde = minimum_detectable_effect(diff)
    if diff.value <= 0:
        return (
            f"{text}, whose 95% CI includes 0 and whose estimate is not positive (this design "
            f"detects a true difference of {mde:.3f} with 80% power)."
        )
    needed = replication_needed(diff, diff.value)
    return (
        f"{text}, whose 95% CI includes 0: underpowered for the observed "
        f"{diff.value:+.3f} (this design detects {mde:.3f} with 80% power); detecting "
        f"{diff.value:+.3f} with 80% power would take {needed.sentence}."
    )


def equivalence_failure(diff: CrossedEstimate | None, margin: float) -> str | None:
    """Why the difference does not show |A - B| < margin (None: it does)."""
    if diff is None:
        return "no prompt was judged on both sides."
    text = f"the winrate difference is {describe(diff, signed=True)}"
    if not diff.decidable:
        return f"{text}: {diff.note}."
    if -margin < diff.low and diff.high < margin:
        return None
    if diff.low >= margin or diff.high <= -margin:
        return f"{text}, whose 95% CI lies outside +-{margin:g}: they differ by more."
    room = margin - abs(diff.value)
    if room <= 0:
        return (
            f"{text}, whose estimate is itself outside +-{margin:g}; its CI straddles the "
            "margin, so more data would more likely show a difference than an equivalence."
        )
    needed = replication_needed(diff, room)
    mde = minimum_detectable_effect(diff)
    return (
        f"{text}, whose 95% CI is not inside +-{margin:g}: underpowered (this design detects "
        f"{mde:.3f} with 80% power); showing equivalence at the observed {diff.value:+.3f} "
        f"would take {needed.sentence}."
    )


def describe(estimate: CrossedEstimate | None, *, signed: bool = False) -> str:
    """``0.789 [0.752, 0.823] n=500 seeds=3``, the way every message states a number."""
    if estimate is None:
        return "none (no prompt counts)"
    form = "+.3f" if signed else ".3f"
    text = f"{estimate.value:{form}} [{estimate.low:{form}}, {estimate.high:{form}}] n={estimate.n}"
    return text + (f" seeds={estimate.k}" if estimate.k > 1 else "")


def _seed_words(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))} pooled"
