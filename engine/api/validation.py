"""Request bodies: parse the JSON and refuse raw card numbers before anything else reads them.

Validation proper is decoding into a Struct (``engine.validation.decode``, Structs in ``engine.api.models``).
"""

from __future__ import annotations

from typing import Any

import orjson

from engine.pipeline.card_numbers import find_card_number
from engine.validation import ValidationProblem


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object, with no raw card number anywhere in it."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValidationProblem(None, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise ValidationProblem(None, "invalid_json", "The request body must be a JSON object.")
    card_field = find_card_number(parsed)
    if card_field is not None:
        raise ValidationProblem(
            card_field,
            "card_number_refused",
            "This looks like a raw card number. Surge accepts processor tokens only (for example pm_card_visa): "
            "tokenize the card in the browser with your processor's library.",
        )
    return parsed
