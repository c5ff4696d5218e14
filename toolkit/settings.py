"""Settings from environment variables: one reader for the engine and every adapter.

A package declares its variables once, as an :class:`EnvironmentSettings`: a prefix (``SURGE_``, ``STRIPE_``,
``SURGE_SIM_``) and one typed :class:`Reader` per settings field. The variable for a field is the prefix followed
by the field's name in capitals, unless ``names`` says otherwise (``DATABASE_URL``)::

    STRIPE = EnvironmentSettings("STRIPE_", {"secret_key": required(text(), "a secret key sk_..."),
                                             "request_timeout_ms": integer()})
    STRIPE.read({"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_REQUEST_TIMEOUT_MS": "9000"})
    # {"secret_key": "sk_test_x", "request_timeout_ms": 9000}

An unset or blank variable leaves its field to the settings' default. Values that cannot be read raise
:class:`SettingsError` naming every bad variable, what it must be and what it was (``STRIPE_REQUEST_TIMEOUT_MS must
be an integer, got 'soon'``). Whether a readable value is *sensible* (a port in 1-65535) is the settings class's own
check; this module only reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

T = TypeVar("T")

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
NONE_WORDS = ("none", "off", "unlimited")


class SettingsError(ValueError):
    """Settings that cannot be used. ``problems`` holds one line per problem, each naming its variable."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems) or (message,)

    @classmethod
    def listing(cls, heading: str, problems: Sequence[str]) -> Self:
        """``heading:`` followed by one indented line per problem."""
        return cls(f"{heading}:\n  " + "\n  ".join(problems), problems)


@dataclass(frozen=True, slots=True)
class Reader(Generic[T]):
    """Turns a variable's text into a typed value; ``parse`` raises ValueError for text it cannot read."""

    parse: Callable[[str], T]
    expected: str  # completes "<VARIABLE> must be ...", e.g. "an integer"
    explains: bool = False  # the ValueError's own message helps the reader (custom formats), so add it
    required_hint: str | None = None  # set: the variable must be given; the hint says what to give


def text() -> Reader[str]:
    return Reader(str, "text")


def integer() -> Reader[int]:
    return Reader(int, "an integer")


def number() -> Reader[float]:
    return Reader(float, "a number")


def path() -> Reader[Path]:
    return Reader(lambda raw: Path(raw).expanduser(), "a path")


def boolean() -> Reader[bool]:
    def parse(raw: str) -> bool:
        if raw.lower() in TRUE_WORDS:
            return True
        if raw.lower() in FALSE_WORDS:
            return False
        raise ValueError(raw)

    return Reader(parse, "true or false")


def choice(*options: str) -> Reader[str]:
    """One of ``options``, in any letter case (read as lower case)."""

    def parse(raw: str) -> str:
        if raw.lower() not in options:
            raise ValueError(raw)
        return raw.lower()

    return Reader(parse, "one of " + ", ".join(options))


def optional(reader: Reader[T], none_words: Sequence[str] = NONE_WORDS) -> Reader[T | None]:
    """``reader``'s value, or None for one of ``none_words`` (no cap, no seed)."""

    def parse(raw: str) -> T | None:
        return None if raw.lower() in none_words else reader.parse(raw)

    return Reader(parse, f"{reader.expected} or {'/'.join(none_words)}", reader.explains)


def custom(parse: Callable[[str], T], expected: str) -> Reader[T]:
    """A reader for a format of the caller's own; its ValueError messages are shown with the problem."""
    return Reader(parse, expected, explains=True)


def required(reader: Reader[T], hint: str) -> Reader[T]:
    """``reader`` for a variable that has no default: unset or blank is a problem, explained by ``hint``."""
    return Reader(reader.parse, reader.expected, reader.explains, required_hint=hint)


@dataclass(frozen=True, slots=True)
class EnvironmentSettings:
    """The environment variables of one package's settings: ``prefix + FIELD`` each, read by ``readers``."""

    prefix: str
    readers: Mapping[str, Reader[Any]]
    names: Mapping[str, str] = field(default_factory=dict)  # fields whose variable does not follow the prefix

    def name(self, field_name: str) -> str:
        return self.names.get(field_name) or self.prefix + field_name.upper()

    @property
    def variables(self) -> dict[str, str]:
        """Field name → environment variable, for every field read."""
        return {field_name: self.name(field_name) for field_name in self.readers}

    def read(
        self,
        environment: Mapping[str, str] | None = None,
        *,
        heading: str = "invalid settings",
        error: type[SettingsError] = SettingsError,
    ) -> dict[str, Any]:
        """The typed value of every variable set in ``environment`` (default: ``os.environ``), by field name.

        Raises ``error`` listing every variable that cannot be read, or that is required and missing."""
        environment = os.environ if environment is None else environment
        values: dict[str, Any] = {}
        problems: list[str] = []
        for field_name, reader in self.readers.items():
            name = self.name(field_name)
            raw = environment.get(name, "").strip()
            if not raw:
                if reader.required_hint is not None:
                    problems.append(f"{name} is required ({reader.required_hint})")
                continue
            try:
                values[field_name] = reader.parse(raw)
            except ValueError as problem:
                detail = f" ({problem})" if reader.explains and str(problem) else ""
                problems.append(f"{name} must be {reader.expected}, got {raw!r}{detail}")
        if problems:
            raise error.listing(heading, problems)
        return values
