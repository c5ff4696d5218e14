"""Reading fields of Stripe objects that come in several shapes: expandable fields (an id or the object), lists,
the donation id in metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def donation_id_of(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    value = metadata.get("donation_id") if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) and value else None


def id_of(value: Any) -> str | None:
    """An expandable field's id, whether Stripe sent the id or the expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def list_data(value: Any) -> list[Mapping[str, Any]]:
    items = value.get("data") if isinstance(value, Mapping) else value
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []
