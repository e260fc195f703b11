"""Erasure reaches trained artifacts: who has been erased, and keeping them out of every bundle exported after.

A run trained before someone asked to be erased still holds them (an id-map row, a vector, seen items, ranker rows).
So every export asks who has been erased, from both places an erasure is recorded:

* the lake's audit table, rows ``action == "erasure"`` with ``subject`` the pseudonym (``recstack-collect erase``, and
  the consumer storing the audit entry of ``DELETE /users/{id}``);
* the collector's Redis tombstone set (:func:`recstack.collect.records.tombstone_key`), which ``DELETE /users/{id}``
  fills at once, before its audit row can reach the lake.

A bundle's user id is erased when it is in that set itself (lake-trained bundles hold pseudonyms) or when its
pseudonym under the deployment's key is (bundles trained on raw ids, such as MovieLens): :class:`Erasures`.

Export keeps the user index space as it is, because the arrays and the ONNX ranker are indexed by ``user_idx``: an
erased user loses their ``users.parquet`` row (their id can never be looked up again: serving answers it as a cold
start), their user-vector row is zeroed, their seen row emptied (:func:`redact_users`), and the ranker's per-user rows
zeroed (:func:`zero_ranker_users`). :func:`check_no_erased_users` is the last gate over the written bundle, run before
it is moved into place, so a bundle holding an erased user is never left behind, whatever code path built it.

Only ``onnx`` (for the ranker) is needed beyond the core dependencies; nothing here imports torch.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recstack.bundle.contract import USER_IDX
from recstack.bundle.layout import USERS
from recstack.collect.pseudonymise import Pseudonymiser
from recstack.collect.records import StreamNames, tombstone_key
from recstack.data.lake import parts

log = logging.getLogger(__name__)
ERASURE_ACTION = "erasure"  # the audit row recstack.collect.lake_admin.erase and producer.erase write


class ErasureError(ValueError):
    """Erasures cannot be applied or a bundle would still hold an erased user: the export is refused."""


def _redacted_url(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def lake_erasures(lake: Path | None) -> set[str]:
    """Pseudonyms of the lake's ``erasure`` audit rows; a lake folder that does not exist records none."""
    files = [str(p) for p in parts(lake, "audit")] if lake is not None else []
    if not files:
        return set()
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT DISTINCT subject FROM read_parquet(?) WHERE action = ? AND subject IS NOT NULL",
            [files, ERASURE_ACTION],
        ).fetchall()
    return {row[0] for row in rows}


def redis_tombstones(redis_url: str, names: StreamNames) -> set[str] | None:
    """Members of the collector's tombstone set, or None when Redis cannot be asked (the reason is logged)."""
    try:
        import redis
    except ImportError:
        log.warning("the redis package is not installed (the collect extra): erasure tombstones are not read")
        return None
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=10)
    try:
        return {m.decode() for m in client.sscan_iter(tombstone_key(names), count=10_000)}
    except (redis.RedisError, OSError) as exc:
        log.warning("cannot read erasure tombstones from Redis at %s (%s)", _redacted_url(redis_url), exc)
        return None
    finally:
        client.close()


def erased_subjects(lake: Path | None, redis_url: str | None, names: StreamNames) -> frozenset[str]:
    """Every erased subject's pseudonym: the lake's audit ``erasure`` rows united with the Redis tombstone set.

    ``redis_url`` None, or Redis unreachable: the lake alone, said in a warning, since an erasure whose audit row the
    consumer has not stored yet is then missed (export again once Redis is back)."""
    subjects = lake_erasures(lake)
    tombstones = redis_tombstones(redis_url, names) if redis_url else None
    if tombstones is None:
        log.warning(
            "erased subjects come from the lake's audit table alone (%s, %d subject(s)); erasures still on their way "
            "to the lake are not seen: export again with Redis reachable",
            lake,
            len(subjects),
        )
        return frozenset(subjects)
    return frozenset(subjects | tombstones)


@dataclass(frozen=True)
class Erasures:
    """Erased subjects' pseudonyms and the key that maps a raw user id to its pseudonym (None: no key configured,
    allowed only when nobody has been erased)."""

    subjects: frozenset[str] = frozenset()
    key: bytes | None = None

    def __post_init__(self) -> None:
        if self.subjects and self.key is None:
            raise ErasureError(
                f"{len(self.subjects)} subject(s) have been erased, but no pseudonymisation key is configured, so the "
                "bundle's raw user ids cannot be checked against their pseudonyms: give export the collector's key "
                "($RECSTACK_HMAC_KEY or $RECSTACK_HMAC_KEY_FILE)"
            )

    def mask(self, user_ids: Iterable[str]) -> np.ndarray:
        """Per id: erased (the id itself, or its user pseudonym, is an erased subject)."""
        ids = [str(i) for i in user_ids]
        if not self.subjects:
            return np.zeros(len(ids), dtype=bool)
        assert self.key is not None  # __post_init__
        pseudonym = Pseudonymiser(self.key, cache_size=0).user  # each id once: a cache would only hold memory
        return np.fromiter((i in self.subjects or pseudonym(i) in self.subjects for i in ids), bool, count=len(ids))


@dataclass(frozen=True)
class RedactedUsers:
    """The user side of a bundle without the erased users; ``erased``: their ``user_idx``, ascending."""

    users: pd.DataFrame
    user_embeddings: np.ndarray
    seen: sp.csr_matrix
    erased: np.ndarray


def redact_users(
    users: pd.DataFrame, user_embeddings: np.ndarray, seen: sp.csr_matrix, erasures: Erasures
) -> RedactedUsers:
    """Drop the erased users' rows from ``users``, zero their embedding rows and empty their seen rows; indices kept.
    The inputs are left as they were."""
    hit = erasures.mask(users["user_id"])
    erased = np.sort(users["user_idx"].to_numpy(np.int64)[hit])
    if not len(erased):
        return RedactedUsers(users, user_embeddings, sp.csr_matrix(seen), erased)
    embeddings = np.array(user_embeddings, copy=True)
    embeddings[erased] = 0.0
    keep = np.ones(seen.shape[0])
    keep[erased] = 0.0
    blanked = sp.csr_matrix(sp.diags(keep) @ sp.csr_matrix(seen))
    blanked.eliminate_zeros()
    return RedactedUsers(users.loc[~hit].reset_index(drop=True), embeddings, blanked, erased)


def zero_ranker_users(path: Path, rows: np.ndarray, n_users: int) -> tuple[str, ...]:
    """Zero ``rows`` of every per-user table of the ONNX ranker at ``path`` (rewritten in place); returns their names.

    A per-user table is an initializer the graph's ``user_idx`` input gathers rows of (axis 0): for Wide & Deep's
    serving form that is ``u_vec``, ``u_deep``, ``u_cross`` and ``u_bias``, each ``(n_users + 1, ...)`` with the
    unknown user's row last, which stays. Found from the graph rather than by name or shape, since an item or MLP
    table may have as many rows. Any other use of ``user_idx`` could carry per-user data this cannot find, so it is
    refused."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    initializers = {init.name: init for init in model.graph.initializer}
    tables: set[str] = set()
    for node in model.graph.node:
        if USER_IDX not in node.input:
            continue
        axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        if node.op_type != "Gather" or node.input[-1] != USER_IDX or node.input[0] == USER_IDX or axis != 0:
            raise ErasureError(
                f"{path.name}: {USER_IDX} feeds a {node.op_type} node ({node.name or 'unnamed'}), not a row gather "
                "from a table, so the erased users' rows in it cannot be found; export without the ranker"
            )
        if node.input[0] not in initializers:
            raise ErasureError(f"{path.name}: {USER_IDX} gathers from {node.input[0]!r}, which is not a stored table")
        tables.add(node.input[0])
    for name in sorted(tables):
        array = numpy_helper.to_array(initializers[name]).copy()
        if array.shape[0] != n_users + 1:
            raise ErasureError(
                f"{path.name}: per-user table {name} has {array.shape[0]} rows, the ranker contract says "
                f"{n_users + 1} (n_users + the unknown user)"
            )
        array[rows] = 0
        initializers[name].CopyFrom(numpy_helper.from_array(array, name))
    onnx.save(model, str(path))
    return tuple(sorted(tables))


def check_no_erased_users(bundle_dir: Path, erasures: Erasures) -> None:
    """Refuse a written bundle whose ``users.parquet`` still holds an erased user (the ids are not repeated in the
    message: they are what was erased)."""
    users = pd.read_parquet(Path(bundle_dir) / USERS, columns=["user_idx", "user_id"])
    hit = erasures.mask(users["user_id"])
    if hit.any():
        rows = users["user_idx"].to_numpy(np.int64)[hit]
        raise ErasureError(
            f"{bundle_dir}: {USERS} still holds {int(hit.sum())} erased user(s) (user_idx {rows[:10].tolist()}); "
            "the bundle is refused, since it would serve people who asked to be erased. This is a bug in the export: "
            "report it"
        )
