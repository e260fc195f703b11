"""Device class, browser family and OS family from a User-Agent, with the maintained ua-parser rules (through the
``user-agents`` package, which adds the mobile / tablet / pc / bot classification). The raw string is never stored.

Parsing costs ~1 ms; real traffic repeats a few thousand distinct strings, so results are cached by string.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

MAX_UA_CHARS = 1024  # longer strings are cut before parsing (and before caching)


@dataclass(frozen=True)
class UserAgentClass:
    device_class: str  # desktop | mobile | tablet | bot | other
    browser_family: str
    os_family: str

    @property
    def is_bot(self) -> bool:
        return self.device_class == "bot"


UNKNOWN = UserAgentClass("other", "Other", "Other")


@functools.lru_cache(maxsize=8192)
def _classify(ua: str) -> UserAgentClass:
    from user_agents import parse

    parsed = parse(ua)
    if parsed.is_bot:
        device = "bot"
    elif parsed.is_tablet:
        device = "tablet"
    elif parsed.is_mobile:
        device = "mobile"
    elif parsed.is_pc:
        device = "desktop"
    else:
        device = "other"
    return UserAgentClass(device, parsed.browser.family or "Other", parsed.os.family or "Other")


def classify(user_agent: str | None) -> UserAgentClass:
    """The classes of a User-Agent header; missing or empty: ``other``."""
    if not user_agent:
        return UNKNOWN
    return _classify(user_agent[:MAX_UA_CHARS])
