"""Validation problems, said in domain terms, and the one way to check a body: decode it into a msgspec Struct.

Domain code raises :class:`ValidationProblem` (which parameter, a stable code, a message for a person); the API
turns it into a 400 Stripe-shaped error (``engine.api.errors.api_error``) and the CLI into exit code 2.

A valid body costs one ``msgspec.convert`` (the fast path). Only when it fails are the fields walked one by one, in
the Struct's declared order, so that the error reported is the first problem in that order (not in the order the
client happened to write the keys) and is worded as clients have always seen it: each Struct's ``wording`` maps
a field's problem (missing, wrong type, too long, out of range, pattern, a bad item) to a Stripe-style code and
message, with the dotted ``param`` (``donor.email``). The Structs are the API's (``engine.api.models``) and the
domain's own where the CLI needs them too (``engine.campaigns.CampaignCreate``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec


class ValidationProblem(Exception):
    """A request that cannot be accepted as given: ``param`` names the field (dotted), ``code`` says why."""

    def __init__(self, param: str | None, code: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ValidationProblem({self.param!r}, {self.code!r}, {self.message!r})"


def invalid(param: str, message: str, code: str = "parameter_invalid") -> ValidationProblem:
    return ValidationProblem(param, code, message)


T = TypeVar("T", bound=msgspec.Struct)

INTEGER_MIN = -(2**63)
INTEGER_MAX = 2**63 - 1  # PostgreSQL bigint, and what orjson can write (request fingerprints, jsonb)

CurrencyCode = Annotated[
    str, msgspec.Meta(min_length=3, max_length=3, pattern=r"^[A-Za-z]{3}$", description="ISO 4217")
]

_TYPE_ERROR = re.compile(r"^Expected `[^`]*`, got `")
_RANGE_ERROR = re.compile(r"^Expected `(int|float)` [<>]=? ")


@dataclass(frozen=True, slots=True)
class Wording:
    """Messages for one field's problems (``{param}`` is replaced by the dotted parameter name)."""

    invalid: str  # any problem not worded below
    code: str = "parameter_invalid"
    missing: str | None = None  # absent or null; None: the ``invalid`` message and code
    missing_code: str = "parameter_missing"
    blank_is_missing: bool = False  # an empty or all-space string counts as absent
    too_long: str | None = None
    too_short: str | None = None
    out_of_range: str | None = None
    pattern: str | None = None
    item: str | None = None  # a problem inside the value (a dict's key or value, a list's item)

    def missing_problem(self, param: str) -> ValidationProblem:
        if self.missing is None:
            return ValidationProblem(param, self.code, self.invalid.format(param=param))
        return ValidationProblem(param, self.missing_code, self.missing.format(param=param))

    def problem(self, param: str, error: str) -> ValidationProblem:
        """The problem for msgspec's ``error`` about this field's value (decoded on its own, so paths start at $)."""
        message = self.invalid
        if " - at " in error and self.item is not None:
            message = self.item
        elif _TYPE_ERROR.match(error):
            message = self.invalid
        elif "of length <=" in error and self.too_long is not None:
            message = self.too_long
        elif "of length >=" in error and self.too_short is not None:
            message = self.too_short
        elif _RANGE_ERROR.match(error) and self.out_of_range is not None:
            message = self.out_of_range
        elif "matching regex" in error and self.pattern is not None:
            message = self.pattern
        return ValidationProblem(param, self.code, message.format(param=param))


@dataclass(frozen=True, slots=True)
class Unknown:
    """How a Struct with ``forbid_unknown_fields`` words an unknown field (``{name}``: the first, sorted)."""

    code: str
    message: str


def required_text(*, optional: bool = False, pattern: str | None = None) -> Wording:
    return Wording(
        invalid="{param} must be a string.",
        missing=None if optional else "Missing required parameter: {param}.",
        blank_is_missing=not optional,
        too_long="{param} must be at most 200 characters.",
        pattern=pattern,
    )


def invalid_only(message: str, *, code: str = "parameter_invalid", item: str | None = None) -> Wording:
    """One message (and code) for every problem of the field, missing included."""
    return Wording(invalid=message, code=code, item=item)


def decode(body: dict[str, Any], model: type[T]) -> T:
    """``body`` as a ``model``, or a :class:`ValidationProblem` for its first problem."""
    try:
        return msgspec.convert(body, model)
    except msgspec.ValidationError as error:
        problem = first_problem(body, model)
        if problem is None:  # the walk should always find what msgspec found; say what msgspec said if not
            raise ValidationProblem(None, "parameter_invalid", str(error)) from None
        raise problem from None


_NO_WORDING = Wording(invalid="{param} is invalid.")
_HOLDERS: dict[Any, type[msgspec.Struct]] = {}
_FIELDS: dict[type[msgspec.Struct], tuple[msgspec.structs.FieldInfo, ...]] = {}


def _fields(model: type[msgspec.Struct]) -> tuple[msgspec.structs.FieldInfo, ...]:
    fields = _FIELDS.get(model)
    if fields is None:  # msgspec.structs.fields resolves the type hints on every call: slow
        fields = _FIELDS[model] = msgspec.structs.fields(model)
    return fields


def _holder(annotation: Any) -> type[msgspec.Struct]:
    """A one-field Struct for ``annotation``: msgspec caches a Struct's compiled type, not a bare annotation's."""
    holder = _HOLDERS.get(annotation)
    if holder is None:
        holder = _HOLDERS[annotation] = msgspec.defstruct("Holder", [("value", annotation)])
    return holder


def _relative(error: str) -> str:
    """msgspec's message about the holder's field, as if the value had been decoded on its own."""
    message, _, path = error.partition(" - at ")
    if path == "`$.value`":
        return message
    return f"{message} - at {path.replace('$.value', '$')}"


def first_problem(body: dict[str, Any], model: type[msgspec.Struct], prefix: str = "") -> ValidationProblem | None:
    wording: dict[str, Wording] = getattr(model, "wording", {})
    fields = _fields(model)
    for field in fields:
        name = field.encode_name
        param = prefix + name
        words = wording.get(name, _NO_WORDING)
        if name not in body:
            if field.required:
                return words.missing_problem(param)
            continue
        value = body[name]
        if (value is None and field.required) or (
            words.blank_is_missing and isinstance(value, str) and not value.strip()
        ):
            return words.missing_problem(param)
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            if not isinstance(value, dict):
                return words.missing_problem(param) if value is None else words.problem(param, "")
            nested = first_problem(value, field.type, param + ".")
            if nested is not None:
                return nested
            continue
        try:
            msgspec.convert({"value": value}, _holder(field.type))
        except msgspec.ValidationError as error:
            return words.problem(param, _relative(str(error)))
    unknown: Unknown | None = getattr(model, "unknown", None)
    if unknown is not None:
        extra = sorted(set(body) - {field.encode_name for field in fields})
        if extra:
            return ValidationProblem(prefix + extra[0], unknown.code, unknown.message.format(name=extra[0]))
    return None
