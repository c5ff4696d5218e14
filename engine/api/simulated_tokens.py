"""`POST /simulated/v1/payment_methods`: the simulated processor's tokenizer (adapters.simulated.tokenizer), shaped
like Stripe's ``POST /v1/payment_methods`` as Stripe.js calls it — a form body with ``type=card`` and ``card[…]``,
the publishable (form) key as bearer — so the donation page, local runs and tests tokenize as they would with Stripe.

Served only when a simulated processor is configured. The card number is read, mapped and forgotten: it is neither
stored nor logged, and the donations API never sees it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from adapters.simulated.tokenizer import CardError, tokenize_card
from engine.api.errors import ApiError, json_response
from engine.api.requests import authorized
from engine.api.state import SETTINGS
from engine.keys import Role

routes = web.RouteTableDef()

FIELD_LENGTH_MAX = 32


@routes.post("/simulated/v1/payment_methods")
async def create_payment_method(request: web.Request) -> web.Response:
    if not any(kind == "simulated" for _, kind in request.app[SETTINGS].processor_specs()):
        raise ApiError(404, "resource_missing", "No simulated processor is configured.")
    await authorized(request, Role.FORM)
    try:
        form = await request.post()
    except (ValueError, LookupError, RuntimeError, TypeError, AssertionError):
        form = None
    if form is None or form.get("type") != "card":
        raise ApiError(400, "parameter_invalid", "type must be card.", param="type")
    fields = {}
    for name in ("number", "exp_month", "exp_year", "cvc"):
        value = form.get(f"card[{name}]")
        if not isinstance(value, str) or not 0 < len(value) <= FIELD_LENGTH_MAX:
            raise ApiError(400, "parameter_missing", f"Missing required param: card[{name}].", param=f"card[{name}]")
        fields[name] = value
    token = tokenize_card(
        fields["number"], fields["exp_month"], fields["exp_year"], fields["cvc"], datetime.now(UTC).date()
    )
    if isinstance(token, CardError):
        raise ApiError(402, token.code, token.message, param=token.param, type="card_error")
    return json_response({"id": token, "object": "payment_method", "type": "card"})
