"""The collector's settings: one typed class over ``configs/collector/default.yaml`` (the only home of defaults).

Composed from Hydra configs by :func:`recstack.config.collect_settings` (this layer stays Hydra-free)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from recstack.collect.records import StreamNames


class CollectSettings(BaseModel):
    """Everything the collector, the consumer and the lake tools read; reasons for each default are in the YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str
    stream: str = Field(min_length=1)
    group: str = Field(min_length=1)
    max_backlog: int = Field(ge=1)
    lake: str = Field(min_length=1)
    max_batch: int = Field(ge=1, le=10_000)
    max_text_chars: int = Field(ge=1)
    max_future_s: int = Field(ge=0)
    min_timestamp_s: int = Field(ge=0)
    hmac_key_env: str
    hmac_key_file: str | None
    ip_mode: Literal["drop", "truncate"]
    geoip_db: str | None
    vocabulary: str | None
    cookie_name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    cookie_secure: bool
    cookie_samesite: Literal["lax", "strict", "none"]
    retention_days: int = Field(ge=1)
    cors_origins: list[str]
    consent_required: bool
    policy_version: str
    recent_prefix: str
    recent_max: int = Field(ge=1)
    recent_ttl_s: int = Field(ge=1)
    consume_batch: int = Field(ge=1)
    consume_block_ms: int = Field(ge=1)
    flush_interval_s: float = Field(gt=0)

    @property
    def names(self) -> StreamNames:
        return StreamNames(stream=self.stream, group=self.group)

    @property
    def lake_path(self) -> Path:
        return Path(self.lake)

    @property
    def cookie_max_age_s(self) -> int:
        return self.retention_days * 86400

    def hmac_key(self) -> bytes:
        """The pseudonymisation key: ``$<hmac_key_env>`` or the file ``hmac_key_file``; neither is an error that says
        how to make one (a key generated here would change pseudonyms at every start)."""
        raw = os.environ.get(self.hmac_key_env, "")
        if raw:
            key = raw.encode()
        elif self.hmac_key_file:
            path = Path(self.hmac_key_file)
            if not path.is_file():
                raise ValueError(
                    f"hmac_key_file {path} does not exist; create it with `recstack-collect keygen {path}`"
                )
            key = path.read_bytes().strip()
        else:
            raise ValueError(
                f"no pseudonymisation key: set ${self.hmac_key_env} or collector.hmac_key_file "
                "(`recstack-collect keygen <file>` writes one; keep it out of the repo)"
            )
        if len(key) < 32:
            raise ValueError("the pseudonymisation key must be at least 32 bytes (recstack-collect keygen makes 64)")
        return key
