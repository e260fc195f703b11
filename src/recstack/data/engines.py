"""Which engine runs the batch jobs' per-row work (prepare, profiles, segments): the ``engine`` config group
(``configs/engine/``).

* ``duckdb`` (default): numpy, Arrow and DuckDB in this process (:mod:`recstack.data.build_split`).
* ``spark``: PySpark (:mod:`recstack.data.spark_engine`), the same split and the same folder hash; the profiles and
  segments from the same SQL (recstack.profiles.profiles_spark, recstack.profiles.segments_spark).

Light on purpose (no pandas, no Spark): the CLI imports it to name engine errors before anything heavy loads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recstack.data.spark_engine import SparkEngine

ENGINES: tuple[str, ...] = ("duckdb", "spark")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` locations (object storage, HDFS, ``file://``): only Spark reads and writes those."""
    return bool(_URI.match(str(path)))


class EngineError(RuntimeError):
    """An engine cannot run this job here (missing runtime, unsupported option); the message says what to do."""


def engine_from_config(node: Mapping[str, Any] | None) -> SparkEngine | None:
    """The engine an ``engine`` config node names (plain data: :func:`recstack.config.engine_node`): ``None`` for the
    embedded default, else the engine object (which starts its runtime lazily; call its ``close()`` when done)."""
    name = str((node or {}).get("name", "duckdb"))
    if name == "duckdb":
        return None
    if name == "spark":
        from recstack.data.spark_engine import SparkEngine, SparkSettings

        return SparkEngine(SparkSettings.from_mapping(node))
    raise ValueError(f"engine={name!r} is not one of {list(ENGINES)}")
