"""Money as integer micro-dollars: exact on every database (SQLite's NUMERIC is a float).

The API reports costs as JSON numbers (`0.4`); they are read through `Decimal(str(x))`, so
`0.1 + 0.2` never becomes `0.30000000000000004` in a cap. One micro-dollar (1e-6 USD) is
finer than any price APIMart reports, so sums of stored values are exact to the cent and
better; rounding happens only when a figure is shown.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation

MICROS = 1_000_000
#: A spend cap beyond this is a typo, not a budget (and keeps sums far from 2^63).
MAX_MICROS = 10_000_000 * MICROS


#: Commas only as thousands separators: "1,5" is a decimal comma (one and a half dollars),
#: and reading it as $15 would set a cap ten times what the admin meant.
_GROUPED = re.compile(r"[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?")


class MoneyInvalid(ValueError):
    """A figure that is not an amount of money; the text names what is allowed."""


def parse_usd(text: str) -> int:
    """`"12.5"`, `"$0.40"`, `"3"` → micro-dollars; at most six decimals, never negative."""
    cleaned = text.strip().removeprefix("$").strip()
    if "," in cleaned:
        if not _GROUPED.fullmatch(cleaned):
            raise MoneyInvalid(f"{text!r}: write cents with a point (for example 1.50)")
        cleaned = cleaned.replace(",", "")
    not_amount = f"{text!r} is not an amount in USD (for example 5 or 12.50)"
    if "_" in cleaned:  # Python's digit separator, which Decimal accepts; an amount has none
        raise MoneyInvalid(not_amount)
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise MoneyInvalid(not_amount) from None
    if not value.is_finite() or value < 0:
        raise MoneyInvalid(f"{text!r} must be a positive amount in USD")
    # Compared before multiplying: `1e999999999` is a finite Decimal whose product with
    # MICROS overflows the context (decimal.Overflow, not a refusal).
    if value > MAX_MICROS // MICROS:
        raise MoneyInvalid(f"{text!r} is more than ${MAX_MICROS // MICROS:,}")
    # Quantized, not multiplied: `1e-999999999` * MICROS underflows to 0 and would pass.
    if value != value.quantize(Decimal(1) / MICROS):
        raise MoneyInvalid(f"{text!r} has more than six decimals")
    micros = value * MICROS
    return int(micros)


def from_api(cost: float | int | str | Decimal | None) -> int | None:
    """A cost as the API reported it → micro-dollars (rounded up: never under-count)."""
    if cost is None:
        return None
    try:
        value = Decimal(str(cost))
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0:
        return None
    return int((value * MICROS).to_integral_value(rounding=ROUND_CEILING))


def to_decimal(micros: int) -> Decimal:
    """Exact dollars (for CSV and sums shown to admins)."""
    return Decimal(micros) / MICROS


def usd(micros: int | None, *, exact: bool = False) -> str:
    """`$0.40`; `exact=True` keeps every significant micro-dollar (`$0.123456`)."""
    if micros is None:
        return "—"
    value = to_decimal(micros)
    if exact and value != value.quantize(Decimal("0.01")):
        return f"${value.normalize():f}"
    return f"${value.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def csv_amount(micros: int) -> str:
    """Dollars with six decimals, exactly: a CSV whose rows sum to the totals to the micro."""
    return f"{to_decimal(micros):.6f}"
