"""Telling the service to serve the new bundle: ``POST <service_url>/admin/reload``.

The request names the bundle (its BentoML model tag when it was registered, else its folder) and carries an admin key
(``Authorization: Bearer <key>``), read from an environment variable or a file, never from a config. The service
answers 200 ``{"bundle", "previous", ...}`` once the worker that took the request serves it (the others follow), and
a 4xx ``{"error", "field"}`` when the bundle is missing, tampered with or incompatible, in which case it keeps serving
the old one. Only the standard library's HTTP client: the retrain job needs no serving dependencies for this.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RELOAD_PATH = "/admin/reload"


class ReloadError(RuntimeError):
    """The service did not load the bundle; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Reloaded:
    bundle: str
    previous: str | None
    answer: dict[str, Any]


def admin_key(env: str | None, file: str | Path | None) -> str:
    """The admin API key: the environment variable ``env`` when set and non-empty, else the first line of ``file``.
    Raises ``ValueError`` saying where it looked when neither holds one."""
    if env and os.environ.get(env, "").strip():
        return os.environ[env].strip()
    if file:
        try:
            text = Path(file).read_text().strip()
        except OSError as exc:
            raise ValueError(f"the admin key file {file} cannot be read ({exc.strerror})") from None
        if text:
            return text.splitlines()[0].strip()
    raise ValueError(
        f"no admin API key: set ${env or '<reload.key_env>'} or reload.key_file to a file holding one "
        "(recstack-keys create role=admin prints one)"
    )


def request_reload(
    service_url: str, bundle: str, key: str, *, arm: str | None = None, timeout_s: float = 120.0
) -> Reloaded:
    """Ask the service at ``service_url`` to serve ``bundle``; returns its answer, raises :class:`ReloadError` when it
    refuses (with its ``error`` and ``field``) or cannot be reached."""
    body: dict[str, Any] = {"bundle": bundle}
    if arm is not None:
        body["arm"] = arm
    request = urllib.request.Request(
        service_url.rstrip("/") + RELOAD_PATH,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        try:
            parsed = json.loads(detail)
            detail = f"{parsed.get('error', detail)} (field {parsed.get('field')})"
        except (ValueError, AttributeError):
            pass
        raise ReloadError(f"{service_url}{RELOAD_PATH} answered {exc.code}: {detail}", exc.code) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReloadError(f"{service_url}{RELOAD_PATH} could not be reached: {reason}") from None
    return Reloaded(str(answer.get("bundle", bundle)), answer.get("previous"), answer)
