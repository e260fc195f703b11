"""The demo's example requests against the real server: every block answered, the expected statuses."""

from __future__ import annotations

import pytest
from serving_support import Server

from recstack.serving.client import send_examples

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_send_examples(server: Server) -> None:
    blocks = send_examples(server.base_url, known_user="u2", item_id="i5", clicked_items=["i1", "i5"], k=3)
    text = "\n".join(blocks)
    assert len(blocks) == 13
    assert "-> 200" in blocks[2] and "-> 200" in blocks[3]  # consent recorded for both users
    assert "-> 200" in blocks[4] and "trained" in blocks[4]
    assert "recent_activity" in blocks[9]
    assert "-> 400" in blocks[-2] and '"k"' in blocks[-2]
    assert "-> 404" in blocks[-1]
    assert "-> 500" not in text
