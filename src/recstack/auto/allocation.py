"""How ``recstack-auto`` spends its wall-clock budget: pure functions, no training.

The budget ``B`` is cut in three, in this order:

1. ``reserve_share * B`` is kept for the end: the winner's refit, its one test reading, the export and the reports.
2. The cheap candidates (closed-form or neighbourhood models: ItemKNN, EASE; a trial takes seconds) share
   ``cheap_share`` of the rest equally, one ``recstack-tune`` study each, run first. (Candidates with nothing to tune,
   such as popularity, are fitted once before them, from the cheap phase's time; they take no slice of their own.)
3. The deep candidates (MF, LightGCN; a trial takes minutes) get what is left, by successive halving: rung 0 runs all
   ``n`` of them, rung ``r`` the best ``max(1, n // eta**r)`` so far, until one is left; every rung has the same
   share of the time, split equally among the candidates in it. A candidate in a later rung resumes its study, so its
   trials add up. With the default two deep models and ``eta = 2``: each gets a quarter of the deep time, then the
   better one the remaining half.

A phase ends at a fixed offset from the start (:attr:`Phase.end_s`); a candidate starting in it gets the time left in
the phase divided by the candidates of the phase still to run (:func:`slice_now`). Time a candidate does not use (its
study reached its trial limit) therefore goes to the next one, and a candidate that overruns (a trial finishes its
epoch after the deadline) takes it from the next.

Search time left after the last rung (its survivors' studies reached their trial limit, as a study whose trials are
mostly pruned early does) is not given back: it goes to the deep candidates whose studies can still run, best
validation score first, each once (:func:`leftover_next`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CHEAP = "cheap"


@dataclass(frozen=True)
class Phase:
    """A stretch of the search: ``keep`` candidates run in it, until ``end_s`` seconds after the start."""

    name: str  # "cheap", "rung 0", "rung 1", ...
    keep: int  # how many candidates run in it (the cheap ones; a rung's survivors)
    end_s: float

    @property
    def is_rung(self) -> bool:
        return self.name != CHEAP


@dataclass(frozen=True)
class Plan:
    """The budget's split; see the module docstring."""

    budget_s: float
    reserve_s: float
    cheap: tuple[str, ...]
    deep: tuple[str, ...]
    eta: int
    phases: tuple[Phase, ...]

    @property
    def search_s(self) -> float:
        return self.budget_s - self.reserve_s

    def first_slice(self, name: str) -> float:
        """Seconds the plan gives ``name`` in its first phase (before any time is carried over)."""
        start = 0.0
        for phase in self.phases:
            if (phase.name == CHEAP and name in self.cheap) or (phase.name == "rung 0" and name in self.deep):
                return (phase.end_s - start) / phase.keep
            start = phase.end_s
        raise KeyError(f"{name!r} is not a tuned candidate of this plan (cheap {self.cheap}, deep {self.deep})")


def rung_sizes(n: int, eta: int) -> tuple[int, ...]:
    """Candidates per rung of successive halving: ``n``, then ``n // eta`` (at least 1) ... down to 1."""
    if n < 1:
        return ()
    if eta < 2:
        raise ValueError(f"eta={eta}: successive halving needs eta >= 2")
    sizes = [n]
    while sizes[-1] > 1:
        sizes.append(max(1, sizes[-1] // eta))
    return tuple(sizes)


def plan_budget(
    budget_s: float,
    cheap: Sequence[str],
    deep: Sequence[str],
    *,
    cheap_share: float = 0.15,
    reserve_share: float = 0.15,
    eta: int = 2,
) -> Plan:
    """Split ``budget_s`` between the tuned ``cheap`` and ``deep`` candidates (see the module docstring)."""
    if not 0.0 <= reserve_share < 1.0:
        raise ValueError(f"reserve_share={reserve_share}: must be in [0, 1)")
    if not 0.0 < cheap_share < 1.0:
        raise ValueError(f"cheap_share={cheap_share}: must be in (0, 1)")
    reserve = budget_s * reserve_share
    search = budget_s - reserve
    cheap_s = search * cheap_share if deep else search  # without deep candidates the cheap ones get it all
    if not cheap:
        cheap_s = 0.0
    phases: list[Phase] = []
    if cheap:
        phases.append(Phase(CHEAP, len(cheap), cheap_s))
    sizes = rung_sizes(len(deep), eta)
    for r, keep in enumerate(sizes):
        phases.append(Phase(f"rung {r}", keep, cheap_s + (search - cheap_s) * (r + 1) / len(sizes)))
    return Plan(budget_s, reserve, tuple(cheap), tuple(deep), eta, tuple(phases))


def minimum_budget(
    min_trial_s: Mapping[str, float],
    cheap: Sequence[str],
    deep: Sequence[str],
    *,
    cheap_share: float = 0.15,
    reserve_share: float = 0.15,
    eta: int = 2,
) -> tuple[float, str | None]:
    """The least budget whose plan gives every tuned candidate at least its ``min_trial_s`` in its first phase, and the
    candidate that sets it (None when there is no tuned candidate). Slices grow linearly with the budget, so it is
    ``max(min_trial / slice at a budget of 1 s)``."""
    unit = plan_budget(1.0, cheap, deep, cheap_share=cheap_share, reserve_share=reserve_share, eta=eta)
    needs = {name: min_trial_s[name] / unit.first_slice(name) for name in (*cheap, *deep)}
    if not needs:
        return 0.0, None
    name = max(needs, key=lambda n: needs[n])
    return needs[name], name


def slice_now(phase_end_s: float, elapsed_s: float, left: int) -> float:
    """Seconds for the next candidate of a phase: the phase's time left, shared equally by the ``left`` candidates of
    the phase still to run (this one included); 0 when the phase's time is spent."""
    if left < 1:
        raise ValueError(f"left={left}: at least the candidate asking must be left")
    return max(0.0, (phase_end_s - elapsed_s) / left)


def halve(scores: Mapping[str, float | None], keep: int, exhausted: Sequence[str] = ()) -> tuple[str, ...]:
    """The ``keep`` candidates that go on to the next rung: the best validation scores so far (ties: the earlier in
    ``scores``, which lists cheaper models first). Candidates without a score (failed, no trial completed) and those
    whose study is ``exhausted`` (its trial limit reached: more time buys nothing) never go on."""
    eligible = [
        (-float(score), i, name)
        for i, (name, score) in enumerate(scores.items())
        if score is not None and math.isfinite(score) and name not in exhausted
    ]
    return tuple(name for _, _, name in sorted(eligible)[:keep])


def leftover_next(scores: Mapping[str, float | None], exhausted: Sequence[str], already: Sequence[str]) -> str | None:
    """The deep candidate that gets the search time left after the last rung: the best validation score among those
    whose study can still run (not ``exhausted``) and that have not had leftover time ``already``; None when none."""
    best = halve(scores, 1, [*exhausted, *already])
    return best[0] if best else None
