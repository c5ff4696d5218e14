"""Request bodies: parse the JSON and refuse raw card numbers before anything else reads them.

Validation proper is decoding into a Struct (``engine.validation.decode``, Structs in ``engine.api.models``).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from engine.pipeline.card_numbers import find_card_number, may_hold_card_number
from engine.validation import INTEGER_MAX, INTEGER_MIN, ValidationProblem


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object, with no raw card number anywhere in it and nothing PostgreSQL cannot hold.

    msgspec rather than orjson reads it: orjson turns an integer past 64 bits into a float (silently losing digits).
    Whatever is not JSON, or not JSON that Python can hold (a lone surrogate, invalid UTF-8, a number past a
    double's range such as 1e400), is a 400 ``invalid_json``, never an engine error. A NUL (``\\u0000``) or an
    integer past 64 bits is valid JSON, but PostgreSQL (text, jsonb, bigint) and the request's fingerprint cannot
    hold it: it is refused here, naming the field, rather than failing later with a 500.
    """
    try:
        parsed = _JSON_DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):  # ValidationError: a number out of a double's range
        raise ValidationProblem(None, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise ValidationProblem(None, "invalid_json", "The request body must be a JSON object.")
    card_field = find_card_number(parsed) if may_hold_card_number(body) else None
    if card_field is not None:
        raise ValidationProblem(
            card_field,
            "card_number_refused",
            "This looks like a raw card number. Surge accepts processor tokens only (for example pm_card_visa): "
            "tokenize the card in the browser with your processor's library.",
        )
    if _NUL_ESCAPE in body or _LONG_NUMBER.search(body):  # a NUL can only be written escaped
        unstorable = _find_unstorable(parsed, "")
        if unstorable is not None:
            param, message = unstorable
            raise ValidationProblem(param or None, "parameter_invalid", f"{param or 'The request body'} {message}")
    return parsed


_JSON_DECODER = msgspec.json.Decoder()
_NUL_ESCAPE = b"\\u0000"
_LONG_NUMBER = re.compile(rb"[0-9]{19}")  # the shortest integer that may not fit 64 bits
_NUL_MESSAGE = "must not contain the NUL character (\\u0000)."
_INTEGER_MESSAGE = f"must be an integer between {INTEGER_MIN} and {INTEGER_MAX}."


def _find_unstorable(value: Any, path: str) -> tuple[str, str] | None:
    """The dotted path and problem of the first value PostgreSQL cannot hold: a string or object key with a NUL (a
    key's problem is reported at its object), or an integer past 64 bits. None when there is none."""
    if isinstance(value, str):
        return (path, _NUL_MESSAGE) if "\x00" in value else None
    if isinstance(value, int) and not isinstance(value, bool):
        return None if INTEGER_MIN <= value <= INTEGER_MAX else (path, _INTEGER_MESSAGE)
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return path, _NUL_MESSAGE
            found = _find_unstorable(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_unstorable(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
