"""A design space: the target fields to vary and the values each takes.

`--vary PATH=SPEC`, with PATH a target field (`codesign.explore.fields`) and SPEC one of

* a list, `1TB/s,2TB/s,4TB/s` (units as in target files; one value is a list of one);
* a log range, `64MiB..1GiB:x2` (lo, lo*2, lo*4, ... up to hi);
* a linear range, `300TFLOP/s..900TFLOP/s:+150TFLOP/s` (lo, lo+step, ... up to hi).

The space is the cartesian product of its axes, in the order given (the last axis varies
fastest), so variant `i` is the same target on every run and on every worker. A variant
that the schema refuses (SRAM slower than HBM, say) is still a variant: the sweep reports
it as invalid with the schema's reason rather than stopping.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from codesign.explore.fields import FieldPath, FieldPathError, resolve, with_values
from codesign.targets.schema import Target

__all__ = ["Axis", "Space", "Variant", "MAX_VALUES", "parse_axis", "target_key"]

MAX_VALUES = 10_000
"""Most values one axis may take: a typo such as `1B..1GB:+1B` is an error, not a hang."""


@dataclass(frozen=True)
class Axis:
    """One varied field and its values (SI base units, in sweep order)."""

    field: FieldPath
    values: tuple[Any, ...]
    spec: str  # as written
    scale: str  # "log" | "linear" | "list": how plots space this axis

    @property
    def name(self) -> str:
        return self.field.text


def _range(field: FieldPath, spec: str) -> tuple[tuple[Any, ...], str]:
    """The values of `lo..hi:xF` or `lo..hi:+S`."""
    lo_text, _, rest = spec.partition("..")
    hi_text, colon, step_text = rest.rpartition(":")
    if not colon:
        raise FieldPathError(f"{field.text}={spec}: a range needs a step: lo..hi:x2 (log steps) or "
                             "lo..hi:+step (linear steps), or give a list a,b,c")
    if not field.numeric:
        raise FieldPathError(f"{field.text}={spec}: {field.canonical} is a {field.kind}; give its values as a list")
    lo, hi = field.parse(lo_text), field.parse(hi_text)
    if lo > hi:
        raise FieldPathError(f"{field.text}={spec}: the range is empty ({field.format(lo)} is above "
                             f"{field.format(hi)}); write lo..hi with lo <= hi")
    step_text = step_text.strip()
    if step_text[:1] in ("x", "*", "×"):
        try:
            factor = float(step_text[1:])
        except ValueError:
            raise FieldPathError(f"{field.text}={spec}: {step_text!r} is not a factor; write :x2 or :x1.5") from None
        if not factor > 1 or not math.isfinite(factor):
            raise FieldPathError(f"{field.text}={spec}: a log step multiplies by more than 1 (:x2), got {step_text!r}")
        if lo <= 0:
            raise FieldPathError(f"{field.text}={spec}: a log range starts above 0; use lo..hi:+step from 0")
        count = math.floor(math.log(hi / lo, factor) + 1e-9) + 1
        scale, values = "log", [lo * factor**i for i in range(min(count, MAX_VALUES + 1))]
    elif step_text.startswith("+"):
        step = field.parse(step_text[1:])
        if not step > 0:
            raise FieldPathError(f"{field.text}={spec}: a linear step is more than 0, got {step_text!r}")
        count = math.floor((hi - lo) / step + 1e-9) + 1
        scale, values = "linear", [lo + step * i for i in range(min(count, MAX_VALUES + 1))]
    else:
        raise FieldPathError(f"{field.text}={spec}: the step {step_text!r} is neither a factor (:x2) nor an "
                             "increment (:+64MiB)")
    if len(values) > MAX_VALUES:
        raise FieldPathError(f"{field.text}={spec}: the range has more than {MAX_VALUES} values; take a larger step")
    if math.isclose(values[-1], hi, rel_tol=1e-9):
        values[-1] = hi  # land on hi exactly (64MiB..1GiB:x2 ends at 1 GiB, not 1 GiB - rounding)
    if field.integral:
        values = [int(round(v)) for v in values]
    return tuple(dict.fromkeys(values)), scale


def parse_axis(text: str, base: Target) -> Axis:
    """`PATH=SPEC` as an axis of targets shaped like `base`; FieldPathError naming the field and the fix."""
    path, eq, spec = text.partition("=")
    if not eq or not path.strip() or not spec.strip():
        raise FieldPathError(f"--vary {text!r}: write PATH=VALUES, e.g. --vary memory.sram.capacity=64MiB..1GiB:x2 "
                             "or --vary hbm.bandwidth=1TB/s,2TB/s")
    field = resolve(path.strip(), base)
    spec = spec.strip()
    if ".." in spec:
        values, scale = _range(field, spec)
    else:
        items = [s for s in spec.split(",")]
        if any(not s.strip() for s in items):
            raise FieldPathError(f"{field.text}={spec}: the list has an empty value; write a,b,c")
        values, scale = tuple(dict.fromkeys(field.parse(s) for s in items)), "list"
    return Axis(field, values, spec, scale)


@dataclass(frozen=True)
class Variant:
    """One point of the space: its position and the value of every axis."""

    index: int
    values: tuple[tuple[FieldPath, Any], ...]

    def assignment(self) -> dict[str, Any]:
        """Column name -> value (SI), for table rows."""
        return {field.text: value for field, value in self.values}

    def target(self, base: Target) -> Target:
        """The variant as a validated target (VariantError when the schema refuses it)."""
        return with_values(base, dict(self.values))


@dataclass(frozen=True)
class Space:
    """Axes over one base target; the variants are their cartesian product."""

    base: Target
    axes: tuple[Axis, ...]

    def __post_init__(self) -> None:
        seen: dict[tuple, str] = {}
        for axis in self.axes:
            if axis.field.location in seen:
                raise FieldPathError(f"--vary {axis.name}: the same field as --vary {seen[axis.field.location]} "
                                     f"({axis.field.canonical}); give it once")
            seen[axis.field.location] = axis.name

    @classmethod
    def parse(cls, base: Target, specs: Sequence[str] | Mapping[str, Any]) -> "Space":
        """From `["sram.capacity=64MiB..1GiB:x2", ...]` or `{"sram.capacity": "64MiB..1GiB:x2",
        "hbm.bandwidth": ["1TB/s", "2TB/s"]}` (a list of values, written or in SI numbers)."""
        if isinstance(specs, Mapping):
            texts = [f"{path}={','.join(map(str, spec)) if isinstance(spec, (list, tuple)) else spec}"
                     for path, spec in specs.items()]
        else:
            texts = list(specs)
        if not texts:
            raise FieldPathError("the space is empty: give at least one --vary PATH=VALUES")
        return cls(base, tuple(parse_axis(t, base) for t in texts))

    def __len__(self) -> int:
        return math.prod(len(a.values) for a in self.axes)

    def __iter__(self) -> Iterator[Variant]:
        for index, combo in enumerate(itertools.product(*(a.values for a in self.axes))):
            yield Variant(index, tuple(zip((a.field for a in self.axes), combo)))

    def variant(self, values: Mapping[str, Any]) -> Variant:
        """The variant with these values (by column name): for points a search picks."""
        index = 0
        for axis in self.axes:  # its position in the product: the last axis varies fastest
            index = index * len(axis.values) + axis.values.index(values[axis.name])
        return Variant(index, tuple((a.field, values[a.name]) for a in self.axes))

    def describe(self) -> list[dict[str, Any]]:
        """The axes as data (for the results' JSON)."""
        return [{"path": a.name, "field": a.field.canonical, "kind": a.field.kind, "spec": a.spec,
                 "scale": a.scale, "values": list(a.values)} for a in self.axes]


def target_key(target: Target) -> str:
    """A short, stable hash of a target's every figure (what a stored row is keyed by)."""
    text = json.dumps(target.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]



