"""Passes, their registry, and pipeline strings such as `canonicalize,tile{sizes=4,4}`.

A pass is a frozen dataclass (as in xDSL): the class carries its `name` and `summary`, the
dataclass fields are its typed options, and `run(graph, ctx)` returns a new graph. Options
are plain fields so that a pass built in Python and one parsed from a pipeline string are
the same value, and a pipeline prints back to a string that parses to it again.

One decorator, `@register_pass`, fills the registry; nothing else writes to it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, TypeVar

from codesign.ir.graph import Graph

if TYPE_CHECKING:
    from codesign.passes.manager import PassContext


class PipelineError(ValueError):
    """A pipeline string, pass name or pass option a user wrote is wrong."""


class UnknownPassError(PipelineError):
    pass


@dataclass(frozen=True)
class Pass:
    """Base of every pass: subclass as a frozen dataclass whose fields are its options."""

    name: ClassVar[str]
    summary: ClassVar[str]

    def run(self, graph: Graph, ctx: "PassContext") -> Graph:
        """Return the transformed graph; never mutate `graph`."""
        raise NotImplementedError(f"pass {self.name!r} does not implement run()")

    @classmethod
    def options(cls) -> tuple["OptionSpec", ...]:
        """The pass's options, in declaration order."""
        hints = typing.get_type_hints(cls)
        return tuple(OptionSpec.of(f, hints[f.name]) for f in dataclasses.fields(cls))

    @classmethod
    def from_options(cls, given: Mapping[str, str]) -> "Pass":
        """Build the pass from option text, e.g. `{"sizes": "4,4"}`; errors name the option."""
        specs = {spec.name: spec for spec in cls.options()}
        values: dict[str, object] = {}
        for raw_key, text in given.items():
            key = raw_key.replace("-", "_")
            spec = specs.get(key)
            if spec is None:
                known = ", ".join(s.describe() for s in specs.values()) or "none"
                close = difflib.get_close_matches(key, specs, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PipelineError(f"pass {cls.name!r} has no option {raw_key!r}{hint} "
                                    f"(options: {known})")
            values[key] = spec.parse(text, cls.name)
        missing = [s.name for s in specs.values() if s.required and s.name not in values]
        if missing:
            raise PipelineError(f"pass {cls.name!r} needs option(s) {', '.join(missing)}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:  # a pass's own __post_init__ check
            raise PipelineError(f"pass {cls.name!r}: {exc}") from None

    def pipeline_text(self) -> str:
        """This pass as a pipeline entry, listing only options that differ from the default."""
        changed = [f"{s.name}={s.format(getattr(self, s.name))}" for s in self.options()
                   if s.required or getattr(self, s.name) != s.default]
        return f"{self.name}{{{' '.join(changed)}}}" if changed else self.name


# -- options -------------------------------------------------------------------------------
_SCALARS: dict[type, str] = {int: "int", float: "float", bool: "bool", str: "str"}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


@dataclass(frozen=True)
class OptionSpec:
    """One option: name, its Python type (a scalar, `tuple[scalar, ...]`, or either `| None`)."""

    name: str
    type: Any
    default: object
    required: bool
    doc: str = ""

    @staticmethod
    def of(f: dataclasses.Field, hint: Any) -> "OptionSpec":
        if f.default is not dataclasses.MISSING:
            default, required = f.default, False
        elif f.default_factory is not dataclasses.MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        _check_supported(hint, f.name)
        return OptionSpec(f.name, hint, default, required, f.metadata.get("doc", ""))

    @property
    def type_name(self) -> str:
        return _type_name(self.type)

    def describe(self) -> str:
        return f"{self.name}: {self.type_name}"

    def parse(self, text: str, pass_name: str) -> object:
        try:
            return _parse_value(text.strip(), self.type)
        except ValueError as exc:
            raise PipelineError(f"pass {pass_name!r} option {self.name}={text!r}: {exc} "
                                f"(expected {self.type_name})") from None

    def format(self, value: object) -> str:
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(self.format(v) for v in value)
        return str(value)


def _optional_inner(hint: Any) -> Any | None:
    """`X` for `X | None` (or `Optional[X]`), else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def _check_supported(hint: Any, name: str) -> None:
    inner = _optional_inner(hint)
    if inner is not None:
        hint = inner
    if hint in _SCALARS:
        return
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
            return
    raise TypeError(f"option {name!r} has type {hint!r}; pass options must be int, float, bool, "
                    f"str, tuple[scalar, ...] or one of these | None")


def _type_name(hint: Any) -> str:
    inner = _optional_inner(hint)
    if inner is not None:
        return f"{_type_name(inner)} | None"
    if hint in _SCALARS:
        return _SCALARS[hint]
    return f"tuple[{_SCALARS[typing.get_args(hint)[0]]}, ...]"


def _parse_value(text: str, hint: Any) -> object:
    inner = _optional_inner(hint)
    if inner is not None:
        return None if text.lower() == "none" else _parse_value(text, inner)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        body = text[1:-1] if text[:1] in "[(" and text[-1:] in "])" else text
        return tuple(_parse_value(p.strip(), item) for p in body.split(",") if p.strip())
    if hint is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("not a boolean")
    if hint is int:
        try:
            return int(text, 0)
        except ValueError:
            raise ValueError("not an integer") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("not a number") from None
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" else text


# -- the registry --------------------------------------------------------------------------
_REGISTRY: dict[str, type[Pass]] = {}
PASSES: Mapping[str, type[Pass]] = MappingProxyType(_REGISTRY)
"""Every registered pass class by name (read-only; `@register_pass` adds to it)."""

P = TypeVar("P", bound=type[Pass])


def register_pass(cls: P) -> P:
    """Class decorator: check that `cls` is a well-formed pass and add it to `PASSES`."""
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise TypeError(f"@register_pass expects a Pass subclass, got {cls!r}")
    if "__dataclass_params__" not in cls.__dict__ or not cls.__dataclass_params__.frozen:
        raise TypeError(f"pass {cls.__name__} must be a @dataclass(frozen=True)")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise TypeError(f"pass {cls.__name__} must set a class attribute `name`")
    if not isinstance(cls.__dict__.get("summary"), str) or not cls.summary:
        raise TypeError(f"pass {name!r} must set a one-line class attribute `summary`")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"pass {name!r} is registered twice ({_REGISTRY[name].__qualname__} "
                         f"and {cls.__qualname__})")
    cls.options()  # fail at import time on an unsupported option type
    _REGISTRY[name] = cls
    return cls


def get_pass(name: str, registry: Mapping[str, type[Pass]] = PASSES) -> type[Pass]:
    """The pass class called `name`; the error suggests close names and lists all."""
    try:
        return registry[name]
    except KeyError:
        close = difflib.get_close_matches(name, registry, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownPassError(f"unknown pass {name!r}{hint} "
                               f"(registered: {', '.join(sorted(registry)) or 'none'})") from None


# -- pipeline strings ----------------------------------------------------------------------
def _split_top_level(text: str, sep: str) -> list[str]:
    """Split on `sep` outside of `{...}` (option lists contain commas: `sizes=4,4`)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise PipelineError(f"unbalanced '}}' at column {i + 1} of pipeline {text!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise PipelineError(f"missing '}}' in pipeline {text!r}")
    parts.append(text[start:])
    return parts


def _parse_options(body: str, pass_name: str) -> dict[str, str]:
    """`sizes=4,4 level=sram` → {"sizes": "4,4", "level": "sram"} (space-separated pairs)."""
    options: dict[str, str] = {}
    for item in body.split():
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise PipelineError(f"pass {pass_name!r}: option {item!r} should be written key=value")
        if key in options:
            raise PipelineError(f"pass {pass_name!r}: option {key!r} given twice")
        options[key] = value
    return options


def parse_pipeline(text: str, registry: Mapping[str, type[Pass]] = PASSES) -> tuple[Pass, ...]:
    """Pass instances for `"canonicalize,dce"` or `"tile{sizes=4,4 level=sram},dce"`."""
    passes: list[Pass] = []
    if not text.strip():
        return ()
    for entry in _split_top_level(text, ","):
        entry = entry.strip()
        if not entry:
            raise PipelineError(f"empty pass name in pipeline {text!r}")
        name, brace, rest = entry.partition("{")
        name = name.strip()
        if brace and not rest.endswith("}"):
            raise PipelineError(f"text after the options of {name!r} in pipeline {text!r}")
        cls = get_pass(name, registry)
        passes.append(cls.from_options(_parse_options(rest[:-1], name) if brace else {}))
    return tuple(passes)


def format_pipeline(passes: tuple[Pass, ...] | list[Pass]) -> str:
    """The inverse of `parse_pipeline`."""
    return ",".join(p.pipeline_text() for p in passes)
