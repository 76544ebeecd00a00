"""Synthetic transactions in the UCI Online Retail layout.

:func:`generate_transactions` draws a table that looks and misbehaves like the
UCI Online Retail file, so every later stage (ingestion, cleaning, features,
models, monitoring) can be exercised without the real data. The same
:class:`GeneratorConfig` always yields the same table.

The generative model, from the top down:

* **Calendar.** A daily intensity multiplies an upward trend, a yearly cycle
  that peaks in November, weekday factors (almost no Saturday trading), a
  Christmas break and each country's public holidays (``holidays`` package).
  Invoice days are drawn from its cumulative distribution; invoice times fall
  in opening hours, 7:00 to 20:59.
* **Catalog.** Products have a stock code (``"85123A"``), an upper-case
  description composed from word lists, a log-normal base price, a pack size,
  a Zipf-like popularity, a launch week (some launch during the period), an
  optional permanent price change and product-week promotions (discount plus
  quantity and demand boost).
* **Customers.** Each has one country (UK ~85 %), a heavy-tailed activity
  (a few wholesalers, many one-off buyers), a quantity multiplier and an
  active window (customers join and churn). About a quarter of the rows come
  from guest invoices without a customer id.
* **Invoices and lines.** Invoice line counts are heavy-tailed (mean ~20);
  lines pick distinct products from the week's popularity distribution.
* **Dirt.** Cancellations (``"C"`` invoices mirroring earlier lines), returns
  and stock adjustments at price 0 with odd or missing descriptions, exact
  duplicate rows, non-product codes (POST, D, M, BANK CHARGES, AMAZONFEE),
  bad-debt adjustments (``"A"`` invoices, negative price), free items and one
  extreme order cancelled minutes later.
* **Drift and anomalies** (optional): from :attr:`DriftSpec.start` prices
  rise, demand moves to unpopular products and a new country buys; labelled
  anomalies get extreme quantities or prices and ``is_anomaly = True``.

Everything is vectorised with NumPy and pyarrow: loops run over chunks of
about a million lines or over small fixed lists, never over rows, invoices or
products.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from retailml.core.errors import ConfigError, problem
from retailml.core.io import atomic_path
from retailml.data.schema import ADJUSTMENT_PREFIX, CANCELLATION_PREFIX, UCI_HEADERS

__all__ = [
    "OUTPUT_FORMATS",
    "DriftSpec",
    "GeneratorConfig",
    "generate_transactions",
    "write_transactions",
]

_I64 = npt.NDArray[np.int64]
_F64 = npt.NDArray[np.float64]
_Bool = npt.NDArray[np.bool_]

#: File extensions :func:`write_transactions` understands.
OUTPUT_FORMATS: Final[tuple[str, ...]] = (".csv", ".parquet")

# --- sizes and shares (UCI Online Retail: 541,909 rows, ~4,400 customers, ~4,000 products) ---
_UCI_ROWS: Final = 540_000
_UCI_CUSTOMERS: Final = 4_400
_UCI_PRODUCTS: Final = 4_000
_MAX_DEFAULT_CUSTOMERS: Final = 100_000
_MIN_DEFAULT_PRODUCTS: Final = 50
_MAX_DEFAULT_PRODUCTS: Final = 8_000
_MAX_ROWS: Final = 100_000_000
_MAX_CUSTOMERS: Final = 5_000_000
_MAX_PRODUCTS: Final = 50_000
_MAX_ANOMALY_RATE: Final = 0.5
_FIRST_INVOICE_NO: Final = 536_365
_FIRST_CUSTOMER_ID: Final = 12_346

#: From this size on every kind of dirty row is present at least once.
_ALL_KINDS_FROM_ROWS: Final = 1_000
_CANCEL_SHARE: Final = 0.0165
_DUPLICATE_SHARE: Final = 0.0095
_ODD_SHARE: Final = 0.0045
_DISCOUNT_SHARE: Final = 0.00014
_AMAZON_SHARE: Final = 0.00006
_BAD_DEBT_SHARE: Final = 0.000006
_MANUAL_SHARE: Final = 0.001
_BANK_SHARE: Final = 0.00007
_FREE_SHARE: Final = 0.0001

# Guest (no customer id) invoices are few but long, as in UCI: 8.7 % of the
# invoices with 3.5x the lines make about 25 % of the rows.
_GUEST_INVOICE_SHARE: Final = 0.087
_GUEST_LINE_FACTOR: Final = 3.5
_MEDIAN_LINES: Final = 13.0
_LINES_SIGMA: Final = 0.95
_SINGLE_LINE_SHARE: Final = 0.10
_MAX_LINES: Final = 800
_MEAN_LINES: Final = (1 - _SINGLE_LINE_SHARE) * _MEDIAN_LINES * math.exp(
    _LINES_SIGMA**2 / 2
) + _SINGLE_LINE_SHARE

_CHUNK_LINES: Final = 1 << 20
_MAX_REDRAWS: Final = 12

# --- countries ---
_HOME_COUNTRY: Final = "United Kingdom"
_HOME: Final = 0  # index of the home country: first in _COUNTRY_WEIGHTS
_HOME_CUSTOMER_SHARE: Final = 0.87
_HOME_GUEST_SHARE: Final = 0.96
#: UCI row counts per country, used as relative weights of the foreign countries.
_COUNTRY_WEIGHTS: Final[dict[str, int]] = {
    "United Kingdom": 495_478,
    "Germany": 9_495,
    "France": 8_557,
    "EIRE": 8_196,
    "Spain": 2_533,
    "Netherlands": 2_371,
    "Belgium": 2_069,
    "Switzerland": 2_002,
    "Portugal": 1_519,
    "Australia": 1_259,
    "Norway": 1_086,
    "Italy": 803,
    "Channel Islands": 758,
    "Finland": 695,
    "Cyprus": 622,
    "Sweden": 462,
    "Unspecified": 446,
    "Austria": 401,
    "Denmark": 389,
    "Japan": 358,
    "Poland": 341,
    "Israel": 297,
    "USA": 291,
    "Hong Kong": 288,
    "Singapore": 229,
    "Iceland": 182,
    "Canada": 151,
    "Greece": 146,
    "Malta": 127,
    "United Arab Emirates": 68,
    "European Community": 61,
    "RSA": 58,
    "Lebanon": 45,
    "Lithuania": 35,
    "Brazil": 32,
    "Czech Republic": 30,
    "Bahrain": 19,
    "Saudi Arabia": 10,
}
#: Countries with their own public-holiday calendar; the others use the UK's.
_HOLIDAY_CODES: Final[dict[str, str]] = {
    "United Kingdom": "GB",
    "Germany": "DE",
    "France": "FR",
    "EIRE": "IE",
    "Spain": "ES",
    "Netherlands": "NL",
    "Belgium": "BE",
    "Switzerland": "CH",
    "Portugal": "PT",
    "Australia": "AU",
    "Norway": "NO",
    "Italy": "IT",
    "Sweden": "SE",
    "Japan": "JP",
    "USA": "US",
    "Canada": "CA",
    "Brazil": "BR",
    "Mexico": "MX",
    "India": "IN",
    "China": "CN",
}
_NEW_COUNTRY_INVOICE_SHARE: Final = 0.08
_NEW_COUNTRY_CUSTOMER_SHARE: Final = 0.04

# --- calendar ---
_MONTH_FACTOR: Final = np.array(
    [0.72, 0.68, 0.88, 0.78, 0.92, 0.90, 0.88, 0.90, 1.22, 1.35, 1.80, 1.30]
)
#: Monday .. Sunday; the UCI retailer barely trades on Saturdays.
_WEEKDAY_FACTOR: Final = np.array([1.0, 1.12, 1.08, 1.2, 0.85, 0.004, 0.65])
_HOLIDAY_FACTOR: Final = 0.04
_CLOSED_FACTOR: Final = 0.002
_TREND_GROWTH: Final = 0.25
#: Relative invoice counts per opening hour 7 .. 20 (UCI's profile).
_HOUR_WEIGHTS: Final = np.array(
    [0.2, 1.6, 6.4, 12.0, 11.0, 17.0, 15.5, 13.5, 13.5, 5.0, 2.5, 0.7, 0.8, 0.3]
)
_FIRST_HOUR: Final = 7
_LAST_MINUTE: Final = 20 * 60 + 59

# --- catalog ---
_ZIPF_OFFSET: Final = 30.0
_ZIPF_EXPONENT: Final = 1.0
_LATE_LAUNCH_SHARE: Final = 0.25
_PRICE_CHANGE_SHARE: Final = 0.25
_PRICE_CHANGE_FACTORS: Final = np.array([0.85, 0.9, 1.1, 1.15, 1.2, 1.25])
_PROMO_SHARE: Final = 0.008
_PROMO_DISCOUNTS: Final = np.array([0.1, 0.15, 0.2, 0.25, 0.3])
_PROMO_DEMAND_BOOST: Final = 1.8


def _words(text: str) -> tuple[str, ...]:
    """Split a ``|``-separated word list (keeps long vocabularies compact)."""
    return tuple(text.split("|"))


# Description vocabulary, composed as [prefix] [colour] [motif] item.
_PREFIXES: Final = _words("SET OF 3|SET OF 6|PACK OF 12|PACK OF 72|JUMBO|SMALL|LARGE|MINI|ASSORTED")
_COLOURS: Final = _words(
    "RED|PINK|BLUE|WHITE|IVORY|GREEN|BLACK|CREAM|GOLD|SILVER|PURPLE|ORANGE|YELLOW|NATURAL"
)
_MOTIFS: Final = _words(
    "RETROSPOT|HANGING HEART|VINTAGE|PAISLEY|SPACEBOY|DOLLY GIRL|REGENCY|POLKADOT|"
    "FLORAL|BIRD|STAR|GINGHAM|CHRISTMAS|ROSE|SKULL|DOILY|LOVE|ENAMEL|WOODEN|GLASS|"
    "CERAMIC|METAL|PANTRY|BAROQUE|JAM MAKING|WOODLAND|ALPHABET"
)
_ITEMS: Final = _words(
    "T-LIGHT HOLDER|CAKE TIN|LUNCH BOX|LUNCH BAG|SHOPPER BAG|MUG|TEACUP AND SAUCER|"
    "CAKE CASES|PAPER NAPKINS|CANDLE|DOORMAT|CUSHION COVER|PHOTO FRAME|ALARM CLOCK|"
    "WATER BOTTLE|HOT WATER BOTTLE|CHOPPING BOARD|PEG BAG|TISSUES|WRAPPING PAPER|"
    "GIFT BAG|NOTEBOOK|PENCIL CASE|STORAGE JAR|JUG|BOWL|PLATE|TEA TOWEL|APRON|"
    "METAL SIGN|BUNTING|LANTERN|ORNAMENT|WALL CLOCK|DRAWER KNOB|COAT RACK|"
    "BUTTON BOX|TRINKET BOX|PARASOL|UMBRELLA|PURSE|KEY RING|STICKER SHEET|"
    "BIRTHDAY CARD|SNOW GLOBE|HEART DECORATION|GARLAND|JIGSAW|PLAYHOUSE|SKITTLES|"
    "TRAY|BASKET|BIN|VASE|COASTERS|PLACEMATS|NIGHT LIGHT|FAIRY LIGHTS|"
    "CAKESTAND 3 TIER|PICNIC BASKET"
)
_CODE_SUFFIXES: Final = "ABCDEFGL"

#: Non-product stock codes the generator emits, with UCI's descriptions.
_SPECIAL_CODES: Final = ("POST", "D", "M", "BANK CHARGES", "AMAZONFEE", "B")
_SPECIAL_DESCRIPTIONS: Final = _words(
    "POSTAGE|Discount|Manual|Bank Charges|AMAZON FEE|Adjust bad debt"
)
_POST, _DISCOUNT, _MANUAL, _BANK, _AMAZON, _BAD_DEBT = range(len(_SPECIAL_CODES))
#: Descriptions of stock adjustments (price 0, no customer), as typed in UCI.
_ODD_OUT: Final = _words(
    "damaged|?|check|missing|damages|wet damaged|lost|smashed|thrown away|"
    "wrongly marked|crushed|Damaged|mouldy, thrown away."
)
_ODD_IN: Final = ("found", "Found", "check", "?", "adjustment", "had been put aside")
_ODD_NULL_SHARE: Final = 0.6

_POSTAGE_PRICES: Final = np.array([18.0, 18.0, 18.0, 15.0, 28.0, 40.0])
_POSTAGE_FOREIGN_SHARE: Final = 0.5
_POSTAGE_HOME_SHARE: Final = 0.003

_KIND_SALE: Final = 0
_KIND_CANCEL: Final = 1
_KIND_ADJUST: Final = 2


# ----------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _is_date(value: object) -> bool:
    return isinstance(value, datetime.date) and not isinstance(value, datetime.datetime)


def _raise_problems(problems: Sequence[str], what: str) -> None:
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        body = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{len(problems)} problems in the {what}:\n{body}")


@dataclass(frozen=True)
class DriftSpec:
    """Drift injected into generated transactions from a date onward.

    Attributes:
        start: First day with drift.
        price_shift: Relative price change, e.g. ``0.25`` multiplies product
            prices by 1.25 from ``start``.
        product_mix_shift: Share (0..1) of demand moved to the products that
            were unpopular before ``start``.
        new_country: A country whose customers buy only from ``start`` on, with
            a noticeable share of the invoices (about 8 %).

    Raises:
        ConfigError: listing every invalid field at once.
    """

    start: datetime.date
    price_shift: float = 0.0
    product_mix_shift: float = 0.0
    new_country: str | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not _is_date(self.start):
            problems.append(
                problem(
                    "a datetime.date",
                    f"{self.start!r}",
                    "pass e.g. datetime.date(2023, 6, 1)",
                    subject="drift.start",
                )
            )
        if not _is_real(self.price_shift) or not -1.0 < float(self.price_shift) <= 10.0:
            problems.append(
                problem(
                    "a relative price change above -1 and at most 10",
                    f"{self.price_shift!r}",
                    "use e.g. 0.25 for prices 25 % higher, -0.1 for 10 % lower",
                    subject="drift.price_shift",
                )
            )
        if not _is_real(self.product_mix_shift) or not 0.0 <= float(self.product_mix_shift) <= 1:
            problems.append(
                problem(
                    "a share between 0 and 1",
                    f"{self.product_mix_shift!r}",
                    "use e.g. 0.3 to move 30 % of the demand to unpopular products",
                    subject="drift.product_mix_shift",
                )
            )
        if self.new_country is not None and (
            not isinstance(self.new_country, str)
            or not self.new_country.strip()
            or self.new_country == _HOME_COUNTRY
        ):
            problems.append(
                problem(
                    f"None or a country name other than the home country {_HOME_COUNTRY!r}",
                    f"{self.new_country!r}",
                    "use e.g. 'Brazil', or leave new_country out",
                    subject="drift.new_country",
                )
            )
        _raise_problems(problems, "drift spec")


@dataclass(frozen=True)
class GeneratorConfig:
    """What :func:`generate_transactions` produces.

    Attributes:
        rows: Exact number of rows.
        seed: Random seed; the same config gives the same table.
        start: First day of the period.
        end: Last day of the period (inclusive).
        n_customers: Number of customers; by default it scales with ``rows``
            like UCI (about 4,400 per 540,000 rows), capped at 100,000.
        n_products: Number of products; by default about 4,000 at UCI's size,
            growing with the square root of ``rows`` between 50 and 8,000.
        drift: Drift injected from a date onward, or None.
        anomaly_rate: Share of rows labelled as anomalies (0 .. 0.5); when
            positive the table gets a boolean ``is_anomaly`` column.

    Raises:
        ConfigError: listing every invalid field at once.
    """

    rows: int
    seed: int = 42
    start: datetime.date = datetime.date(2022, 1, 1)
    end: datetime.date = datetime.date(2023, 12, 31)
    n_customers: int | None = None
    n_products: int | None = None
    drift: DriftSpec | None = None
    anomaly_rate: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field and report all problems in one :class:`ConfigError`."""
        problems: list[str] = []
        if not _is_int(self.rows) or not 1 <= int(self.rows) <= _MAX_ROWS:
            problems.append(
                problem(
                    f"an integer >= 1 and <= {_MAX_ROWS:,}",
                    f"{self.rows!r}",
                    "pass --rows 1 or more (for more rows, write several files with "
                    "different seeds)",
                    subject="rows",
                )
            )
        if not _is_int(self.seed) or int(self.seed) < 0:
            problems.append(
                problem(
                    "an integer >= 0",
                    f"{self.seed!r}",
                    "pass e.g. --seed 42",
                    subject="seed",
                )
            )
        dates_ok = True
        for name in ("start", "end"):
            value = getattr(self, name)
            if not _is_date(value):
                dates_ok = False
                problems.append(
                    problem(
                        "a datetime.date",
                        f"{value!r}",
                        "pass e.g. datetime.date(2022, 1, 1)",
                        subject=name,
                    )
                )
        if dates_ok and self.end < self.start:
            problems.append(
                problem(
                    f"an end on or after start {self.start.isoformat()}",
                    f"end {self.end.isoformat()!r}",
                    "swap the dates or move end later",
                    subject="end",
                )
            )
        for name, upper in (("n_customers", _MAX_CUSTOMERS), ("n_products", _MAX_PRODUCTS)):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 1 <= int(value) <= upper):
                problems.append(
                    problem(
                        f"None or an integer between 1 and {upper:,}",
                        f"{value!r}",
                        f"leave {name} out to scale it with rows, or pass a number in range",
                        subject=name,
                    )
                )
        if self.drift is not None:
            if not isinstance(self.drift, DriftSpec):
                problems.append(
                    problem(
                        "a DriftSpec or None",
                        f"{type(self.drift).__name__}",
                        "pass DriftSpec(start=..., price_shift=...)",
                        subject="drift",
                    )
                )
            elif dates_ok and not self.start <= self.drift.start <= self.end:
                problems.append(
                    problem(
                        f"a drift start between {self.start.isoformat()} and "
                        f"{self.end.isoformat()}",
                        f"{self.drift.start.isoformat()!r}",
                        "move drift.start inside the generated period",
                        subject="drift.start",
                    )
                )
        if not _is_real(self.anomaly_rate) or not (
            0.0 <= float(self.anomaly_rate) <= _MAX_ANOMALY_RATE
        ):
            problems.append(
                problem(
                    f"a share between 0 and {_MAX_ANOMALY_RATE} (anomalies must stay rare)",
                    f"{self.anomaly_rate!r}",
                    "use e.g. 0.01 to label 1 % of the rows as anomalies",
                    subject="anomaly_rate",
                )
            )
        _raise_problems(problems, "generator config")

    @property
    def customer_count(self) -> int:
        """Number of customers, defaulted from ``rows`` when not given."""
        if self.n_customers is not None:
            return int(self.n_customers)
        scaled = round(int(self.rows) * _UCI_CUSTOMERS / _UCI_ROWS)
        return max(1, min(_MAX_DEFAULT_CUSTOMERS, scaled))

    @property
    def product_count(self) -> int:
        """Number of products, defaulted from ``rows`` when not given."""
        if self.n_products is not None:
            return int(self.n_products)
        scaled = round(_UCI_PRODUCTS * math.sqrt(int(self.rows) / _UCI_ROWS))
        return max(_MIN_DEFAULT_PRODUCTS, min(_MAX_DEFAULT_PRODUCTS, scaled))


# ----------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------


class _Progress:
    """Turn stage fractions into row counts whose sum is exactly ``total``."""

    def __init__(self, total: int, callback: Callable[[int], None] | None) -> None:
        self._total = total
        self._callback = callback
        self._fraction = 0.0
        self._reported = 0

    def advance(self, fraction: float) -> None:
        self._fraction = min(1.0, self._fraction + fraction)
        self._emit(int(self._total * self._fraction))

    def finish(self) -> None:
        self._emit(self._total)

    def _emit(self, target: int) -> None:
        delta = target - self._reported
        if delta > 0:
            self._reported = target
            if self._callback is not None:
                self._callback(delta)


# ----------------------------------------------------------------------------------------
# Calendar
# ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _holiday_dates(code: str, years: tuple[int, ...]) -> tuple[datetime.date, ...]:
    import holidays

    try:
        calendar = holidays.country_holidays(code, years=list(years))
    except NotImplementedError:
        calendar = holidays.country_holidays("GB", years=list(years))
    return tuple(sorted(calendar.keys()))


@dataclass(frozen=True)
class _Calendar:
    """Daily trading intensity per holiday calendar, and samplers over it."""

    n_days: int
    cdf: _F64  # (calendars, days + 1): cdf[k, d] = mass of days < d
    flat: _F64  # cdf[k, 1:] + k, raveled, for one searchsorted over all calendars
    country_calendar: _I64
    next_open: _I64  # first trading day on or after each day; n_days if none
    hour_cdf: _F64

    @property
    def n_weeks(self) -> int:
        return (self.n_days + 6) // 7

    def window(self, calendar: _I64, first_day: _I64, last_day: _I64) -> tuple[_F64, _F64]:
        """Cumulative mass before ``first_day`` and through ``last_day``."""
        return self.cdf[calendar, first_day], self.cdf[calendar, last_day + 1]

    def sample_days(self, rng: np.random.Generator, calendar: _I64, low: _F64, high: _F64) -> _I64:
        """Days drawn from each calendar's intensity, inside the mass window [low, high)."""
        u = low + (high - low) * rng.random(calendar.size)
        position = np.searchsorted(self.flat, u + calendar, side="right")
        days: _I64 = np.clip(position - calendar * self.n_days, 0, self.n_days - 1)
        return days

    def sample_minutes(self, rng: np.random.Generator, n: int) -> _I64:
        """Minutes after midnight within opening hours."""
        hours = _FIRST_HOUR + np.searchsorted(self.hour_cdf, rng.random(n), side="right")
        minutes: _I64 = hours * 60 + rng.integers(0, 60, n)
        return minutes

    def later(self, rng: np.random.Generator, time: _I64) -> _I64:
        """A moment after ``time`` (minutes since the start): same day or a later trading day."""
        n = time.size
        day, minute = np.divmod(time, 1440)
        gap = 1 + np.floor(rng.exponential(5.0, n)).astype(np.int64)
        next_day = self.next_open[np.minimum(day + gap, self.n_days - 1)]
        t_next = next_day * 1440 + self.sample_minutes(rng, n)
        room = np.maximum(_LAST_MINUTE - minute, 0)
        t_same = time + np.minimum(rng.integers(2, 180, n), room)
        same_day = (rng.random(n) < 0.35) & (room >= 2)
        # Near the end of the period there may be no later trading day.
        result: _I64 = np.where(same_day | (next_day >= self.n_days), t_same, t_next)
        return result


def _build_calendar(config: GeneratorConfig, countries: Sequence[str]) -> _Calendar:
    n_days = (config.end - config.start).days + 1
    day = np.arange(n_days, dtype=np.int64)
    dates = np.datetime64(config.start, "D") + day
    weekday = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    month_start = dates.astype("datetime64[M]")
    month = month_start.astype(np.int64) % 12 + 1
    day_of_month = (dates - month_start.astype("datetime64[D]")).astype(np.int64) + 1
    season = _MONTH_FACTOR[month - 1]
    # Christmas trade ends around the 20th; the warehouse closes until the new year.
    season = np.where((month == 12) & (day_of_month >= 20), 0.6, season)
    closed = ((month == 12) & (day_of_month >= 24)) | ((month == 1) & (day_of_month <= 2))
    trend = 1.0 + _TREND_GROWTH * day / max(n_days - 1, 1)
    base = season * _WEEKDAY_FACTOR[weekday] * trend * np.where(closed, _CLOSED_FACTOR, 1.0)

    codes = ["GB", *sorted({_HOLIDAY_CODES.get(c, "GB") for c in countries} - {"GB"})]
    years = tuple(range(config.start.year, config.end.year + 1))
    weights = np.empty((len(codes), n_days))
    for k, code in enumerate(codes):
        holiday = np.isin(dates, np.array(_holiday_dates(code, years), dtype="datetime64[D]"))
        weights[k] = base * np.where(holiday, _HOLIDAY_FACTOR, 1.0)
    cdf = np.zeros((len(codes), n_days + 1))
    np.cumsum(weights, axis=1, out=cdf[:, 1:])
    cdf /= cdf[:, -1:]
    flat = (cdf[:, 1:] + np.arange(len(codes))[:, None]).ravel()

    home_holiday = np.isin(dates, np.array(_holiday_dates("GB", years), dtype="datetime64[D]"))
    is_open = (weekday != 5) & ~closed & ~home_holiday
    candidate = np.where(is_open, day, n_days)
    next_open = np.minimum.accumulate(candidate[::-1])[::-1]  # n_days: none left
    code_index = {code: k for k, code in enumerate(codes)}
    country_calendar = np.array(
        [code_index[_HOLIDAY_CODES.get(c, "GB")] for c in countries], dtype=np.int64
    )
    hour_cdf = np.cumsum(_HOUR_WEIGHTS) / _HOUR_WEIGHTS.sum()
    hour_cdf[-1] = 1.0
    return _Calendar(
        n_days=n_days,
        cdf=cdf,
        flat=flat,
        country_calendar=country_calendar,
        next_open=next_open,
        hour_cdf=hour_cdf,
    )


# ----------------------------------------------------------------------------------------
# Catalog
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Catalog:
    """Products, their prices and demand, plus the non-product codes after them."""

    n: int
    codes: Any  # pa.StringArray: n products then _SPECIAL_CODES
    descriptions: Any  # pa.StringArray: products, specials, then _ODD_OUT + _ODD_IN
    base_price: _F64
    pack: _I64
    popularity_rank: _I64
    launch_week: _I64
    change_day: _I64
    change_factor: _F64
    promo_discount: _F64  # (product * n_weeks + week)
    promo_boost: _F64
    flat_cdf: _F64  # (slice, product) cumulative demand + slice, raveled
    n_weeks: int
    drift_day: int
    price_factor_after_drift: float

    def special(self, code: int) -> int:
        return self.n + code

    @property
    def odd_offset(self) -> int:
        return self.n + len(_SPECIAL_CODES)

    def slices(self, day: _I64) -> _I64:
        """Demand slice of each day: its week, in a second block from the drift day on."""
        week = day // 7
        block: _I64 = np.where(day >= self.drift_day, self.n_weeks, 0)
        return week + block

    def draw(self, rng: np.random.Generator, slices: _I64) -> _I64:
        """Products drawn from each slice's demand distribution."""
        position = np.searchsorted(self.flat_cdf, rng.random(slices.size) + slices, side="right")
        products: _I64 = np.clip(position - slices * self.n, 0, self.n - 1)
        return products

    def prices(self, product: _I64, day: _I64) -> _F64:
        """Unit prices on the given days: base, permanent changes, promotions, drift."""
        price = self.base_price[product]
        price = price * np.where(day >= self.change_day[product], self.change_factor[product], 1)
        price = price * (1.0 - self.promo_discount[product * self.n_weeks + day // 7])
        price = price * np.where(day >= self.drift_day, self.price_factor_after_drift, 1.0)
        rounded: _F64 = np.round(price, 2)
        return rounded


def _compose_descriptions(rng: np.random.Generator, n: int) -> Any:
    """Distinct upper-case descriptions such as "JUMBO RED RETROSPOT SHOPPER BAG"."""
    parts = (_PREFIXES, _COLOURS, _MOTIFS, _ITEMS)
    absent = (0.75, 0.35, 0.3, 0.0)  # chance a part is left out
    sizes = [len(p) + 1 for p in parts]  # index 0 = left out
    choice = np.zeros((len(parts), n), dtype=np.int64)
    todo = np.arange(n)
    for _ in range(_MAX_REDRAWS):
        for j, words in enumerate(parts):
            picked = rng.integers(1, len(words) + 1, todo.size)
            choice[j, todo] = np.where(rng.random(todo.size) < absent[j], 0, picked)
        key = np.ravel_multi_index(tuple(choice), sizes)
        _, first = np.unique(key, return_index=True)
        repeated = np.ones(n, dtype=bool)
        repeated[first] = False
        todo = np.flatnonzero(repeated)
        if todo.size == 0:
            break
    columns = []
    for j, words in enumerate(parts):
        vocabulary = pa.array([None, *words], type=pa.string())
        columns.append(vocabulary.take(pa.array(choice[j])))
    return pc.binary_join_element_wise(*columns, " ", null_handling="skip")


def _choose_packs(rng: np.random.Generator, price: _F64) -> _I64:
    """Units per pack: cheap items come by the dozen, dear ones singly."""
    bands: tuple[tuple[float, float, list[int], list[float]], ...] = (
        (0.0, 0.6, [12, 24, 25, 48, 72], [0.3, 0.3, 0.1, 0.2, 0.1]),
        (0.6, 1.5, [6, 10, 12, 24], [0.3, 0.2, 0.35, 0.15]),
        (1.5, 4.0, [1, 2, 3, 4, 6, 12], [0.15, 0.2, 0.15, 0.15, 0.25, 0.1]),
        (4.0, 10.0, [1, 2, 4, 6], [0.35, 0.35, 0.15, 0.15]),
        (10.0, math.inf, [1, 2], [0.7, 0.3]),
    )
    pack = np.ones(price.size, dtype=np.int64)
    for low, high, sizes, probs in bands:
        in_band = (price >= low) & (price < high)
        pack[in_band] = rng.choice(sizes, size=int(in_band.sum()), p=probs)
    return pack


def _build_catalog(
    rng: np.random.Generator, config: GeneratorConfig, calendar: _Calendar
) -> _Catalog:
    n = config.product_count
    n_weeks = calendar.n_weeks

    code_number = rng.choice(80_000, size=n, replace=False) + 10_000
    suffix = np.where(
        rng.random(n) < 0.15,
        rng.integers(0, len(_CODE_SUFFIXES), n),
        -1,
    )
    suffixes = pa.array(list(_CODE_SUFFIXES), type=pa.string()).take(
        pa.array(suffix, mask=suffix < 0)
    )
    codes = pc.binary_join_element_wise(
        pc.cast(pa.array(code_number), pa.string()), suffixes, "", null_handling="skip"
    )
    codes = pa.concat_arrays([codes, pa.array(_SPECIAL_CODES, type=pa.string())])
    descriptions = pa.concat_arrays(
        [
            _compose_descriptions(rng, n),
            pa.array(_SPECIAL_DESCRIPTIONS + _ODD_OUT + _ODD_IN, type=pa.string()),
        ]
    )

    log_price = rng.normal(math.log(2.1), 0.85, n)
    raw = np.exp(log_price)
    base_price = np.maximum(np.where(raw < 1, np.round(raw, 2), np.round(raw * 20) / 20), 0.1)
    pack = _choose_packs(rng, base_price)

    # Cheap products sell a little more often; the rest of popularity is luck.
    score = -0.4 * (log_price - log_price.mean()) / 0.85 + rng.normal(0, 1, n)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-score, kind="stable")] = np.arange(n)
    popularity = 1.0 / (rank + 1.0 + _ZIPF_OFFSET) ** _ZIPF_EXPONENT
    reversed_popularity = 1.0 / (n - rank + _ZIPF_OFFSET) ** _ZIPF_EXPONENT

    late = (rng.random(n) < _LATE_LAUNCH_SHARE) & (rank > 0)
    launch_week = np.where(late, rng.integers(1, max(2, n_weeks - 4), n), 0)

    changes = rng.random(n) < _PRICE_CHANGE_SHARE
    change_day = np.where(changes, rng.integers(0, calendar.n_days, n), np.iinfo(np.int64).max)
    change_factor = rng.choice(_PRICE_CHANGE_FACTORS, size=n)

    n_promos = round(n * n_weeks * _PROMO_SHARE)
    promo_cell = rng.integers(0, n, n_promos) * n_weeks + rng.integers(0, n_weeks, n_promos)
    promo_discount = np.zeros(n * n_weeks)
    promo_boost = np.ones(n * n_weeks)
    promo_discount[promo_cell] = rng.choice(_PROMO_DISCOUNTS, size=n_promos)
    promo_boost[promo_cell] = rng.uniform(1.4, 2.2, n_promos)

    drift = config.drift
    drift_day = (drift.start - config.start).days if drift is not None else calendar.n_days
    weeks = np.arange(n_weeks)
    launched = launch_week[None, :] <= weeks[:, None]
    demand_boost = np.where(promo_discount > 0, _PROMO_DEMAND_BOOST, 1.0).reshape(n, n_weeks).T
    demand = popularity * launched * demand_boost
    demand /= demand.sum(axis=1, keepdims=True)
    if drift is not None:
        shifted = reversed_popularity * launched * demand_boost
        shifted /= shifted.sum(axis=1, keepdims=True)
        mix = float(drift.product_mix_shift)
        demand = np.concatenate([demand, (1.0 - mix) * demand + mix * shifted])
    cdf = np.cumsum(demand, axis=1)
    cdf /= cdf[:, -1:]
    flat_cdf = (cdf + np.arange(cdf.shape[0])[:, None]).ravel()

    return _Catalog(
        n=n,
        codes=codes,
        descriptions=descriptions,
        base_price=base_price,
        pack=pack,
        popularity_rank=rank,
        launch_week=launch_week,
        change_day=change_day,
        change_factor=change_factor,
        promo_discount=promo_discount,
        promo_boost=promo_boost,
        flat_cdf=flat_cdf,
        n_weeks=n_weeks,
        drift_day=drift_day,
        price_factor_after_drift=1.0 + float(drift.price_shift) if drift is not None else 1.0,
    )


# ----------------------------------------------------------------------------------------
# Customers and invoices
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Customers:
    ids: Any  # pa.StringArray
    country: _I64
    calendar: _I64
    low: _F64  # cumulative trading mass before the customer's first day
    high: _F64  # ... through the last day
    activity: _F64
    quantity_factor: _F64
    is_new_country: _Bool


def _country_table(config: GeneratorConfig) -> tuple[list[str], _F64, int | None]:
    """Countries, customer weights, and the index of the drift's new country."""
    new = config.drift.new_country if config.drift is not None else None
    base = [c for c in _COUNTRY_WEIGHTS if c != new]
    foreign = np.array([_COUNTRY_WEIGHTS[c] for c in base[1:]], dtype=np.float64)
    foreign /= foreign.sum()
    weights = np.concatenate([[_HOME_CUSTOMER_SHARE], (1 - _HOME_CUSTOMER_SHARE) * foreign])
    weights /= weights.sum()
    if new is None:
        return base, weights, None
    return [*base, new], weights, len(base)


def _build_customers(
    rng: np.random.Generator,
    config: GeneratorConfig,
    calendar: _Calendar,
    countries: Sequence[str],
    weights: _F64,
    new_country: int | None,
) -> _Customers:
    n_base = config.customer_count
    n_new = max(1, round(n_base * _NEW_COUNTRY_CUSTOMER_SHARE)) if new_country is not None else 0
    n_total = n_base + n_new
    last = calendar.n_days - 1

    country = rng.choice(weights.size, size=n_base, p=weights)
    if n_base >= 4 * weights.size:
        # UCI has every country at least once; so do we, at any reasonable size.
        country[rng.permutation(n_base)[: weights.size]] = np.arange(weights.size)

    joins_later = rng.random(n_base) >= 0.45
    join = np.where(joins_later, rng.integers(0, last + 1, n_base), 0)
    churns = rng.random(n_base) < 0.35
    stay = 30 + rng.exponential(250.0, n_base).astype(np.int64)
    leave = np.where(churns, np.minimum(join + stay, last), last)

    # Heavy-tailed activity; a few wholesalers order often and in bulk.
    activity = rng.lognormal(0.0, 1.3, n_base)
    quantity_factor = rng.lognormal(0.0, 0.35, n_base)
    wholesaler = rng.random(n_base) < 0.03
    activity = np.where(wholesaler, activity * 4.0, activity)
    quantity_factor = np.where(
        wholesaler, quantity_factor * rng.uniform(4, 12, n_base), quantity_factor
    )

    if n_new:
        assert new_country is not None and config.drift is not None
        drift_day = (config.drift.start - config.start).days
        span = max(1, (last - drift_day) // 2)
        country = np.concatenate([country, np.full(n_new, new_country)])
        first_day = np.where(rng.random(n_new) < 0.25, 0, rng.integers(0, span, n_new))
        join = np.concatenate([join, drift_day + first_day])
        leave = np.concatenate([leave, np.full(n_new, last)])
        activity = np.concatenate([activity, rng.lognormal(0.0, 1.0, n_new)])
        quantity_factor = np.concatenate([quantity_factor, rng.lognormal(0.2, 0.35, n_new)])
    is_new = np.arange(n_total) >= n_base

    # Customer ids grow with the day the customer first appears, as in a real shop.
    id_offset = np.sort(rng.choice(int(n_total * 1.35) + 1, size=n_total, replace=False))
    id_number = np.empty(n_total, dtype=np.int64)
    id_number[np.argsort(join, kind="stable")] = _FIRST_CUSTOMER_ID + id_offset
    ids = pc.cast(pa.array(id_number), pa.string())

    cal = calendar.country_calendar[country]
    low, high = calendar.window(cal, join, leave)
    return _Customers(
        ids=ids,
        country=country,
        calendar=cal,
        low=low,
        high=high,
        activity=activity,
        quantity_factor=quantity_factor,
        is_new_country=is_new,
    )


def _allocate(rng: np.random.Generator, count: int, weight: _F64) -> _I64:
    """Invoices per customer: one each while they last, the rest by weight."""
    if weight.size == 0 or count <= 0:
        return np.zeros(weight.size, dtype=np.int64)
    p = weight / weight.sum() if weight.sum() > 0 else np.full(weight.size, 1 / weight.size)
    if count >= weight.size:
        counts: _I64 = 1 + rng.multinomial(count - weight.size, p)
        return counts
    drawn: _I64 = rng.multinomial(count, p)
    return drawn


@dataclass(frozen=True)
class _Invoices:
    """Sale invoices sorted by time."""

    time: _I64  # minutes since the first day's midnight
    customer: _I64  # -1 for guests
    country: _I64
    lines: _I64
    start: _I64  # first row of each invoice


def _line_counts(rng: np.random.Generator, guest: _Bool, total: int) -> _I64:
    """Heavy-tailed line counts per invoice that sum to exactly ``total``."""
    n = guest.size
    raw = rng.lognormal(math.log(_MEDIAN_LINES), _LINES_SIGMA, n)
    raw = np.where(guest, raw * _GUEST_LINE_FACTOR, raw)
    raw = np.where(rng.random(n) < _SINGLE_LINE_SHARE, 1.0, raw)
    extra = np.clip(np.rint(raw), 1, _MAX_LINES).astype(np.int64) - 1
    wanted = total - n
    if extra.sum() == 0:
        extra = rng.multinomial(wanted, np.full(n, 1.0 / n))
    else:
        extra = np.floor(extra * (wanted / extra.sum())).astype(np.int64)
        remainder = wanted - int(extra.sum())
        extra += np.bincount(rng.integers(0, n, remainder), minlength=n)
    lines: _I64 = 1 + extra
    return lines


def _build_invoices(
    rng: np.random.Generator,
    config: GeneratorConfig,
    calendar: _Calendar,
    customers: _Customers,
    weights: _F64,
    lines_total: int,
) -> _Invoices:
    mean_lines = _MEAN_LINES * (
        1 - _GUEST_INVOICE_SHARE + _GUEST_INVOICE_SHARE * _GUEST_LINE_FACTOR
    )
    n = max(1, min(lines_total, round(lines_total / mean_lines)))
    n_guest = min(round(n * _GUEST_INVOICE_SHARE), n - 1)
    n_known = n - n_guest

    new = customers.is_new_country
    n_new_invoices = 0
    if new.any():
        assert config.drift is not None
        drift_day = (config.drift.start - config.start).days
        after = 1.0 - float(calendar.cdf[0, drift_day])
        n_new_invoices = min(round(n_known * _NEW_COUNTRY_INVOICE_SHARE * after), n_known - 1)
    mass = customers.high - customers.low
    counts = np.concatenate(
        [
            _allocate(rng, n_known - n_new_invoices, (customers.activity * mass)[~new]),
            _allocate(rng, n_new_invoices, (customers.activity * mass)[new]),
        ]
    )
    customer = np.repeat(np.arange(counts.size), counts)
    known_days = calendar.sample_days(
        rng,
        customers.calendar[customer],
        customers.low[customer],
        customers.high[customer],
    )

    # Guests are mostly British; foreign guests follow the customers' country mix.
    foreign = weights.copy()
    foreign[_HOME] = 0.0
    guest_country = np.where(
        rng.random(n_guest) < _HOME_GUEST_SHARE,
        _HOME,
        rng.choice(weights.size, size=n_guest, p=foreign / foreign.sum()),
    )
    guest_calendar = calendar.country_calendar[guest_country]
    guest_days = calendar.sample_days(rng, guest_calendar, np.zeros(n_guest), np.ones(n_guest))

    day = np.concatenate([known_days, guest_days])
    time = day * 1440 + calendar.sample_minutes(rng, n)
    customer = np.concatenate([customer, np.full(n_guest, -1)])
    country = np.concatenate([customers.country[customer[:n_known]], guest_country])
    order = np.argsort(time, kind="stable")
    time, customer, country = time[order], customer[order], country[order]
    lines = _line_counts(rng, customer < 0, lines_total)
    start = np.cumsum(lines) - lines
    return _Invoices(time=time, customer=customer, country=country, lines=lines, start=start)


# ----------------------------------------------------------------------------------------
# Lines
# ----------------------------------------------------------------------------------------


def _distinct_products(
    rng: np.random.Generator, catalog: _Catalog, invoice: _I64, slices: _I64
) -> tuple[_I64, _I64]:
    """Products for lines of consecutive invoices, distinct within each invoice.

    Args:
        invoice: Invoice of each line, ascending, starting at 0.
        slices: Demand slice of each invoice.

    Returns:
        ``(invoice, product)`` of the lines, sorted by invoice then product.
    """
    n = catalog.n
    keys = invoice * n + catalog.draw(rng, slices[invoice])
    keys.sort()
    repeated = np.zeros(keys.size, dtype=bool)
    repeated[1:] = keys[1:] == keys[:-1]
    if repeated.any():
        taken = keys[~repeated]
        pending = keys[repeated] // n
        accepted = np.empty(0, dtype=np.int64)
        for _ in range(_MAX_REDRAWS):
            candidate = pending * n + catalog.draw(rng, slices[pending])
            position = np.minimum(np.searchsorted(taken, candidate), taken.size - 1)
            clash = taken[position] == candidate
            clash |= np.isin(candidate, accepted)
            _, first = np.unique(candidate, return_index=True)
            fresh = np.zeros(candidate.size, dtype=bool)
            fresh[first] = True
            ok = fresh & ~clash
            accepted = np.concatenate([accepted, candidate[ok]])
            pending = pending[~ok]
            if pending.size == 0:
                break
        # An invoice longer than the products on offer keeps its repeats.
        leftover = pending * n + catalog.draw(rng, slices[pending])
        keys = np.sort(np.concatenate([taken, accepted, leftover]))
    invoice_of_line, product = np.divmod(keys, n)
    return invoice_of_line, product


@dataclass
class _Rows:
    """Row-level columns before strings: indices into events, catalog and descriptions."""

    event: _I64
    item: _I64
    quantity: _I64
    price: _F64
    description: _I64  # -1 = null
    anomaly: _Bool

    @classmethod
    def empty(cls) -> _Rows:
        return cls.of(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), 0.0)

    @classmethod
    def of(
        cls,
        event: _I64,
        item: _I64,
        quantity: _I64,
        price: _F64 | float,
        description: _I64 | None = None,
    ) -> _Rows:
        size = event.size
        return cls(
            event=event.astype(np.int64),
            item=item.astype(np.int64),
            quantity=quantity.astype(np.int64),
            price=np.broadcast_to(np.asarray(price, dtype=np.float64), (size,)).copy(),
            description=item.astype(np.int64) if description is None else description,
            anomaly=np.zeros(size, dtype=bool),
        )

    def take(self, index: _I64) -> _Rows:
        return _Rows(
            event=self.event[index],
            item=self.item[index],
            quantity=self.quantity[index],
            price=self.price[index],
            description=self.description[index],
            anomaly=self.anomaly[index],
        )

    @staticmethod
    def concat(parts: Sequence[_Rows]) -> _Rows:
        return _Rows(
            event=np.concatenate([p.event for p in parts]),
            item=np.concatenate([p.item for p in parts]),
            quantity=np.concatenate([p.quantity for p in parts]),
            price=np.concatenate([p.price for p in parts]),
            description=np.concatenate([p.description for p in parts]),
            anomaly=np.concatenate([p.anomaly for p in parts]),
        )


def _sale_lines(
    rng: np.random.Generator,
    catalog: _Catalog,
    customers: _Customers,
    invoices: _Invoices,
    progress: _Progress,
    share: float,
) -> _Rows:
    """All lines of the sale invoices, generated in chunks of about a million lines."""
    total = int(invoices.lines.sum())
    end = np.cumsum(invoices.lines)
    cuts = np.unique(np.searchsorted(end, np.arange(_CHUNK_LINES, total, _CHUNK_LINES)) + 1)
    bounds = [0, *[int(c) for c in cuts if 0 < c < invoices.lines.size], invoices.lines.size]
    day_all = invoices.time // 1440
    parts: list[_Rows] = []
    for first, last in itertools.pairwise(bounds):
        lines = invoices.lines[first:last]
        day = day_all[first:last]
        local = np.repeat(np.arange(last - first), lines)
        local, product = _distinct_products(rng, catalog, local, catalog.slices(day))
        line_day = day[local]
        customer = invoices.customer[first:last][local]
        guest = customer < 0
        factor = np.where(guest, 1.0, customers.quantity_factor[np.maximum(customer, 0)])
        boost = catalog.promo_boost[product * catalog.n_weeks + line_day // 7]
        noise = np.exp(0.55 * rng.standard_normal(local.size))
        packs = np.maximum(1, np.rint(noise * factor * boost))
        pack = catalog.pack[product]
        # Guests buy single items, a few at a time; accounts mostly buy packs.
        units = np.maximum(1, np.rint(noise * boost * np.where(guest, 1.0, factor)))
        by_unit = guest | (rng.random(local.size) < 0.4)
        quantity = np.where(by_unit, units, pack * packs).astype(np.int64)
        parts.append(
            _Rows.of(
                event=local + first,
                item=product,
                quantity=quantity,
                price=catalog.prices(product, line_day),
            )
        )
        progress.advance(share * local.size / total)
    return _Rows.concat(parts)


# ----------------------------------------------------------------------------------------
# Messy rows: non-product lines, cancellations, returns, duplicates, anomalies
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Budget:
    """How many rows of each kind; ``sale`` lines fill the rest."""

    sale: int
    cancel: int
    duplicate: int
    odd: int
    discount: int
    amazon: int
    bad_debt: int
    extreme: int
    manual: int
    bank: int
    free: int
    anomaly: int
    every_kind: bool

    @classmethod
    def for_config(cls, config: GeneratorConfig) -> _Budget:
        rows = int(config.rows)
        full = rows >= _ALL_KINDS_FROM_ROWS

        def count(share: float, minimum: int = 1) -> int:
            return max(round(rows * share), minimum if full else 0)

        extra = {
            "cancel": count(_CANCEL_SHARE),
            "duplicate": count(_DUPLICATE_SHARE),
            "odd": count(_ODD_SHARE),
            "discount": count(_DISCOUNT_SHARE),
            "amazon": count(_AMAZON_SHARE, 2),
            "bad_debt": count(_BAD_DEBT_SHARE),
            "extreme": 2 if full else 0,
        }
        return cls(
            sale=rows - sum(extra.values()),
            manual=count(_MANUAL_SHARE),
            bank=count(_BANK_SHARE),
            free=count(_FREE_SHARE),
            anomaly=round(rows * float(config.anomaly_rate)),
            every_kind=full,
            **extra,
        )


@dataclass
class _Events:
    """Invoices of every kind: time, customer, country and prefix kind."""

    time: list[_I64]
    customer: list[_I64]
    country: list[_I64]
    kind: list[_I64]
    size: int = 0

    def add(self, time: _I64, customer: _I64 | int, country: _I64 | int, kind: _I64 | int) -> _I64:
        """Append events; return their indices."""
        n = time.size
        self.time.append(time.astype(np.int64))
        self.customer.append(np.broadcast_to(customer, (n,)).astype(np.int64))
        self.country.append(np.broadcast_to(country, (n,)).astype(np.int64))
        self.kind.append(np.broadcast_to(np.asarray(kind), (n,)).astype(np.int64))
        index = np.arange(self.size, self.size + n, dtype=np.int64)
        self.size += n
        return index


def _replace_lines(
    rng: np.random.Generator, sales: _Rows, catalog: _Catalog, invoices: _Invoices, budget: _Budget
) -> None:
    """Turn some sale lines into postage, manual, bank-charge and free lines (in place)."""
    known = invoices.customer >= 0
    chance = np.where(invoices.country == _HOME, _POSTAGE_HOME_SHARE, _POSTAGE_FOREIGN_SHARE)
    eligible = known & (invoices.lines >= 2)
    postage = eligible & (rng.random(chance.size) < chance)
    if not postage.any() and budget.every_kind and eligible.any():
        postage[np.flatnonzero(eligible)[0]] = True
    rows = (invoices.start + invoices.lines - 1)[postage]
    sales.item[rows] = catalog.special(_POST)
    sales.description[rows] = catalog.special(_POST)
    sales.quantity[rows] = rng.choice([1, 1, 1, 2, 3], size=rows.size)
    sales.price[rows] = rng.choice(_POSTAGE_PRICES, size=rows.size)

    products = np.flatnonzero(sales.item < catalog.n)
    wanted = min(budget.manual + budget.bank + budget.free, products.size)
    chosen = rng.choice(products, size=wanted, replace=False)
    manual, bank, free = np.split(chosen, [budget.manual, budget.manual + budget.bank])
    sales.item[manual] = catalog.special(_MANUAL)
    sales.description[manual] = catalog.special(_MANUAL)
    sales.quantity[manual] = np.where(
        rng.random(manual.size) < 0.85, 1, rng.integers(2, 13, manual.size)
    )
    sales.price[manual] = np.round(rng.lognormal(math.log(2.5), 1.3, manual.size), 2) + 0.01
    sales.item[bank] = catalog.special(_BANK)
    sales.description[bank] = catalog.special(_BANK)
    sales.quantity[bank] = 1
    sales.price[bank] = 15.0
    sales.price[free] = 0.0


def _cancellations(
    rng: np.random.Generator,
    sales: _Rows,
    invoices: _Invoices,
    calendar: _Calendar,
    events: _Events,
    count: int,
) -> tuple[_Rows, _I64]:
    """Cancellation invoices ("C...") mirroring contiguous lines of earlier invoices.

    Returns:
        The cancellation rows and the sale rows they mirror.
    """
    known = np.flatnonzero(invoices.customer >= 0)
    if count == 0 or known.size == 0:
        return _Rows.empty(), np.empty(0, dtype=np.int64)
    source = rng.choice(known, size=count)
    per_invoice = np.minimum(rng.geometric(0.42, count), invoices.lines[source])
    used = int(np.searchsorted(np.cumsum(per_invoice), count)) + 1
    source, per_invoice = source[:used], per_invoice[:used]
    per_invoice[-1] -= int(per_invoice.sum()) - count
    offset = np.floor(rng.random(used) * (invoices.lines[source] - per_invoice + 1))
    first_row = invoices.start[source] + offset.astype(np.int64)
    group = np.repeat(np.arange(used), per_invoice)
    within = np.arange(count) - np.repeat(np.cumsum(per_invoice) - per_invoice, per_invoice)
    rows = first_row[group] + within

    event = events.add(
        calendar.later(rng, invoices.time[source]),
        invoices.customer[source],
        invoices.country[source],
        _KIND_CANCEL,
    )
    mirrored = sales.take(rows)
    mirrored.event = event[group]
    mirrored.quantity = -mirrored.quantity
    return mirrored, rows


def _anomalies_and_duplicates(
    rng: np.random.Generator,
    sales: _Rows,
    catalog: _Catalog,
    cancelled: _I64,
    budget: _Budget,
) -> _Rows:
    """Label anomalies in place; return exact copies of other sale rows."""
    eligible_mask = (sales.item < catalog.n) & (sales.price > 0)
    eligible_mask[cancelled] = False
    eligible = np.flatnonzero(eligible_mask)
    n_anomaly = min(budget.anomaly, eligible.size)
    n_copy = min(budget.duplicate, eligible.size - n_anomaly)
    chosen = rng.choice(eligible, size=n_anomaly + n_copy, replace=False)
    anomaly, copied = chosen[:n_anomaly], chosen[n_anomaly:]

    # 60 % get 20-100x the product's usual quantity (at least a pack), 40 % a 10x price.
    by_quantity = rng.random(n_anomaly) < 0.6
    factor = rng.uniform(20, 100, n_anomaly)
    quantity = sales.quantity[anomaly]
    usual = np.maximum(quantity, catalog.pack[sales.item[anomaly]])
    sales.quantity[anomaly] = np.where(
        by_quantity, np.rint(usual * factor).astype(np.int64), quantity
    )
    sales.price[anomaly] = np.where(
        by_quantity, sales.price[anomaly], np.round(sales.price[anomaly] * 10, 2)
    )
    sales.anomaly[anomaly] = True

    if n_copy < budget.duplicate:  # tiny tables: copy any sale rows
        extra = rng.integers(0, sales.event.size, budget.duplicate - n_copy)
        copied = np.concatenate([copied, extra])
    return sales.take(np.sort(copied))


def _one_line_events(
    rng: np.random.Generator,
    catalog: _Catalog,
    calendar: _Calendar,
    invoices: _Invoices,
    events: _Events,
    budget: _Budget,
) -> list[_Rows]:
    """Discounts, Amazon fees, bad-debt adjustments and stock adjustments."""
    parts: list[_Rows] = []
    no_customer = -1
    gb = np.zeros(1, dtype=np.int64)

    def home_times(n: int) -> _I64:
        cal = np.broadcast_to(gb, (n,))
        days = calendar.sample_days(rng, cal, np.zeros(n), np.ones(n))
        times: _I64 = days * 1440 + calendar.sample_minutes(rng, n)
        return times

    known = np.flatnonzero(invoices.customer >= 0)
    if budget.discount and known.size:
        base = rng.choice(known, size=budget.discount)
        event = events.add(
            calendar.later(rng, invoices.time[base]),
            invoices.customer[base],
            invoices.country[base],
            _KIND_CANCEL,
        )
        price = np.round(rng.lognormal(math.log(20.0), 1.0, event.size), 2) + 0.01
        item = np.full(event.size, catalog.special(_DISCOUNT))
        parts.append(_Rows.of(event, item, np.full(event.size, -1), price))

    if budget.amazon:
        kind = np.where(rng.random(budget.amazon) < 0.7, _KIND_CANCEL, _KIND_SALE)
        kind[:2] = [_KIND_SALE, _KIND_CANCEL][: min(2, budget.amazon)]
        event = events.add(home_times(budget.amazon), no_customer, _HOME, kind)
        price = np.round(rng.lognormal(math.log(5500.0), 0.6, event.size), 2)
        quantity = np.where(kind == _KIND_CANCEL, -1, 1)
        parts.append(
            _Rows.of(event, np.full(event.size, catalog.special(_AMAZON)), quantity, price)
        )

    if budget.bad_debt:
        event = events.add(home_times(budget.bad_debt), no_customer, _HOME, _KIND_ADJUST)
        price = -np.round(rng.lognormal(math.log(8000.0), 0.7, event.size), 2)
        item = np.full(event.size, catalog.special(_BAD_DEBT))
        parts.append(_Rows.of(event, item, np.ones(event.size, dtype=np.int64), price))

    if budget.odd:
        n = budget.odd
        time = home_times(n)
        event = events.add(time, no_customer, _HOME, _KIND_SALE)
        product = catalog.draw(rng, catalog.slices(time // 1440))
        outgoing = rng.random(n) < 0.55
        size = np.maximum(1, np.rint(rng.lognormal(math.log(8.0), 1.2, n))).astype(np.int64)
        text = np.where(
            outgoing,
            rng.integers(0, len(_ODD_OUT), n),
            len(_ODD_OUT) + rng.integers(0, len(_ODD_IN), n),
        )
        description = np.where(rng.random(n) < _ODD_NULL_SHARE, -1, catalog.odd_offset + text)
        parts.append(_Rows.of(event, product, np.where(outgoing, -size, size), 0.0, description))
    return parts


def _extreme_pair(
    rng: np.random.Generator,
    catalog: _Catalog,
    calendar: _Calendar,
    invoices: _Invoices,
    events: _Events,
) -> _Rows:
    """One huge order of a cheap best seller, cancelled minutes later by the same customer."""
    known = invoices.customer >= 0
    home = known & (invoices.country == _HOME)
    pool = np.flatnonzero(home if home.any() else known)
    late = pool[pool >= invoices.time.size // 2]
    base = int(rng.choice(late if late.size else pool))
    cheap = np.flatnonzero((catalog.launch_week == 0) & (catalog.base_price < 3))
    candidates = cheap if cheap.size else np.arange(catalog.n)
    product = candidates[np.argmin(catalog.popularity_rank[candidates])]
    time = invoices.time[base] + np.array([0, 12])
    customer = invoices.customer[base]
    event = events.add(time, customer, invoices.country[base], np.array([_KIND_SALE, _KIND_CANCEL]))
    quantity = int(rng.integers(60_000, 90_000))
    price = catalog.prices(np.array([product]), time[:1] // 1440)
    item = np.full(2, product)
    return _Rows.of(event, item, np.array([quantity, -quantity]), np.repeat(price, 2))


# ----------------------------------------------------------------------------------------
# Assembly
# ----------------------------------------------------------------------------------------


def _schema(with_anomaly: bool) -> Any:
    fields = [
        pa.field(UCI_HEADERS["invoice_no"], pa.string()),
        pa.field(UCI_HEADERS["stock_code"], pa.string()),
        pa.field(UCI_HEADERS["description"], pa.string()),
        pa.field(UCI_HEADERS["quantity"], pa.int64()),
        pa.field(UCI_HEADERS["invoice_date"], pa.timestamp("us")),
        pa.field(UCI_HEADERS["unit_price"], pa.float64()),
        pa.field(UCI_HEADERS["customer_id"], pa.string()),
        pa.field(UCI_HEADERS["country"], pa.string()),
    ]
    if with_anomaly:
        fields.append(pa.field("is_anomaly", pa.bool_()))
    return pa.schema(fields)


def _assemble(
    config: GeneratorConfig,
    rows: _Rows,
    events: _Events,
    catalog: _Catalog,
    customers: _Customers,
    countries: Sequence[str],
    progress: _Progress,
    share: float,
) -> Any:
    """Order rows by invoice number and build the Arrow table in batches."""
    time = np.concatenate(events.time)
    order = np.argsort(time, kind="stable")  # invoice numbers follow time
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    n_events = order.size
    first_no = min(_FIRST_INVOICE_NO, max(100_000, 1_000_000 - n_events))
    kind = np.concatenate(events.kind)[order]
    prefixes = pa.array(["", CANCELLATION_PREFIX, ADJUSTMENT_PREFIX], type=pa.string())
    invoice_no = pc.binary_join_element_wise(
        prefixes.take(pa.array(kind)),
        pc.cast(pa.array(np.arange(first_no, first_no + n_events)), pa.string()),
        "",
    )
    start_us = (np.datetime64(config.start, "D") - np.datetime64(0, "D")).astype(np.int64)
    event_us = (start_us * 1440 + time[order]) * 60_000_000
    event_customer = np.concatenate(events.customer)[order]
    event_country = np.concatenate(events.country)[order]
    country_names = pa.array(list(countries), type=pa.string())

    event = rank[rows.event]
    row_order = np.argsort(event, kind="stable")
    schema = _schema(float(config.anomaly_rate) > 0)
    batches = []
    size = rows.event.size
    step = 1 << 21
    for first in range(0, size, step):
        index = row_order[first : first + step]
        ev = event[index]
        customer = event_customer[ev]
        description = rows.description[index]
        columns = [
            invoice_no.take(pa.array(ev)),
            catalog.codes.take(pa.array(rows.item[index])),
            catalog.descriptions.take(pa.array(description, mask=description < 0)),
            pa.array(rows.quantity[index]),
            pa.array(event_us[ev].view("datetime64[us]")),
            pa.array(rows.price[index]),
            customers.ids.take(pa.array(customer, mask=customer < 0)),
            country_names.take(pa.array(event_country[ev])),
        ]
        if len(schema) > len(columns):
            columns.append(pa.array(rows.anomaly[index]))
        batches.append(pa.record_batch(columns, schema=schema))
        progress.advance(share * index.size / size)
    return pa.Table.from_batches(batches, schema=schema)


def generate_transactions(
    config: GeneratorConfig, progress: Callable[[int], None] | None = None
) -> pa.Table:
    """Generate synthetic transactions in the UCI Online Retail layout.

    Args:
        config: Size, seed, period and optional drift and anomalies.
        progress: Called with the number of rows newly produced as work advances;
            the calls add up to ``config.rows`` (drive a Rich bar with it).

    Returns:
        A ``pyarrow.Table`` of exactly ``config.rows`` rows with the columns
        InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice,
        CustomerID and Country (UCI names, in that order), plus ``is_anomaly``
        when ``config.anomaly_rate > 0``. Rows are ordered by invoice number,
        which grows with time. The same config gives an identical table.

    Raises:
        ConfigError: if ``config`` is invalid.
    """
    config.validate()
    tracker = _Progress(int(config.rows), progress)
    seeds = np.random.SeedSequence(int(config.seed)).spawn(6)
    rng_catalog, rng_customers, rng_invoices, rng_lines, rng_dirt, rng_extra = (
        np.random.default_rng(s) for s in seeds
    )
    budget = _Budget.for_config(config)

    countries, weights, new_country = _country_table(config)
    calendar = _build_calendar(config, countries)
    catalog = _build_catalog(rng_catalog, config, calendar)
    customers = _build_customers(rng_customers, config, calendar, countries, weights, new_country)
    invoices = _build_invoices(rng_invoices, config, calendar, customers, weights, budget.sale)
    tracker.advance(0.05)

    sales = _sale_lines(rng_lines, catalog, customers, invoices, tracker, 0.55)
    events = _Events([], [], [], [])
    events.add(invoices.time, invoices.customer, invoices.country, _KIND_SALE)

    _replace_lines(rng_dirt, sales, catalog, invoices, budget)
    cancelled, sources = _cancellations(rng_dirt, sales, invoices, calendar, events, budget.cancel)
    copies = _anomalies_and_duplicates(rng_dirt, sales, catalog, sources, budget)
    parts = [sales, copies, cancelled]
    parts += _one_line_events(rng_extra, catalog, calendar, invoices, events, budget)
    if budget.extreme:
        parts.append(_extreme_pair(rng_extra, catalog, calendar, invoices, events))
    rows = _Rows.concat(parts)
    del parts, sales, copies, cancelled  # free the pieces before building strings
    tracker.advance(0.1)

    table = _assemble(config, rows, events, catalog, customers, countries, tracker, 0.3)
    tracker.finish()
    return table


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------


def write_transactions(table: pa.Table, path: Path) -> Path:
    """Write a generated table to CSV or Parquet, chosen by the file extension.

    The file appears atomically (written beside the target, then renamed);
    parent directories are created. CSV gets the UCI header row and dates as
    ``YYYY-MM-DD HH:MM:SS``.

    Args:
        table: A table from :func:`generate_transactions`.
        path: Target file ending in ``.csv`` or ``.parquet``.

    Returns:
        ``path``.

    Raises:
        ConfigError: if the extension is neither ``.csv`` nor ``.parquet``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(
            problem(
                f"a file ending in {' or '.join(OUTPUT_FORMATS)}",
                f"{path.suffix or 'no extension'!r} in {str(path)!r}",
                "name the output e.g. transactions.parquet or transactions.csv",
                subject="output",
            )
        )
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            import pyarrow.csv as pacsv

            name = UCI_HEADERS["invoice_date"]
            index = table.schema.get_field_index(name)
            if index >= 0:
                as_text = pc.cast(pc.cast(table[name], pa.timestamp("s"), safe=False), pa.string())
                table = table.set_column(index, name, as_text)
            pacsv.write_csv(table, tmp)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp, compression="zstd")
    return path
