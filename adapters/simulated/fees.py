"""The simulated processor's fee: a percentage in basis points plus a fixed amount, like Stripe's 2.2% + 30c.

Integer arithmetic only: the percentage is rounded half up to a whole minor unit, never through a float.
"""

from __future__ import annotations

BASIS_POINTS_PER_WHOLE = 10_000


def processing_fee_minor(amount_minor: int, fee_rate_bp: int, fee_fixed_minor: int) -> int:
    if amount_minor < 0 or fee_rate_bp < 0 or fee_fixed_minor < 0:
        raise ValueError(f"fees are for non-negative amounts and rates, got {amount_minor}, {fee_rate_bp}")
    # Adding half the divisor before the floor division rounds a remainder of exactly one half upwards.
    percentage_minor = (amount_minor * fee_rate_bp + BASIS_POINTS_PER_WHOLE // 2) // BASIS_POINTS_PER_WHOLE
    return percentage_minor + fee_fixed_minor
