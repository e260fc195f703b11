"""A/B experiments between bundles: which arm a user sees, decided by a hash, so every worker, replica and restart
agrees without storing anything.

A user's arm is ``blake2b(experiment name, user key)`` read as a number in [0, 1) and placed on the arms' cumulative
weights. The same user in the same experiment always lands in the same arm; a new experiment name reshuffles everyone
(users are not carried from one experiment's treatment into the next one's). Changing the weights moves only the
users whose number falls in the shifted band. The key is the user's pseudonym when the collector is on (the raw id
otherwise), and a request with no id at all (a first visit, no cookie yet) goes to the first arm: it cannot be
followed up, so it should not dilute any arm's figures.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

ARM_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
NO_ARM = ""
"""The one arm of a service without an experiment."""


class ArmSettings(BaseModel):
    """One arm: the bundle it serves and its share of the users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bundle: str = Field(min_length=1, description="bundle folder or BentoML model tag")
    weight: float = Field(gt=0, description="share of the users (weights are normalised over the arms)")


class ExperimentSettings(BaseModel):
    """``experiment`` in configs/serve.yaml: no name = no experiment (every user gets ``bundle``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    arms: dict[str, ArmSettings] = Field(default_factory=dict)

    @field_validator("arms", mode="before")
    @classmethod
    def _no_arms(cls, value: object) -> object:
        return {} if value is None else value  # configs/serve.yaml says null: a dict override replaces it whole

    def model_post_init(self, _context: object) -> None:
        if self.name is None:
            if self.arms:
                raise ValueError("experiment.arms is set but experiment.name is not: name the experiment")
            return
        if len(self.arms) < 2:
            raise ValueError(f"experiment {self.name!r} needs at least two arms, got {sorted(self.arms)}")
        bad = [arm for arm in self.arms if not re.match(ARM_PATTERN, arm)]
        if bad:
            raise ValueError(f"arm names {bad} must match {ARM_PATTERN} (lowercase, short: they label metrics)")


@dataclass(frozen=True)
class Assignment:
    """Deterministic arm assignment for one experiment."""

    name: str
    arms: tuple[str, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def build(cls, name: str, weights: Mapping[str, float]) -> Assignment:
        total = float(sum(weights.values()))
        if not weights or total <= 0:
            raise ValueError("an experiment needs arms with positive weights")
        arms = tuple(weights)
        running, cumulative = 0.0, []
        for arm in arms:
            running += weights[arm] / total
            cumulative.append(running)
        cumulative[-1] = 1.0  # no user falls past the last arm through rounding
        return cls(name, arms, tuple(cumulative))

    def arm(self, key: str) -> str:
        """The arm of ``key`` (a user's pseudonym or id); ``''`` (no id) gets the first arm."""
        if not key:
            return self.arms[0]
        return self.arms[bisect.bisect_right(self.cumulative, unit_hash(self.name, key))]


def unit_hash(experiment: str, key: str) -> float:
    """A uniform number in [0, 1) from the experiment's name and a key (64 bits of blake2b)."""
    digest = hashlib.blake2b(f"{experiment}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64
