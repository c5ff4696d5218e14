"""Validation problems: what is wrong with a request, said in domain terms.

Domain code raises :class:`ValidationProblem` (which parameter, a stable code, a message for a person); the API
turns it into a 400 Stripe-shaped error (``engine.api.errors.api_error``) and the CLI into exit code 2.
"""

from __future__ import annotations


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
