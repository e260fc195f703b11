"""The text an item is described by: one function for every encoder, at training, export and serving time.

The content model's TF-IDF, the MiniLM vectors of training and export, and the service's ONNX encoder of items added
live (``POST /items``) all encode exactly :func:`item_text` of the item, so an item added later is described the way
the catalogue was. It lives in the data layer because the torch-free serving path needs it as much as the models do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd


def _present(value: Any) -> bool:
    if value is None:
        return False
    try:
        return not bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array: present when it is
        return True


def item_text(row: Any) -> str:
    """The text encoded for one item (a row of ``PreparedSplit.items``, as a Series, namedtuple or dict): its title,
    categories, year, free text such as tags (``text``, or a ``tags`` list) and a ``description``, when present.
    An item with none of them has the empty text (each encoder documents its fallback for it)."""
    get = row.get if isinstance(row, dict | pd.Series) else lambda k, d=None: getattr(row, k, d)
    parts = [str(get("title", "") or "").strip()]
    categories = get("categories", None)
    if categories is not None and len(categories) > 0:
        parts.append("Genres: " + ", ".join(str(c) for c in categories))
    year = get("year", None)
    if _present(year):
        parts.append(f"Year: {int(year)}")
    tags = _tags(get("text", None), get("tags", None))
    if tags:
        parts.append("Tags: " + tags)
    description = get("description", None)
    if _present(description) and str(description).strip():
        parts.append(str(description).strip())
    return ". ".join(p for p in parts if p)


def _tags(text: Any, tags: Any) -> str:
    """``text`` (the prepared split's free-text column) and a ``tags`` list, joined; '' when neither says anything."""
    out = []
    if _present(text) and str(text).strip():
        out.append(str(text).strip())
    if isinstance(tags, Sequence | pd.Series) and not isinstance(tags, str):
        out.extend(str(t).strip() for t in tags if str(t).strip())
    elif isinstance(tags, str) and tags.strip():
        out.append(tags.strip())
    return ", ".join(out)
