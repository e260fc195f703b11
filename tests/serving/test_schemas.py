"""Request validation: limits, strict types and unknown fields are rejected with the field named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from recstack.serving.schemas import RecommendRequest, SimilarItemsRequest


def _error_fields(model: type, body: str) -> set[str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(body)
    return {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}


def test_defaults() -> None:
    request = RecommendRequest.model_validate_json('{"user_id": "7"}')
    assert (request.k, request.exclude_seen, request.context) == (10, True, None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"user_id": "7", "k": 0}', "k"),
        ('{"user_id": "7", "k": 101}', "k"),
        ('{"user_id": "7", "k": "ten"}', "k"),
        ('{"user_id": "7", "k": "10"}', "k"),  # strict: no string-to-int coercion
        ('{"user_id": "7", "colour": "red"}', "colour"),
        ('{"user_id": ""}', "user_id"),
        ('{"user_id": 7}', "user_id"),
        ('{"user_id": "7", "context": {"hour": 24}}', "context.hour"),
        ('{"user_id": "7", "context": {"weather": "rain"}}', "context.weather"),
        ('{"user_id": "7", "exclude_seen": "yes"}', "exclude_seen"),
    ],
)
def test_recommend_rejects(body: str, field: str) -> None:
    assert field in _error_fields(RecommendRequest, body)


def test_long_ids_and_lists_rejected() -> None:
    assert "user_id" in _error_fields(RecommendRequest, '{"user_id": "%s"}' % ("x" * 129))
    cats = ",".join(['"c"'] * 65)
    assert "include_categories" in _error_fields(
        RecommendRequest, f'{{"user_id": "7", "include_categories": [{cats}]}}'
    )


def test_similar_items_k() -> None:
    assert "k" in _error_fields(SimilarItemsRequest, '{"item_id": "1", "k": 0}')


def test_context_has_no_device() -> None:
    # Removed: no ranker reads a device. Like any unknown field it is refused by name, so no client believes it counts.
    assert "context.device" in _error_fields(RecommendRequest, '{"user_id": "7", "context": {"device": "tv"}}')


def test_every_event_type_has_a_fold_in_weight() -> None:
    from recstack.collect.producer import ITEM_RECENT_TYPES
    from recstack.serving.pipeline import DEFAULT_EVENT_WEIGHTS

    # every event type the collector puts in a recent-activity list is weighted when folded in
    assert set(ITEM_RECENT_TYPES) == set(DEFAULT_EVENT_WEIGHTS)
