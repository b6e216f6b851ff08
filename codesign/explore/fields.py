"""Target fields by path: `memory.sram.capacity`, `memory[0].capacity`, `hbm.bandwidth`, `compute.peak.bf16`.

A co-design question names a figure of the chip ("what if the SRAM were 1 GiB?"). This
module turns the name a person writes into a location in the pydantic target schema
(`codesign.targets.schema`), checks that the location is a figure one can vary (a quantity,
a count, a flag or a choice, not a name or a description), and reads values with the units
target files use (`64 MiB`, `1.8 TB/s`, `638 TFLOP/s`, `2 us`, `0.3 pJ`). The schema is the
only list of fields: a field added to it is addressable here with no edit.

Paths: dots between fields; a tier by its name (`memory.sram`, or just `sram` at the top)
or its position (`memory[0]`); a dtype key of `compute.peak` / `compute.energy_per_flop`.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from codesign.targets import schema as S
from codesign.targets import units as U
from codesign.targets.schema import Target

__all__ = ["FieldPath", "FieldPathError", "Kind", "MISSING", "VariantError", "resolve", "value_at", "with_values"]

Kind = Literal["bytes", "bandwidth", "flops", "seconds", "energy", "count", "number", "bool", "choice"]

# how each kind of figure is read and written (the target files' own parsers and formats)
_PARSE: dict[str, Any] = {"bytes": U.parse_bytes, "bandwidth": U.parse_bandwidth, "flops": U.parse_flops,
                          "seconds": U.parse_time, "energy": U.parse_energy}
_FORMAT: dict[str, Any] = {"bytes": U.format_bytes, "bandwidth": U.format_bandwidth, "flops": U.format_flops,
                           "seconds": U.format_time, "energy": U.format_energy}
_EXAMPLE: dict[str, str] = {"bytes": "64MiB..1GiB:x2", "bandwidth": "1TB/s,2TB/s,4TB/s",
                            "flops": "300TFLOP/s..900TFLOP/s:+150TFLOP/s", "seconds": "1us,2us,5us",
                            "energy": "10pJ,30pJ", "count": "520..2080:x2", "number": "200..800:+100",
                            "bool": "true,false", "choice": "a,b"}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class FieldPathError(ValueError):
    """A path that names no variable target field, or a value that field cannot take."""


@dataclass(frozen=True)
class FieldPath:
    """One variable figure of a target: where it is, and how its values read and print."""

    text: str  # as the user wrote it: the column name in tables
    location: tuple[str | int, ...]  # ("memory", 0, "capacity"), ("compute", "peak", "bf16")
    kind: Kind
    choices: tuple[str, ...] = ()  # for kind "choice"

    @property
    def canonical(self) -> str:
        """The location as the loader's error messages spell it: `memory[0].capacity`."""
        out = ""
        for part in self.location:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    @property
    def integral(self) -> bool:
        return self.kind in ("bytes", "count")

    @property
    def numeric(self) -> bool:
        return self.kind not in ("bool", "choice")

    def parse(self, text: str) -> Any:
        """One value as written (`64MiB`, `true`), in SI base units; FieldPathError if it is not one."""
        text = text.strip()
        try:
            if self.kind in _PARSE:
                return _PARSE[self.kind](text)
            if self.kind == "count":
                value = float(text)
                if not value.is_integer():
                    raise ValueError(f"expected a whole number, got {text!r}")
                return int(value)
            if self.kind == "number":
                return float(text)
            if self.kind == "bool":
                if text.lower() in _TRUE + _FALSE:
                    return text.lower() in _TRUE
                raise ValueError(f"expected true or false, got {text!r}")
            if text in self.choices:
                return text
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {text!r}")
        except ValueError as exc:
            raise FieldPathError(f"{self.text}: {exc} (e.g. --vary {self.text}={_EXAMPLE[self.kind]})") from None

    def format(self, value: Any) -> str:
        """A value as a target file would write it: `64 MiB`, `1.8 TB/s`."""
        if self.kind in _FORMAT:
            return _FORMAT[self.kind](value)
        if self.kind == "bool":
            return "true" if value else "false"
        return f"{value:g}" if isinstance(value, float) else str(value)

    def get(self, target: Target) -> Any:
        return value_at(target, self.location)


def value_at(obj: Any, location: tuple[str | int, ...]) -> Any:
    """The value at `location` in a target (a model, a tier tuple, a dict); a missing dict key is
    `MISSING`, a field set to None is None."""
    for part in location:
        if obj is None:
            return None
        if isinstance(part, int):
            obj = obj[part]
        elif isinstance(obj, dict):
            obj = obj.get(part, MISSING)
            if obj is MISSING:
                return MISSING
        else:
            obj = getattr(obj, part)
    return obj


class _Missing:
    """A dict key a target does not have (`compute.peak.fp8` on a chip without fp8)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


def _tokens(text: str) -> list[str | int]:
    """`memory[0].capacity` -> ['memory', 0, 'capacity']; FieldPathError for a malformed path."""
    parts: list[str | int] = []
    for piece in text.split("."):
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)?((?:\[\d+\])*)", piece)
        if not piece or m is None or (m.group(1) is None and not parts):
            raise FieldPathError(f"{text!r} is not a field path; write fields with dots, e.g. memory.sram.capacity, "
                                 "memory[0].capacity, hbm.bandwidth or compute.peak.bf16")
        if m.group(1):
            parts.append(m.group(1))
        parts += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    return parts


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """(the type, its Annotated metadata), with `X | None` and `Annotated[X, ...]` taken apart."""
    metadata: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation, metadata
            annotation = args[0]
        elif origin is typing.Annotated:
            metadata += list(annotation.__metadata__)
            annotation = get_args(annotation)[0]
        else:
            return annotation, metadata


def _kind_of(annotation: Any, metadata: list[Any]) -> tuple[Kind, tuple[str, ...]] | None:
    """The kind of a leaf field, from the schema's own annotated types; None when not a figure."""
    quantities = {"bytes": S.Bytes, "bandwidth": S.Bandwidth, "flops": S.Flops, "seconds": S.Seconds,
                  "energy": S.Energy, "count": (S._Sockets, S._Units, S._TileMultiple), "number": (S._Area, S._Price)}
    for kind, known in quantities.items():
        for alias in known if isinstance(known, tuple) else (known,):
            if any(m is alias.__metadata__[0] for m in metadata):
                return kind, ()  # type: ignore[return-value]
    if annotation is bool:
        return "bool", ()
    if get_origin(annotation) is Literal:
        return "choice", tuple(str(a) for a in get_args(annotation))
    return None


def _what(model: type[BaseModel]) -> str:
    return {"Target": "a target", "MemoryTier": "a memory tier", "Compute": "compute",
            "Interconnect": "an interconnect"}.get(model.__name__, model.__name__)


def resolve(text: str, base: Target) -> FieldPath:
    """The variable field `text` names in targets shaped like `base`; FieldPathError saying what
    the path may be instead (the fields there, the tier names, the dtypes)."""
    tokens = _tokens(text)
    tiers = base.tier_names
    if tokens and tokens[0] in tiers:  # `sram.capacity`: a tier by name at the top
        tokens = ["memory", *tokens]
    location: list[str | int] = []
    model: type[BaseModel] = Target
    obj: Any = base
    i = 0
    while i < len(tokens):
        token = tokens[i]
        here = FieldPath("", tuple(location), "number").canonical or "the top level"
        if not isinstance(token, str) or token not in model.model_fields:
            fields = list(model.model_fields)
            close = difflib.get_close_matches(str(token), fields + (list(tiers) if model is Target else []), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            extra = f" or a tier ({', '.join(tiers)})" if model is Target else ""
            raise FieldPathError(f"{text}: {token!r} is not a field of {_what(model)} at {here}{hint} "
                                 f"(fields: {', '.join(fields)}{extra}; `codesign targets schema` lists them)")
        location.append(token)
        annotation, metadata = _unwrap(model.model_fields[token].annotation)
        metadata += list(model.model_fields[token].metadata)
        obj = getattr(obj, token, None) if obj is not None else None
        i += 1
        origin = get_origin(annotation)
        if origin is tuple and token == "memory":  # a tier: by position or by name
            if i == len(tokens):
                raise FieldPathError(f"{text}: name a tier and its field, e.g. {token}.{tiers[0]}.capacity "
                                     f"or {token}[0].capacity (tiers: {', '.join(tiers)})")
            which = tokens[i]
            if isinstance(which, str) and which in tiers:
                which = tiers.index(which)
            if not isinstance(which, int) or not 0 <= which < len(tiers):
                raise FieldPathError(f"{text}: {tokens[i]!r} is not a tier of {base.name} "
                                     f"(tiers: {', '.join(tiers)}, or memory[0]..memory[{len(tiers) - 1}])")
            location.append(which)
            obj, model, i = obj[which], S.MemoryTier, i + 1
            continue
        if origin is dict:
            keys, value = get_args(annotation)
            choices = get_args(keys)
            if i == len(tokens) or tokens[i] not in choices:
                got = f"{tokens[i]!r} is not one" if i < len(tokens) else "name one"
                raise FieldPathError(f"{text}: {got} of the dtypes of {token} ({', '.join(choices)}), "
                                     f"e.g. {'.'.join(str(p) for p in location)}.{choices[0]}")
            location.append(tokens[i])
            value_type, value_meta = _unwrap(value)
            kind = _kind_of(value_type, value_meta)
            if i + 1 != len(tokens) or kind is None:
                raise FieldPathError(f"{text}: {'.'.join(map(str, location))} is a figure with no fields inside")
            return FieldPath(text, tuple(location), kind[0], kind[1])
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        kind = _kind_of(annotation, metadata)
        if kind is None:
            raise FieldPathError(f"{text}: {'.'.join(map(str, location))} is not a figure one can vary "
                                 "(a name, a description or a list); vary a quantity, a count, a flag or a choice")
        if i != len(tokens):
            raise FieldPathError(f"{text}: {'.'.join(map(str, location))} is a figure with no fields inside")
        return FieldPath(text, tuple(location), kind[0], kind[1])
    raise FieldPathError(f"{text}: {'.'.join(map(str, location))} is a group of fields, not one figure "
                         f"(its fields: {', '.join(model.model_fields)})")


def _follow_per_unit(data: dict[str, Any], varied: set[tuple[str | int, ...]]) -> None:
    """A `spatial` section's per-unit figures are the socket's over the unit count (the schema
    checks they agree within 2%): where a variant changes a socket figure and leaves its
    per-unit share alone, the share follows, so "SRAM 1 GiB" means 1 GiB over the same PMUs."""
    spatial = data.get("spatial")
    if not spatial:
        return
    compute, memory = spatial.get("compute"), spatial.get("memory")
    if compute and ("compute", "units") in varied and ("spatial", "compute", "count") not in varied:
        compute["count"] = data["compute"]["units"]
    if compute:
        for dtype, rate in data["compute"]["peak"].items():
            touched = ("compute", "peak", dtype) in varied or ("compute", "units") in varied
            if touched and ("spatial", "compute", "peak", dtype) not in varied and dtype in compute.get("peak", {}):
                compute["peak"][dtype] = rate / compute["count"]
    if memory:
        fast = data["memory"][0]
        for name in ("capacity", "bandwidth"):
            if ("memory", 0, name) in varied and ("spatial", "memory", name) not in varied:
                share = fast[name] / memory["count"]
                memory[name] = int(share) if name == "capacity" else share


class VariantError(ValueError):
    """A combination of values that is not a valid target (the schema's checks, in its words)."""


def with_values(base: Target, values: dict[FieldPath, Any]) -> Target:
    """`base` with each field set to its value, validated by the schema as a target file is;
    VariantError naming every field the schema refuses."""
    from pydantic import ValidationError

    data = base.model_dump(mode="json")
    varied = {field.location for field in values}
    for field, value in values.items():
        node: Any = data
        for part in field.location[:-1]:
            if node.get(part) is None if isinstance(node, dict) else False:
                node[part] = {}  # an optional group (interconnect, energy_per_flop) set for the first time
            node = node[part]
        node[field.location[-1]] = value
    _follow_per_unit(data, varied)
    try:
        return Target.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = FieldPath("", tuple(p for p in err["loc"] if p != "[key]"), "number").canonical
            problems.append(f"{where or 'target'}: {str(err['msg']).removeprefix('Value error, ')}")
        raise VariantError("; ".join(problems)) from None
