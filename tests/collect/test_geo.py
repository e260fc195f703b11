"""Country and region from the client IP through an operator-provided MaxMind database, looked up before the IP is
dropped. The database here is written by mmdb-writer in MaxMind's format (GeoLite2 files cannot be shipped)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis

from recstack.collect.app import build_collector
from recstack.collect.geo import GeoLookup
from recstack.collect.records import decode_entry
from recstack.config import collect_settings, config_dir


@pytest.fixture
def city_db(tmp_path: Path) -> Path:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    writer.insert_network(
        IPSet(["198.51.100.0/24"]), {"country": {"iso_code": "FR"}, "subdivisions": [{"iso_code": "IDF"}]}
    )
    writer.insert_network(
        IPSet(["2001:db8::/32"]), {"country": {"iso_code": "DE"}, "subdivisions": [{"iso_code": "BE"}]}
    )
    path = tmp_path / "city.mmdb"
    writer.to_db_file(str(path))
    return path


def test_lookup_finds_country_and_region(city_db: Path) -> None:
    geo = GeoLookup(city_db)
    assert geo.lookup("198.51.100.7") == ("FR", "IDF")
    assert geo.lookup("2001:db8::1") == ("DE", "BE")
    assert geo.lookup("192.0.2.1") == (None, None)  # not in the database
    assert geo.lookup("not an address") == (None, None)


def test_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="GeoLite2"):
        GeoLookup(tmp_path / "nope.mmdb")


@pytest.mark.redis
@pytest.mark.anyio
async def test_the_collector_stores_the_location_and_drops_the_ip(city_db: Path, tmp_path: Path) -> None:
    stream = f"test:{tmp_path.name}:geo"
    settings = collect_settings(
        [f"stream={stream}", f"recent_prefix='{stream}:recent:'", f"geoip_db={city_db}", "consent_required=false"]
    )
    collector = build_collector(settings, str(config_dir() / "mappings" / "demographics.yaml"))
    transport = httpx.ASGITransport(app=collector.app(), client=("198.51.100.42", 1234))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
            answer = await http.post("/events", json={"user_id": "u", "item_id": "1", "event_type": "view"})
        assert answer.status_code == 202
        [(_table, rows)] = [decode_entry(fields) for _, fields in redis.Redis().xrange(stream)]
        assert (rows[0]["geo_country"], rows[0]["geo_region"], rows[0]["ip"]) == ("FR", "IDF", None)
        assert "198.51.100" not in json.dumps(rows)
    finally:
        redis.Redis().delete(stream, *redis.Redis().keys(f"{stream}*"))
