"""ISO 4217: the active currency codes and their minor-unit exponents, the one table Surge uses.

The ledger counts every currency in its ISO minor unit (cents for USD, yen for JPY, fils for BHD); reports format
amounts with it and processor adapters translate from it to their own units (Stripe's differences stay in its
adapter). Written out rather than taken from a package: it is one short, slow-changing table (ISO 4217 list one,
amendment 179 of 2025: XCG replaced ANG), and the packages that carry it bring locale data the engine does not use.
"""

from __future__ import annotations

import re

_EXPONENT_0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_4 = "CLF UYW"
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF CHE "
    "CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL "
    "HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR "
    "MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK "
    "SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD "
    "XCG YER ZAR ZMW ZWG"
)
MINOR_UNIT_EXPONENTS: dict[str, int] = {
    code: exponent
    for exponent, codes in ((0, _EXPONENT_0), (2, _EXPONENT_2), (3, _EXPONENT_3), (4, _EXPONENT_4))
    for code in codes.split()
}


class UnknownCurrencyError(ValueError):
    """Not an active ISO 4217 currency with a minor unit."""


def minor_unit_exponent(currency: str) -> int:
    """How many decimals the currency's minor unit has: 2 for USD, 0 for JPY, 3 for BHD."""
    try:
        return MINOR_UNIT_EXPONENTS[currency]
    except KeyError:
        raise UnknownCurrencyError(f"{currency!r} is not an ISO 4217 currency") from None


def format_minor(amount_minor: int, currency: str) -> str:
    """Minor units as a decimal string ("-12.05"), by integer arithmetic: money never passes through a float."""
    if type(amount_minor) is not int:
        raise TypeError(f"money must be integer minor units, got {type(amount_minor).__name__}")
    exponent = minor_unit_exponent(currency)
    if exponent == 0:
        return str(amount_minor)
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}"


_DECIMAL = re.compile(r"^(\d{1,15})(?:\.(\d+))?$")


def parse_major(text: str, currency: str) -> int:
    """A typed amount ("25", "25.5", "25.50") as minor units, by string arithmetic: never through a float. More
    decimals than the currency has, a sign, or anything else is refused (ValueError)."""
    match = _DECIMAL.match(text.strip().replace(",", ""))
    exponent = minor_unit_exponent(currency)
    if match is None or len(match.group(2) or "") > exponent:
        raise ValueError(f"not an amount in {currency}: {text!r}")
    whole, fraction = match.group(1), (match.group(2) or "").ljust(exponent, "0")
    return int(whole) * 10**exponent + (int(fraction) if fraction else 0)
