"""The price table: learned from what the API charged, optionally seeded from a file.

APIMart publishes no price list and has no pricing endpoint; the one reliable figure is the
`cost` a finished task reports. Prices are per second of video (times `sample_count` for
Veo) and depend on model and resolution, so a finished job's cost divided by its seconds ×
samples is the price of its (model, resolution); the latest observation wins (prices change
rarely and a stale average would mis-estimate longer). `PRICES_FILE` (JSON or TOML,
`{model: {resolution: usd_per_second}}`) seeds a fresh install so caps apply from the first
job; learned prices replace seeds.
"""

from __future__ import annotations

import json
import tomllib
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.core.catalog import CATALOG
from bot.core.controls.money import MoneyInvalid, parse_usd
from bot.core.controls.tables import prices
from bot.core.request import VideoRequest

#: A prices file is a few lines; anything bigger is not one.
MAX_PRICES_FILE = 64 * 1024


class PricesFileInvalid(ValueError):
    """The PRICES_FILE cannot be used; the text says where and why."""


def units(request: VideoRequest) -> int:
    """What the API bills: seconds of video × samples (Omni following a reference video is
    estimated at its default length)."""
    seconds = request.effective_duration or request.spec.default_duration
    return seconds * (request.sample_count or 1)


def price_key(request: VideoRequest) -> tuple[str, str]:
    return request.model, request.effective_resolution.lower()


def estimate_from(per_unit: int, request: VideoRequest) -> int:
    return per_unit * units(request)


async def per_unit(conn: AsyncConnection, model: str, resolution: str) -> int | None:
    query = sa.select(prices.c.micros_per_unit).where(
        prices.c.model == model, prices.c.resolution == resolution.lower()
    )
    return (await conn.execute(query)).scalar_one_or_none()


async def estimate(conn: AsyncConnection, request: VideoRequest) -> int | None:
    """Micro-dollars this request should cost, or None while its price is unknown."""
    price = await per_unit(conn, *price_key(request))
    return None if price is None else estimate_from(price, request)


async def learn(
    conn: AsyncConnection, request: VideoRequest, cost_micros: int, *, now: float
) -> None:
    """Record the price a completed job revealed (a zero cost teaches nothing)."""
    count = units(request)
    if cost_micros <= 0 or count <= 0:
        return
    price = int((Decimal(cost_micros) / count).to_integral_value(rounding=ROUND_CEILING))
    await _put(conn, *price_key(request), price, "learned", now=now, overwrite=True)


async def _put(
    conn: AsyncConnection,
    model: str,
    resolution: str,
    price: int,
    source: str,
    *,
    now: float,
    overwrite: bool,
) -> None:
    where = (prices.c.model == model) & (prices.c.resolution == resolution)
    row = (await conn.execute(sa.select(prices.c.observations).where(where))).first()
    if row is None:
        await conn.execute(
            prices.insert().values(
                model=model,
                resolution=resolution,
                micros_per_unit=price,
                source=source,
                observations=1 if source == "learned" else 0,
                updated_at=now,
            )
        )
    elif overwrite:
        await conn.execute(
            prices.update()
            .where(where)
            .values(
                micros_per_unit=price,
                source=source,
                observations=prices.c.observations + 1,
                updated_at=now,
            )
        )


def read_prices_file(path: Path) -> dict[tuple[str, str], int]:
    """`{model: {resolution: usd_per_second}}` from JSON or TOML → micro-dollars per unit."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PricesFileInvalid(f"PRICES_FILE {path}: cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_PRICES_FILE:
        raise PricesFileInvalid(f"PRICES_FILE {path}: larger than {MAX_PRICES_FILE} bytes")
    try:
        data: Any = (
            tomllib.loads(raw.decode())
            if path.suffix.lower() == ".toml"
            else json.loads(raw, parse_float=Decimal)
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise PricesFileInvalid(f"PRICES_FILE {path}: not valid JSON/TOML ({exc})") from None
    if not isinstance(data, dict):
        raise PricesFileInvalid(f"PRICES_FILE {path}: expected {{model: {{resolution: price}}}}")
    table: dict[tuple[str, str], int] = {}
    for model, by_resolution in data.items():
        spec = CATALOG.get(model)
        if spec is None:
            raise PricesFileInvalid(
                f"PRICES_FILE {path}: {model!r} is not one of {', '.join(CATALOG)}"
            )
        if not isinstance(by_resolution, dict):
            raise PricesFileInvalid(f"PRICES_FILE {path}: {model} needs {{resolution: price}}")
        for resolution, price in by_resolution.items():
            canonical = spec.canonical_resolution(str(resolution))
            if canonical is None:
                raise PricesFileInvalid(
                    f"PRICES_FILE {path}: {model} offers {'/'.join(spec.resolutions)}, "
                    f"not {resolution}"
                )
            try:
                micros = parse_usd(str(price))
            except MoneyInvalid as exc:
                raise PricesFileInvalid(
                    f"PRICES_FILE {path}: {model} {resolution}: {exc}"
                ) from None
            table[(model, canonical.lower())] = micros
    return table


async def seed(conn: AsyncConnection, table: dict[tuple[str, str], int], *, now: float) -> None:
    """Add seeded prices where nothing is known yet (learned prices are never replaced)."""
    for (model, resolution), price in table.items():
        await _put(conn, model, resolution, price, "seed", now=now, overwrite=False)


async def all_prices(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = (await conn.execute(sa.select(prices).order_by(prices.c.model))).all()
    return [dict(r._mapping) for r in rows]
