"""Quantities as people write them: ``"520 MiB"``, ``"1.8 TB/s"``, ``"638 TFLOP/s"``, ``"2 us"``.

Target files are written by people who copy figures from datasheets and papers, so the
parser accepts the notations those documents use and turns them into plain SI numbers
(bytes, bytes per second, FLOP per second, seconds, hertz). Everything downstream of a
target works in those base units only.

Rules:

* A plain number (``64``, ``1.5e9``, or the string ``"64"``) is already in base units.
* Decimal prefixes ``k/K, M, G, T, P, E`` are powers of 1000; binary prefixes
  ``Ki, Mi, Gi, Ti, Pi, Ei`` are powers of 1024 (sizes and bandwidths only).
* A count may precede a quantity, as in ``"132 x 228 KiB"`` (``x``, ``×`` or ``*``), so a
  per-unit figure and its multiplier can both stay visible in the file.
* Arithmetic is exact (``decimal``), so ``"1.3 GB"`` is exactly 1 300 000 000 bytes.

Bad input raises :class:`UnitError` (a ``ValueError``) saying what was expected, e.g.
``expected a size such as '64 GB' or '520 MiB', got '64 GX'``. A number that no float can
hold (``inf``, ``nan``, ``1e400``, ``1e-400``; a count of more than 18 digits) raises its
subclass :class:`UnitRangeError`, so no parser ever returns a non-finite number, and the
schema can say which range the field expects. Plausible ranges per field are the schema's
business, not this module's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

__all__ = [
    "UnitError",
    "UnitRangeError",
    "parse_bytes",
    "parse_bandwidth",
    "parse_flops",
    "parse_time",
    "parse_frequency",
    "parse_energy",
    "format_bytes",
    "format_bandwidth",
    "format_flops",
    "format_time",
    "format_frequency",
    "format_energy",
]


class UnitError(ValueError):
    """A quantity could not be read; the message says what form was expected."""


class UnitRangeError(UnitError):
    """A quantity was read but is not a finite number a float can hold (inf, nan, 1e400)."""


# Magnitudes (in base units) a quantity may have: well inside a float's range (about
# 2.2e-308 to 1.8e308), so arithmetic on them cannot overflow or flush to zero at once.
_LARGEST = Decimal("1e300")
_SMALLEST = Decimal("1e-300")
_MAX_COUNT_DIGITS = 18  # "<count> x <size>": more than a quintillion units is a typo
_MAX_TEXT = 100  # characters in a quantity: "132 x 228 KiB" needs 13


_DECIMAL: dict[str, Decimal] = {
    "": Decimal(1),
    "k": Decimal(10) ** 3,
    "K": Decimal(10) ** 3,  # "KB" is common in datasheets; kilo is unambiguous here.
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
}
_BINARY: dict[str, Decimal] = {
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_SUBUNIT: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal(10) ** -3,
    "u": Decimal(10) ** -6,
    "µ": Decimal(10) ** -6,  # micro sign
    "μ": Decimal(10) ** -6,  # Greek mu, which people type just as often
    "n": Decimal(10) ** -9,
    "p": Decimal(10) ** -12,
}


@dataclass(frozen=True)
class _Quantity:
    """How one kind of quantity is spelled: its unit symbols and the prefixes they take."""

    what: str  # "a size", used in error messages
    examples: tuple[str, str]
    symbols: tuple[str, ...]  # unit symbols without prefix, e.g. "B/s"
    prefixes: dict[str, Decimal]

    def expected(self) -> str:
        return f"expected {self.what} such as {self.examples[0]!r} or {self.examples[1]!r}"


_SIZE = _Quantity("a size", ("64 GB", "520 MiB"), ("B",), {**_DECIMAL, **_BINARY})
_BANDWIDTH = _Quantity(
    "a bandwidth", ("1.8 TB/s", "200 GB/s"), ("B/s",), {**_DECIMAL, **_BINARY}
)
_FLOPS = _Quantity(
    "a compute rate",
    ("638 TFLOP/s", "35 TOPS"),
    ("FLOP/s", "FLOPS", "FLOPs", "flop/s", "flops", "OP/s", "OPS", "op/s", "ops"),
    _DECIMAL,
)
_TIME = _Quantity("a duration", ("2 us", "1.5 ms"), ("s",), _SUBUNIT)
_FREQUENCY = _Quantity("a frequency", ("1.98 GHz", "800 MHz"), ("Hz",), _DECIMAL)
_ENERGY = _Quantity("an energy", ("0.5 pJ", "20 pJ"), ("J",), {**_SUBUNIT, "f": Decimal(10) ** -15})

_NUMBER = r"[+-]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY_RE = re.compile(rf"^\s*(?:(\d+)\s*[x×*]\s*)?({_NUMBER})\s*(\S*)\s*$")


def _parse(value: object, quantity: _Quantity) -> Decimal:
    """Read ``value`` as ``quantity`` and return it exactly, in base units."""
    if isinstance(value, bool):  # bool is an int subclass; True is never a size.
        raise UnitError(f"{quantity.expected()}, got {value!r}")
    if isinstance(value, int):
        if value.bit_length() > 1000:  # beyond 1e300, and cheap to test on a huge int
            raise UnitRangeError(f"{quantity.expected()}, got a {value.bit_length()}-bit "
                                 "integer (out of range: at most 1e300)")
        return _in_range(Decimal(value), value, quantity)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnitRangeError(f"{quantity.expected()}, got {value!r} (not a finite number)")
        return _in_range(Decimal(repr(value)), value, quantity)
    if not isinstance(value, str):
        raise UnitError(f"{quantity.expected()}, got {value!r} ({type(value).__name__})")

    if len(value) > _MAX_TEXT:  # also keeps the regex's backtracking short
        raise UnitError(f"{quantity.expected()}, got {_clip(value)} (longer than {_MAX_TEXT} "
                        "characters)")
    match = _QUANTITY_RE.match(value)
    if match is None:
        raise UnitError(f"{quantity.expected()}, got {value!r}")
    count, number, unit = match.groups()
    try:
        magnitude = Decimal(number.replace("_", ""))
    except InvalidOperation:  # pragma: no cover - the regex admits only valid numbers
        raise UnitError(f"{quantity.expected()}, got {value!r}") from None
    multiplier = _unit_multiplier(unit, quantity)
    if multiplier is None:
        raise UnitError(f"{quantity.expected()}, got {value!r} (unknown unit {unit!r})")
    if count is not None and len(count.lstrip("0")) > _MAX_COUNT_DIGITS:
        raise UnitRangeError(
            f"{quantity.expected()}, got {_clip(value)} (out of range: a count of at most "
            f"{_MAX_COUNT_DIGITS} digits)"
        )
    # Test the exponent before multiplying: Decimal("1e999999999") * 1024 would raise
    # decimal.Overflow (an ArithmeticError, not a ValueError).
    _in_range(magnitude, value, quantity)
    result = magnitude * multiplier
    if count is not None:
        result *= int(count)
    return _in_range(result, value, quantity)


def _clip(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _in_range(amount: Decimal, value: object, quantity: _Quantity) -> Decimal:
    """``amount`` if zero or between 1e-300 and 1e300 in magnitude; else UnitRangeError."""
    if amount and not _SMALLEST <= amount.copy_abs() <= _LARGEST:  # no context: no Overflow
        raise UnitRangeError(
            f"{quantity.expected()}, got {_clip(value)} (out of range: a magnitude from "
            "1e-300 to 1e300 in base units)"
        )
    return amount


def _unit_multiplier(unit: str, quantity: _Quantity) -> Decimal | None:
    """The factor that ``unit`` (prefix + symbol, or nothing) stands for, or None."""
    if unit == "":
        return Decimal(1)
    for symbol in sorted(quantity.symbols, key=len, reverse=True):
        if unit.endswith(symbol):
            prefix = unit[: -len(symbol)]
            if prefix in quantity.prefixes:
                return quantity.prefixes[prefix]
    return None


def parse_bytes(value: str | int | float) -> int:
    """Bytes from ``"520 MiB"``, ``"64 GB"``, ``"132 x 228 KiB"`` or a plain number.

    Returns an ``int``: memory is allocated in whole bytes, and an exact count keeps
    buffer-offset arithmetic free of rounding.
    """
    amount = _parse(value, _SIZE)
    if amount != amount.to_integral_value():
        raise UnitError(f"{value!r} is {amount} bytes, not a whole number of bytes")
    return int(amount)


def parse_bandwidth(value: str | int | float) -> float:
    """Bytes per second from ``"1.8 TB/s"``, ``"55 GB/s"``, ``"512 GiB/s"`` or a number."""
    return float(_parse(value, _BANDWIDTH))


def parse_flops(value: str | int | float) -> float:
    """Operations per second from ``"638 TFLOP/s"``, ``"989 TFLOPS"``, ``"35 TOPS"``."""
    return float(_parse(value, _FLOPS))


def parse_time(value: str | int | float) -> float:
    """Seconds from ``"2 us"``, ``"5 ns"``, ``"1.5 ms"``, ``"3 s"`` or a number."""
    return float(_parse(value, _TIME))


def parse_frequency(value: str | int | float) -> float:
    """Hertz from ``"1.98 GHz"``, ``"800 MHz"`` or a number."""
    return float(_parse(value, _FREQUENCY))


def parse_energy(value: str | int | float) -> float:
    """Joules from ``"0.5 pJ"``, ``"20 pJ"``, ``"1.2 nJ"`` or a number (energy per FLOP or per byte)."""
    return float(_parse(value, _ENERGY))


# ---------------------------------------------------------------------------- formatting


def _mantissa(x: float) -> str:
    """At most three decimals, trailing zeros dropped: 1.800 -> '1.8', 520.0 -> '520'."""
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _scaled(x: float, base: int, prefixes: tuple[str, ...], symbol: str) -> str:
    """Write ``x`` with the largest prefix that keeps the mantissa at least 1."""
    sign = "-" if x < 0 else ""
    x = abs(x)
    power = 0
    while power + 1 < len(prefixes) and x >= base ** (power + 1):
        power += 1
    return f"{sign}{_mantissa(x / base**power)} {prefixes[power]}{symbol}"


_DECIMAL_NAMES = ("", "k", "M", "G", "T", "P", "E")
_BINARY_NAMES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")


def format_bytes(n: float) -> str:
    """A size the way it was probably written: '64 GB', '520 MiB', '4160 MiB'.

    Among the decimal and binary spellings with at most four integer digits, the
    shortest that states the size exactly wins, decimal on a tie, so 520 MiB stays
    '520 MiB' rather than '545.26 MB'. If none is exact, the decimal one with the
    largest prefix.
    """
    exact = Decimal(repr(n)) if isinstance(n, float) else Decimal(n)
    candidates: list[str] = []
    for base, names in ((1000, _DECIMAL_NAMES), (1024, _BINARY_NAMES)):
        for power, prefix in enumerate(names):
            mantissa = abs(n) / base**power
            if (power == 0 or mantissa >= 1) and mantissa < 10_000:  # at most 4 digits
                candidates.append(f"{_mantissa(n / base**power)} {prefix}B")
    exact_forms = [text for text in candidates if _parse(text, _SIZE) == exact]
    if exact_forms:
        return min(exact_forms, key=len)  # min keeps the first on a tie: decimal
    return _scaled(n, 1000, _DECIMAL_NAMES, "B")


def format_bandwidth(x: float) -> str:
    """Bytes per second with decimal prefixes: '1.8 TB/s', '55 GB/s'."""
    return _scaled(x, 1000, _DECIMAL_NAMES, "B/s")


def format_flops(x: float) -> str:
    """Operations per second with decimal prefixes: '638 TFLOP/s'."""
    return _scaled(x, 1000, _DECIMAL_NAMES, "FLOP/s")


def format_frequency(x: float) -> str:
    """Hertz with decimal prefixes: '1.98 GHz'."""
    return _scaled(x, 1000, _DECIMAL_NAMES, "Hz")


def format_time(seconds: float) -> str:
    """A duration in s, ms, us or ns, whichever keeps the mantissa at least 1: '2 us'."""
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if seconds >= scale:
            return f"{sign}{_mantissa(seconds / scale)} {name}"
    if seconds == 0:
        return "0 s"
    return f"{sign}{_mantissa(seconds / 1e-12)} ps"


def format_energy(joules: float) -> str:
    """An energy in J, mJ, uJ, nJ, pJ or fJ, whichever keeps the mantissa at least 1: '0.5 pJ' -> '500 fJ'."""
    sign = "-" if joules < 0 else ""
    joules = abs(joules)
    for scale, name in ((1.0, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ"), (1e-12, "pJ")):
        if joules >= scale:
            return f"{sign}{_mantissa(joules / scale)} {name}"
    return "0 J" if joules == 0 else f"{sign}{_mantissa(joules / 1e-15)} fJ"
