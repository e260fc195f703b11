"""Demographic attributes standardised to one controlled vocabulary (``configs/mappings/demographics.yaml``).

Sites send ages, genders, countries and languages in many spellings. The lake holds only the standard values; an
input that maps to nothing is stored as null (never as free text, which could carry anything) and counted, so an
operator sees which spellings to add. A numeric age becomes its band: the age itself is never stored.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

COLUMNS: tuple[str, ...] = ("age_band", "gender", "country", "language")


def _band_labels(edges: list[int]) -> list[str]:
    labels = [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(edges)]
    return [*labels, f"{edges[-1]}+"]


@dataclass(frozen=True)
class Vocabulary:
    aliases: dict[str, dict[str, str]]
    iso2: frozenset[str] = frozenset()
    age_edges: tuple[int, ...] = (0, 18, 25, 35, 45, 55, 65)
    _labels: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"vocabulary file {path}: {error}") from None
        unknown = set(raw) - set(COLUMNS)
        if unknown:
            raise ValueError(f"vocabulary file {path}: unknown column(s) {sorted(unknown)}; use {list(COLUMNS)}")
        aliases = {
            c: {str(k).strip().lower(): str(v) for k, v in (raw.get(c, {}).get("aliases") or {}).items()}
            for c in COLUMNS
        }
        iso2 = frozenset(c for c in COLUMNS if (raw.get(c) or {}).get("iso2"))
        edges = tuple(int(e) for e in (raw.get("age_band") or {}).get("bands", cls.age_edges))
        if list(edges) != sorted(set(edges)) or not edges:
            raise ValueError(f"vocabulary file {path}: age_band.bands must be increasing integers")
        return cls(aliases=aliases, iso2=iso2, age_edges=edges, _labels=tuple(_band_labels(list(edges))))

    @property
    def age_bands(self) -> tuple[str, ...]:
        return self._labels or tuple(_band_labels(list(self.age_edges)))

    def standardise(self, column: str, value: object) -> str | None:
        """The standard value of one attribute, or None when it maps to nothing."""
        if value is None:
            return None
        text = str(value).strip().lower()
        if not text:
            return None
        if column == "age_band":
            try:
                age = float(text)
            except ValueError:
                mapped = self.aliases["age_band"].get(text)
                return mapped if mapped in self.age_bands else None
            if not 0 <= age < 130:
                return None
            return self.age_bands[bisect.bisect_right(self.age_edges, age) - 1] if age >= self.age_edges[0] else None
        mapped = self.aliases[column].get(text)
        if mapped is not None:
            return mapped
        if column in self.iso2 and len(text) == 2 and text.isalpha() and text.isascii():
            return text.upper() if column == "country" else text
        return None
