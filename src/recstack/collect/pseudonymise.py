"""Keyed pseudonyms: HMAC-SHA256 of an id under a secret key, so the lake, Redis and bundles never hold a raw id.

A signed-in user id and a visitor cookie id live in separate namespaces (``u:`` / ``v:`` before hashing), so a
visitor id that happens to equal a user id never merges them; ``POST /identify`` links the two explicitly. An e-mail
address a site sends in a ``profile`` event becomes an identity hash (``i:`` namespace, :meth:`Pseudonymiser.identity`)
that only says "these accounts are one person" (recstack.profiles merges them); it is never a subject's id. Without the
key a pseudonym cannot be reversed or recomputed from a guessed id (unlike a plain hash of a small id space). The same
key must be used by every collector, consumer and server of one deployment; rotating it starts new pseudonyms
(README, privacy: rotation).
"""

from __future__ import annotations

import functools
import hmac

PSEUDONYM_HEX = 32  # 128 bits of the HMAC: collisions are out of reach for any user count


class Pseudonymiser:
    """``user(id)`` / ``visitor(id)`` -> 32 hex characters."""

    __slots__ = ("_key", "user", "visitor")

    def __init__(self, key: bytes, cache_size: int = 65_536) -> None:
        if len(key) < 32:
            raise ValueError("the pseudonymisation key must be at least 32 bytes")
        self._key = key
        # Active users send many events: their pseudonyms are cached (bounded) per process, not recomputed.
        self.user = functools.lru_cache(maxsize=cache_size)(self._user)
        self.visitor = functools.lru_cache(maxsize=cache_size)(self._visitor)

    def _user(self, user_id: str) -> str:
        return hmac.digest(self._key, b"u:" + user_id.encode(), "sha256").hex()[:PSEUDONYM_HEX]

    def _visitor(self, visitor_id: str) -> str:
        return hmac.digest(self._key, b"v:" + visitor_id.encode(), "sha256").hex()[:PSEUDONYM_HEX]

    def identity(self, normalised_email: str) -> str:
        """The identity hash of an e-mail address already normalised (recstack.collect.intake.normalise_email): equal
        for equal addresses, in a namespace of its own so it never equals a user or visitor pseudonym."""
        return hmac.digest(self._key, b"i:" + normalised_email.encode(), "sha256").hex()[:PSEUDONYM_HEX]

    def subject(self, user_id: str | None, visitor_id: str | None) -> tuple[str, bool]:
        """``(pseudonym, anonymous)`` for whichever id is present, the user id first."""
        if user_id:
            return self.user(user_id), False
        if visitor_id:
            return self.visitor(visitor_id), True
        raise ValueError("neither a user id nor a visitor id")
