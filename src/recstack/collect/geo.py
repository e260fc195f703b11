"""Country and region from the client IP, through a MaxMind GeoLite2 / GeoIP2 database file the operator provides.

Optional: off when no file is configured (``collector.geoip_db``). It is looked up before the IP is truncated or
dropped, and only the country code and region (subdivision) code are kept. City or Country databases both work.
"""

from __future__ import annotations

import functools
from pathlib import Path


class GeoLookup:
    """``lookup(ip) -> (country, region)``; ``(None, None)`` for private, unknown or malformed addresses."""

    def __init__(self, path: str | Path) -> None:
        import geoip2.database

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"geoip_db {path} does not exist: download a GeoLite2 City or Country .mmdb from MaxMind")
        self._reader = geoip2.database.Reader(str(path))
        self._city = "City" in self._reader.metadata().database_type
        self.lookup = functools.lru_cache(maxsize=65_536)(self._lookup)  # type: ignore[method-assign]

    def _lookup(self, ip: str) -> tuple[str | None, str | None]:
        import geoip2.errors

        try:
            if self._city:
                found = self._reader.city(ip)
                region = found.subdivisions.most_specific.iso_code if found.subdivisions else None
                return found.country.iso_code, region
            return self._reader.country(ip).country.iso_code, None
        except (geoip2.errors.AddressNotFoundError, ValueError):
            return None, None

    def lookup(self, ip: str) -> tuple[str | None, str | None]:  # replaced by the cached bound method in __init__
        return self._lookup(ip)

    def close(self) -> None:
        self._reader.close()
