"""The offline reference of each arm: the bundle's served pipeline judged by the full-ranking evaluator on the test
stage (:func:`recstack.offline.report.evaluate_bundle`), kept per user so it can be read on exactly the users an arm
was shown to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recstack.bundle.reader import read_manifest
from recstack.data.prepared import PreparedSplit
from recstack.offline.report import evaluate_bundle
from recstack.serving.served_bundle import ReloadRefused, resolve

METRICS: tuple[str, ...] = ("map", "ndcg", "hit")


@dataclass(frozen=True)
class OfflineReference:
    """One bundle's offline figures at ``k``: per user (``users`` are split user indices) and their means over every
    test user. ``mode`` is the pipeline mode the service answers with (re-ranked when the bundle has a ranker)."""

    ref: str
    tag: str
    mode: str
    k: int
    users: np.ndarray
    per_user: dict[str, np.ndarray]
    overall: dict[str, float]

    def on(self, name: str, user_idx: np.ndarray) -> np.ndarray:
        """Per-user ``name`` (``map``, ``ndcg``, ``hit``) of the given split user indices, in their order."""
        order = np.argsort(self.users)
        pos = np.searchsorted(self.users, np.asarray(user_idx, dtype=np.int64), sorter=order)
        pos = order[np.clip(pos, 0, len(order) - 1)]
        if len(pos) and not np.array_equal(self.users[pos], np.asarray(user_idx)):
            raise ValueError(f"{self.tag}: some users were not evaluated offline (no test interaction)")
        return self.per_user[name][pos]


def served_tag(ref: str) -> str:
    """The ``model`` tag the service's answers carry for this bundle (recstack.serving.served_bundle): a model tag,
    else ``<folder name>@<manifest digest[:12]>``."""
    try:
        path, tag = resolve(ref)
    except ReloadRefused as error:
        raise ValueError(str(error)) from None
    return tag or f"{path.name}@{read_manifest(path).digest()[:12]}"


def offline_reference(ref: str, split: PreparedSplit, k: int) -> OfflineReference:
    """Evaluate the bundle ``ref`` (folder or model tag) on ``split``'s test stage at ``k``."""
    path, _ = resolve(ref)
    evaluations = evaluate_bundle(Path(path), split, "test", (k,))
    served = evaluations[-1]  # [retrieval, retrieval + re-rank]: the service re-ranks when the bundle has a ranker
    per_user = served.result.per_user
    assert per_user is not None  # evaluate_bundle keeps them
    return OfflineReference(
        ref=ref,
        tag=served_tag(ref),
        mode=served.name.rsplit(": ", 1)[-1],
        k=k,
        users=np.asarray(per_user.users, dtype=np.int64),
        per_user={name: np.asarray(per_user.metrics[f"{name}@{k}"], dtype=np.float64) for name in METRICS},
        overall={name: float(served.result.metrics[f"{name}@{k}"]) for name in METRICS},
    )
