"""Durations written the way people write them: ``90s``, ``20m``, ``1.5h`` (a bare number is seconds)."""

from __future__ import annotations

import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*$")


def parse_duration(text: str | int | float, *, name: str = "budget") -> float:
    """Seconds in ``text`` (``"20m"`` -> 1200.0); a clear error for anything else or for a duration <= 0."""
    if isinstance(text, bool):
        raise ValueError(f"{name}={text!r}: expected a duration such as 90s, 20m or 1h")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _PATTERN.match(str(text))
        if match is None:
            raise ValueError(f"{name}={text!r}: expected a duration such as 90s, 20m or 1h (units s, m, h)")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not seconds > 0:
        raise ValueError(f"{name}={text!r}: must be more than 0 seconds")
    return seconds


def format_duration(seconds: float) -> str:
    """``1200.0`` -> ``"20m"``, ``95`` -> ``"95s"``, ``5400`` -> ``"1.5h"``: short and parseable again."""
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and (seconds / size * 10).is_integer():
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
