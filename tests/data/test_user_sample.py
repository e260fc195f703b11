"""``data.source.user_fraction``: a seeded share of users, every item kept, its own split hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from recstack.config import prepare_named
from recstack.data.prepared import PreparedSplit
from recstack.data.schema import DataError
from recstack.data.sources import generate_synthetic, load_dataset
from recstack.data.sources.user_sample import sample_users


def test_keeps_a_seeded_share_of_users_and_every_item() -> None:
    full = generate_synthetic(200, 100, 5_000, seed=3)
    a = sample_users(full, 0.3, seed=1)
    assert a.interactions["user_id"].nunique() == 60
    assert set(a.users["user_id"]) == set(a.interactions["user_id"])
    kept = set(a.interactions["user_id"])
    # every row of a kept user is kept, no other row
    assert len(a.interactions) == full.interactions["user_id"].isin(kept).sum()
    assert len(a.items) == len(full.items)
    again = sample_users(full, 0.3, seed=1)
    assert set(again.interactions["user_id"]) == kept
    assert set(sample_users(full, 0.3, seed=2).interactions["user_id"]) != kept
    # the source's row order does not change the draw
    shuffled = full.interactions.sample(frac=1.0, random_state=0)
    reordered = sample_users(full.__class__(full.name, shuffled, full.items, full.users, full.source), 0.3, seed=1)
    assert set(reordered.interactions["user_id"]) == kept
    assert sample_users(full, 1.0) is full


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_out_of_range_is_refused(fraction: float) -> None:
    with pytest.raises(DataError, match="user_fraction"):
        sample_users(generate_synthetic(20, 10, 100, seed=0), fraction)


def test_any_source_takes_it() -> None:
    sampled = load_dataset("synthetic", n_users=100, n_items=50, n_interactions=2_000, user_fraction=0.5)
    assert sampled.interactions["user_id"].nunique() == 50


def test_ml100k_subsample_is_its_own_split(tmp_path: Path, ml100k_split: PreparedSplit) -> None:
    sub = prepare_named("ml100k", "random", ["+data.source.user_fraction=0.3"], out_root=tmp_path)
    assert sub.config_hash != ml100k_split.config_hash
    assert sub.n_users == 283  # round(0.3 * 943)
    assert sub.n_items <= ml100k_split.n_items
    assert len(sub.train) < 0.4 * len(ml100k_split.train)


def test_spark_reading_an_event_log_itself_refuses_it() -> None:
    from recstack.data.build_split import SplitSpec
    from recstack.data.engines import EngineError
    from recstack.data.spark_engine import _spark_source

    source = {"name": "events", "path": "s3a://bucket/events/", "user_fraction": 0.3}
    spec = SplitSpec.from_config({"name": "events", "source": source}, {"name": "random"}, load=lambda: None)
    with pytest.raises(EngineError, match="user_fraction"):
        _spark_source(spec)
