"""The service's settings: one typed class over ``configs/serve.yaml``, the only place that holds their defaults.

``recstack-serve`` composes the config (Hydra overrides on its command line), validates it here and hands it to the
BentoML workers as one JSON variable, ``$RECSTACK_SERVE_SETTINGS``; the worker parses it with the same class. A worker
started without it (``RECSTACK_BUNDLE=... bentoml serve serving.service:Recommender``, or a Bento) composes
``configs/serve.yaml`` itself, with ``bundle`` from ``$RECSTACK_BUNDLE``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from recstack.collect.settings import CollectSettings
from recstack.serving.experiments import NO_ARM, ExperimentSettings
from recstack.serving.online_store import RedisStoreConfig

if TYPE_CHECKING:
    from recstack.serving.access import AccessPolicy
    from recstack.serving.rate_limit import RateLimitPolicy

SETTINGS_ENV = "RECSTACK_SERVE_SETTINGS"
BUNDLE_ENV = "RECSTACK_BUNDLE"


class ServeSettings(BaseModel):
    """Everything the server reads, typed; the defaults and the reasons for them are in ``configs/serve.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    bundle: str = Field(description="bundle folder or BentoML model tag ('' when not given)")
    host: str
    port: int = Field(ge=0, le=65535)
    workers: int = Field(ge=1)
    redis_url: str
    redis_prefix: str
    redis_timeout_s: float = Field(gt=0)
    redis_max_connections: int = Field(ge=1)
    redis_backoff_s: float = Field(ge=0)
    redis_max_backoff_s: float = Field(ge=0)
    redis_failure_threshold: int = Field(ge=1)
    recent_max: int = Field(ge=1)
    recent_ttl_s: int = Field(ge=1)
    n_candidates: int = Field(ge=1)
    ef_search: int = Field(ge=1)
    max_body_bytes: int = Field(ge=1)
    max_header_bytes: int = Field(ge=1024)
    request_timeout_s: float = Field(gt=0)
    gc_freeze_after: int = Field(ge=0)
    access_log: bool
    tracing: bool
    bentoml_config: str | None
    startup_timeout_s: float = Field(gt=0)
    collect: bool = Field(description="mount the collector (/events, /pixel.gif, /identify, /consent, /privacy)")
    consent_for_personalisation: bool = Field(description="/recommend personalises only with consent")
    max_events_body_bytes: int = Field(ge=1)
    auth: bool
    api_keys_file: str | None
    api_keys_reload_s: float = Field(gt=0)
    rate_limit: bool
    rate_limit_per_key: str
    rate_limit_per_ip: str
    rate_limit_pixel_per_ip: str
    rate_limit_ip_roles: list[str]
    rate_limit_lease_fraction: float = Field(ge=0, le=1)
    rate_limit_prefix: str
    collector: CollectSettings
    stop_timeout_s: float = Field(gt=0)
    segments_api: bool = Field(description="mount the profile and segment API and /dashboard/segments")
    segments_cache_ttl_s: float = Field(gt=0)
    segments_cold_start: bool = Field(description="cold users get their segments' popularity")
    segments_lake: str | None = Field(description="the event lake POST /segments dry runs read")
    segments_items_path: str | None
    segments_horizon_days: int = Field(ge=1)
    segments_export_page: int = Field(ge=1, le=100_000)
    items_poll_s: float = Field(gt=0, le=10, description="how often each worker reads other workers' item upserts")
    items_neighbours: int = Field(ge=1, le=1000, description="catalogue items a live item's vector is estimated from")
    impressions: bool = Field(description="record every /recommend answer in the lake (needs collect: true)")
    impressions_flush_s: float = Field(gt=0, le=60, description="each worker sends its buffered impressions this often")
    impressions_max_buffer: int = Field(ge=1, description="impressions a worker holds while Redis is away")
    reload_poll_s: float = Field(gt=0, le=60, description="each worker reads reload announcements this often")
    experiment: ExperimentSettings
    bundle_verified: bool = Field(
        default=False,
        description="set only by recstack-serve after it hashed the bundle, so its workers skip hashing it again; "
        "not a configs/serve.yaml key (from_config refuses it): a bare `bentoml serve` always verifies",
    )

    @classmethod
    def from_config(cls, cfg: Any) -> ServeSettings:
        """From a composed ``serve`` config (a ``DictConfig`` or a plain mapping); ``bundle: ???`` becomes ``''``."""
        from omegaconf import DictConfig, OmegaConf

        data: Mapping[str, Any] = (
            OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[assignment]
            if isinstance(cfg, DictConfig)
            else cfg
        )
        values = {k: v for k, v in data.items() if k != "hydra"}
        if values.pop("bundle_verified", False):
            raise ValueError(
                "bundle_verified is not a setting: recstack-serve sets it after verifying the bundle itself; "
                "remove it from the config or the command line"
            )
        if values.get("bundle") in (None, "???"):
            values["bundle"] = ""
        return cls.model_validate(values)

    @classmethod
    def compose(cls, overrides: Sequence[str] = ()) -> ServeSettings:
        """``configs/serve.yaml`` with Hydra overrides (tests, scripts, a worker started by hand)."""
        from recstack.config import compose

        return cls.from_config(compose("serve", overrides))

    @classmethod
    def from_env(cls) -> ServeSettings:
        """What a worker runs with: ``$RECSTACK_SERVE_SETTINGS`` if set, else ``configs/serve.yaml`` with the bundle
        from ``$RECSTACK_BUNDLE`` (``''`` when neither names one: :meth:`require_bundle` says what to do)."""
        raw = os.environ.get(SETTINGS_ENV)
        if raw:
            return cls.model_validate_json(raw)
        settings = cls.compose()
        return settings.model_copy(update={"bundle": os.environ.get(BUNDLE_ENV, "")})

    def to_env(self) -> dict[str, str]:
        return {SETTINGS_ENV: self.model_dump_json()}

    def arm_bundles(self) -> dict[str, str]:
        """Each arm's configured bundle: the experiment's arms, else one arm (``''``) serving ``bundle``."""
        if self.experiment.name is not None:
            return {arm: spec.bundle for arm, spec in self.experiment.arms.items()}
        return {NO_ARM: self.require_bundle()}

    def require_bundle(self) -> str:
        if self.experiment.name is not None:
            return next(iter(self.experiment.arms.values())).bundle
        if not self.bundle:
            raise RuntimeError(
                f"no bundle to serve: ${SETTINGS_ENV} and ${BUNDLE_ENV} are unset. Start the server with "
                "`recstack-serve bundle=<bundle folder or model tag>`, or set RECSTACK_BUNDLE for a bare `bentoml serve`"
            )
        return self.bundle

    def redis_store(self) -> RedisStoreConfig:
        return RedisStoreConfig(
            url=self.redis_url,
            key_prefix=self.redis_prefix,
            max_events=self.recent_max,
            ttl_s=self.recent_ttl_s,
            timeout_s=self.redis_timeout_s,
            max_connections=self.redis_max_connections,
            backoff_s=self.redis_backoff_s,
            max_backoff_s=self.redis_max_backoff_s,
            failure_threshold=self.redis_failure_threshold,
        )

    def access_policy(self) -> AccessPolicy:
        """Who may call what (recstack.serving.access); auth on without a key file is an error saying what to do."""
        from recstack.serving.access import AccessPolicy
        from recstack.serving.api_keys import KeyRing

        ring = (
            KeyRing.from_file(self.api_keys_file, self.api_keys_reload_s) if self.auth and self.api_keys_file else None
        )
        return AccessPolicy(ring, enforce=self.auth)

    def rate_limit_policy(self) -> RateLimitPolicy:
        from recstack.serving.rate_limit import EXEMPT_ROUTES, RateLimitPolicy

        return RateLimitPolicy(
            per_key=self.rate_limit_per_key,
            per_ip=self.rate_limit_per_ip,
            per_route_ip={"GET /pixel.gif": self.rate_limit_pixel_per_ip},
            ip_roles=tuple(self.rate_limit_ip_roles),
            exempt=EXEMPT_ROUTES,
            lease_fraction=self.rate_limit_lease_fraction,
            redis_url=self.redis_url,
            key_prefix=self.rate_limit_prefix,
            timeout_s=self.redis_timeout_s,
            max_connections=self.redis_max_connections,
            backoff_s=self.redis_backoff_s,
            max_backoff_s=self.redis_max_backoff_s,
            failure_threshold=self.redis_failure_threshold,
        )


@functools.cache
def serve_yaml_default(key: str) -> Any:
    """One key of ``configs/serve.yaml`` as written there, for code that runs outside the server (the offline
    pipeline's defaults). Read with OmegaConf, not Hydra, so it also works inside another Hydra app."""
    from omegaconf import OmegaConf

    from recstack.config import config_dir

    return OmegaConf.load(config_dir() / "serve.yaml")[key]
