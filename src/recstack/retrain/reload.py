"""The retrain's two questions to the service: which bundle it serves (``GET <service_url>/admin/metadata``) and, at
the end, to serve the new one (``POST <service_url>/admin/reload``).

Both carry an admin key (``Authorization: Bearer <key>``), read from an environment variable or a file, never from a
config. ``/admin/metadata`` answers, per experiment arm, the bundle folder the service loaded, the reference it was
given (a folder or a BentoML model tag), the ``model`` tag its answers carry and the manifest digest. ``/admin/reload``
names the bundle (its BentoML model tag when it was registered, else its folder) and answers 200
``{"bundle", "previous", ...}`` once the worker that took the request serves it (the others follow), and a 4xx
``{"error", "field"}`` when the bundle is missing, tampered with or incompatible, in which case the service keeps
serving the old one. Only the standard library's HTTP client: the retrain job needs no serving dependencies for this.
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
METADATA_PATH = "/admin/metadata"


class ServiceError(RuntimeError):
    """The service refused or could not be reached; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ReloadError(ServiceError):
    """The service did not load the bundle."""


@dataclass(frozen=True)
class Reloaded:
    bundle: str
    previous: str | None
    answer: dict[str, Any]


@dataclass(frozen=True)
class ServedArm:
    """What one arm of the service serves (``GET /admin/metadata``)."""

    arm: str | None
    """The experiment arm (None: the service runs no experiment)."""
    bundle: str
    """The folder the service loaded it from: a path on the service's machine."""
    ref: str
    """What the service was told to serve: that folder, or a BentoML model tag."""
    tag: str
    """The ``model`` its answers carry."""
    digest: str
    """The bundle manifest's digest."""


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


def _call(
    service_url: str,
    path: str,
    key: str,
    body: dict[str, Any] | None,
    timeout_s: float,
    error: type[ServiceError] = ServiceError,
) -> dict[str, Any]:
    """``GET`` (``body`` None) or ``POST`` a JSON body to ``<service_url><path>``; the JSON answer, or ``error`` with
    the service's ``error`` and ``field`` (or why it could not be reached)."""
    url = service_url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {key}"}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
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
        raise error(f"{url} answered {exc.code}: {detail}", exc.code) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise error(f"{url} could not be reached: {reason}") from None
    if not isinstance(answer, dict):
        raise error(f"{url} answered {type(answer).__name__} where a JSON object was expected")
    return answer


def served_bundles(service_url: str, key: str, *, timeout_s: float = 30.0) -> list[ServedArm]:
    """Which bundle each arm of the service at ``service_url`` serves (the first arm is the one a reload without an
    arm replaces); raises :class:`ServiceError` when it refuses, cannot be reached or answers something else."""
    answer = _call(service_url, METADATA_PATH, key, None, timeout_s)
    try:
        return [
            ServedArm(
                arm=None if a.get("arm") is None else str(a["arm"]),
                bundle=str(a["bundle"]),
                ref=str(a["ref"]),
                tag=str(a["tag"]),
                digest=str(a["digest"]),
            )
            for a in answer["arms"]
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ServiceError(
            f"{service_url}{METADATA_PATH} answered no per-arm bundles ({exc!r}): {answer!r:.300}"
        ) from None


def request_reload(
    service_url: str, bundle: str, key: str, *, arm: str | None = None, timeout_s: float = 120.0
) -> Reloaded:
    """Ask the service at ``service_url`` to serve ``bundle``; returns its answer, raises :class:`ReloadError` when it
    refuses (with its ``error`` and ``field``) or cannot be reached."""
    body: dict[str, Any] = {"bundle": bundle}
    if arm is not None:
        body["arm"] = arm
    answer = _call(service_url, RELOAD_PATH, key, body, timeout_s, ReloadError)
    return Reloaded(str(answer.get("bundle", bundle)), answer.get("previous"), answer)
