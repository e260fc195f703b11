"""API keys: a key ring of SHA-256 hashes read from a secret file, and the checks a bearer token goes through.

The file (``recstack-keys create ...`` writes it, mode 0600) holds only hashes, never keys::

    keys:
      - name: storefront
        role: collect
        sha256: 9f86d0...          # hex SHA-256 of the key
        created: "2026-12-06T10:00:00Z"

Why a plain SHA-256 and not a slow password hash: keys are 256-bit random strings (``secrets.token_urlsafe(32)``),
so there is nothing to brute-force, and the hash is computed on every uncached request.

A running server re-reads the file when it changes (checked at most every ``reload_s``), so ``recstack-keys revoke``
takes effect within that time in every worker, without a restart. A file that turns unreadable or malformed later
keeps the last good keys in force (logged as an error): a typo must not lock every client out, nor crash a worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("recstack.auth")

COLLECT = "collect"
RECOMMEND = "recommend"
ANALYST = "analyst"
ADMIN = "admin"
ROLES = (COLLECT, RECOMMEND, ANALYST, ADMIN)
"""``collect``: send events and consent; ``recommend``: ask for recommendations; ``analyst``: read profiles and
segments and export members (pseudonyms), not change anything; ``admin``: everything."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
TOKEN_PATTERN = re.compile(rb"^[A-Za-z0-9._~+/-]+=*$")
"""RFC 6750's ``b64token``; ``token_urlsafe`` keys use a subset of it."""
MAX_TOKEN_BYTES = 256
"""Longer tokens are malformed: never hash (or cache) an arbitrarily long client string."""
CACHE_SIZE = 256
"""Verified tokens remembered per process (one per live key in practice; cleared when full or on reload)."""
FIELDS = ("name", "role", "sha256", "created")


class KeyFileError(ValueError):
    """The key file is missing, unreadable or malformed; the message says which and what to do."""


@dataclass(frozen=True)
class KeyEntry:
    """One key as the file records it: who (``name``), what it may do (``role``), and the hash of the key."""

    name: str
    role: str
    sha256: str
    created: str

    @property
    def digest(self) -> bytes:
        return bytes.fromhex(self.sha256)

    def as_dict(self) -> dict[str, str]:
        return {field: getattr(self, field) for field in FIELDS}


def hash_key(token: str | bytes) -> str:
    """The hex SHA-256 the key file stores for a key."""
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).hexdigest()


def new_key(role: str, name: str) -> tuple[str, KeyEntry]:
    """A fresh random key and the entry to store for it (the key itself is stored nowhere)."""
    check_role(role)
    check_name(name)
    token = secrets.token_urlsafe(32)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return token, KeyEntry(name=name, role=role, sha256=hash_key(token), created=created)


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"key name {name!r} is not valid: 1-64 characters, letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def parse_entries(data: Any, source: str) -> list[KeyEntry]:
    """Validate the file's parsed content: a ``keys`` list of complete entries, unique names and hashes."""
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) - {"keys"}:
        raise KeyFileError(f"{source}: expected a mapping with one 'keys' list (as recstack-keys writes it)")
    raw = data.get("keys") or []
    if not isinstance(raw, list):
        raise KeyFileError(f"{source}: 'keys' must be a list")
    entries: list[KeyEntry] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for i, item in enumerate(raw):
        where = f"{source}: keys[{i}]"
        if not isinstance(item, dict) or set(item) != set(FIELDS):
            raise KeyFileError(f"{where} must have exactly the fields {', '.join(FIELDS)}")
        values = {field: item[field] for field in FIELDS}
        if not all(isinstance(v, str) for v in values.values()):
            values["created"] = str(values["created"])  # YAML reads an unquoted timestamp as a datetime
            if not all(isinstance(v, str) for v in values.values()):
                raise KeyFileError(f"{where}: every field must be a string")
        try:
            check_name(values["name"])
            check_role(values["role"])
        except ValueError as error:
            raise KeyFileError(f"{where}: {error}") from None
        if not _SHA256_HEX.match(values["sha256"]):
            raise KeyFileError(f"{where}: sha256 must be 64 lowercase hex characters (the hash, never the key)")
        if values["name"] in names:
            raise KeyFileError(f"{where}: the name {values['name']!r} is used twice; names must be unique")
        if values["sha256"] in hashes:
            raise KeyFileError(f"{where}: the same key hash appears twice")
        names.add(values["name"])
        hashes.add(values["sha256"])
        entries.append(KeyEntry(**values))
    return entries


def read_key_file(path: str | os.PathLike[str]) -> list[KeyEntry]:
    """The entries of a key file (YAML, or JSON when it ends in ``.json``).

    A file that others may write is refused: whoever can write it can add an admin key. (Readable by others is
    allowed: it holds only hashes of random keys.)"""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(
            f"API key file {path} does not exist: create it with `recstack-keys create role=admin file={path}` "
            "(keep it outside the repository), or set api_keys_file to the right path"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise KeyFileError(f"API key file {path} cannot be read: {error}") from None
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise KeyFileError(
            f"API key file {path} is writable by group or others (mode {stat.S_IMODE(mode):o}), so anyone could "
            f"add a key to it: run `chmod 600 {path}`"
        )
    if path.suffix == ".json":
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError as error:
            raise KeyFileError(f"API key file {path} is not valid JSON: {error}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise KeyFileError(f"API key file {path} is not valid YAML: {error}") from None
    return parse_entries(data, str(path))


HEADER = (
    "# recstack API keys: SHA-256 hashes only, never the keys themselves. Managed with recstack-keys\n"
    "# (create / list / revoke); keep this file outside the repository, mode 0600.\n"
)


def write_key_file(path: str | os.PathLike[str], entries: Sequence[KeyEntry]) -> None:
    """Replace the key file atomically (temporary file, fsync, rename, fsync the folder), mode 0600.

    A running server therefore reads either the old file or the new one, never half of one."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.suffix == ".json":
        text = json.dumps({"keys": [e.as_dict() for e in entries]}, indent=2) + "\n"
    else:
        text = HEADER + yaml.safe_dump({"keys": [e.as_dict() for e in entries]}, sort_keys=False)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class KeyRing:
    """The keys a server accepts, by the SHA-256 of the key.

    Verifying a token hashes it and looks the digest up in a dict. That is constant-time with respect to the
    secrets: the only comparison is between digests, and learning how much of the SHA-256 of a guess matches a stored
    digest says nothing about a key that matches. Verified tokens are cached (bounded) so a client's repeated key
    costs one dict lookup; unknown tokens are never cached, so junk cannot evict them.
    """

    def __init__(
        self,
        entries: Sequence[KeyEntry],
        *,
        path: Path | None = None,
        reload_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._reload_s = float(reload_s)
        self._clock = clock
        self._signature: tuple[int, int, int] | None = None
        self._next_check = clock() + self._reload_s
        self._install(entries)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], reload_s: float) -> KeyRing:
        """The keys of ``path``; :class:`KeyFileError` when it is missing or malformed (a server must not start
        with auth on and no usable keys). ``reload_s``: how often, at most, the file is checked for changes."""
        path = Path(path)
        entries = read_key_file(path)
        ring = cls(entries, path=path, reload_s=reload_s)
        ring._signature = _signature(path)
        if not entries:
            logger.warning("API key file %s has no keys: every protected route answers 401", path)
        return ring

    def _install(self, entries: Sequence[KeyEntry]) -> None:
        self.entries: tuple[KeyEntry, ...] = tuple(entries)
        self._by_digest = {entry.digest: entry for entry in self.entries}
        self._cache: dict[bytes, KeyEntry] = {}

    def verify(self, token: bytes) -> KeyEntry | None:
        """The entry of a well-formed token (see :func:`well_formed`), or ``None`` for an unknown one."""
        if self._path is not None and self._clock() >= self._next_check:
            self.refresh()
        entry = self._cache.get(token)
        if entry is not None:
            return entry
        entry = self._by_digest.get(hashlib.sha256(token).digest())
        if entry is not None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[token] = entry
        return entry

    def refresh(self) -> bool:
        """Re-read the file if it changed since it was last read; True when new keys were installed."""
        if self._path is None:
            return False
        self._next_check = self._clock() + self._reload_s
        try:
            signature = _signature(self._path)
        except OSError as error:
            if self._signature is not None:
                logger.error(
                    "API key file %s cannot be read (%s); keeping the %d keys loaded before",
                    self._path,
                    error,
                    len(self.entries),
                )
                self._signature = None
            return False
        if signature == self._signature:
            return False
        self._signature = signature  # a malformed file is reported once, not at every check
        try:
            entries = read_key_file(self._path)
        except KeyFileError as error:
            logger.error("%s; keeping the %d keys loaded before", error, len(self.entries))
            return False
        self._install(entries)
        logger.info("API key file %s reloaded: %d keys", self._path, len(entries))
        return True


def _signature(path: Path) -> tuple[int, int, int]:
    """What changes when the file is rewritten (``write_key_file`` renames, so the inode changes too)."""
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def well_formed(token: bytes) -> str | None:
    """Why a bearer token is malformed, or ``None`` when it is well formed (it may still be unknown)."""
    if not token:
        return "the key after 'Bearer' is empty"
    if len(token) > MAX_TOKEN_BYTES:
        return f"the key is longer than {MAX_TOKEN_BYTES} characters"
    if not TOKEN_PATTERN.match(token):
        return "the key has characters an API key never has (letters, digits, '-', '_', '.', '~', '+', '/')"
    return None
