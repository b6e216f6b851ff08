"""Which target fields a computation reads: an access-recording view of a target.

Reusing a pass's result across variants is sound when the pass read none of the fields in
which the variants differ. Rather than a hand-kept list per pass (which goes stale the day a
pass starts reading one more field), the pass runs on a *recording view* of the target: the
same target, of the same classes (`isinstance` holds, methods and properties work), whose
every field read is written down with the value seen. A pass is a deterministic function of
its graph, options and the fields it read, so a second variant that agrees on all those
values would make the pass read the same fields and return the same result (the argument
build systems such as Shake and Salsa rest on).

What cannot be traced field by field is recorded as a read of the whole subtree: comparing
or hashing a model, dumping it, iterating a dict. That only ever costs reuse, never
correctness.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, PrivateAttr

from codesign.explore.fields import MISSING, value_at
from codesign.targets.schema import Target

__all__ = ["Reads", "recording"]

Location = tuple[str | int, ...]


class _Present:
    """A read that only saw that a model was there (its fields are recorded as they are read)."""

    def __repr__(self) -> str:
        return "PRESENT"


PRESENT = _Present()


class Reads:
    """The fields one computation read, each with the value it saw (the first time)."""

    def __init__(self) -> None:
        self._seen: dict[Location, Any] = {}

    def record(self, location: Location, value: Any) -> None:
        self._seen.setdefault(location, value)

    def __len__(self) -> int:
        return len(self._seen)

    def locations(self) -> tuple[Location, ...]:
        return tuple(self._seen)

    def items(self) -> tuple[tuple[Location, Any], ...]:
        return tuple(self._seen.items())

    def hold_for(self, target: Target) -> bool:
        """Whether `target` has every recorded value: then the computation would read the same."""
        return all(_same(value_at(target, loc), seen) for loc, seen in self._seen.items())

    def paths(self) -> list[str]:
        """The locations as text (`memory[0].capacity`), sorted: what a pass depends on, for people."""
        out = []
        for loc in self._seen:
            text = ""
            for part in loc:
                text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
            out.append(text or "(the whole target)")
        return sorted(out)


def _same(actual: Any, seen: Any) -> bool:
    if seen is PRESENT:
        return actual is not None and actual is not MISSING
    if seen is MISSING or actual is MISSING:
        return seen is actual
    return type(actual) is type(seen) and actual == seen


def recording(target: Target, reads: Reads) -> Target:
    """A view of `target` that records into `reads` every field anything reads through it."""
    return _wrap(target, (), reads)


def _wrap(value: Any, at: Location, reads: Reads) -> Any:
    """`value` (a field's value at `at`) as the recording view hands it out."""
    if isinstance(value, BaseModel):
        fields = {}
        for name in type(value).model_fields:
            fields[name] = _wrap(getattr(value, name), at + (name,), reads)
        view = _recording_class(type(value)).model_construct(_fields_set=value.model_fields_set, **fields)
        view._cs_reads, view._cs_at, view._cs_real = reads, at, value
        return view
    if isinstance(value, tuple) and any(isinstance(v, BaseModel) for v in value):
        return tuple(_wrap(v, at + (i,), reads) for i, v in enumerate(value))
    if isinstance(value, dict):
        return _RecordingDict(value, at, reads)
    return value


def _is_view(value: Any) -> bool:
    return isinstance(value, (BaseModel, _RecordingDict)) or (
        isinstance(value, tuple) and any(isinstance(v, BaseModel) for v in value))


@cache
def _recording_class(cls: type[BaseModel]) -> type[BaseModel]:
    """`cls` with every field read recorded (one subclass per schema class, made once)."""
    fields = frozenset(cls.model_fields)

    def _whole(self: Any) -> BaseModel:
        """The real model behind the view, recorded as read in full."""
        private = object.__getattribute__(self, "__pydantic_private__")
        private["_cs_reads"].record(private["_cs_at"], private["_cs_real"])
        return private["_cs_real"]

    def __eq__(self: Any, other: object) -> bool:
        if self is other:
            return True
        mine = _whole(self)
        theirs = _whole(other) if isinstance(other, BaseModel) and type(other).__name__.startswith("Recording") \
            else other
        return mine == theirs

    def __hash__(self: Any) -> int:
        return hash(_whole(self))

    def model_dump(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _whole(self).model_dump(*args, **kwargs)

    def model_dump_json(self: Any, *args: Any, **kwargs: Any) -> str:
        return _whole(self).model_dump_json(*args, **kwargs)

    def model_copy(self: Any, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy that still records; the fields `update` replaced are the copy's own, not the
        target's, so reading them records nothing (fuse prices at the peaks this way)."""
        private = object.__getattribute__(self, "__pydantic_private__")
        real = private["_cs_real"].model_copy(update=update, deep=deep)
        view = _wrap(real, private["_cs_at"], private["_cs_reads"])
        view._cs_detached = private["_cs_detached"] | frozenset(update or ())
        return view

    def __repr__(self: Any) -> str:
        return repr(_whole(self))

    def __iter__(self: Any) -> Any:
        return iter(_whole(self))

    namespace = {
        "__module__": __name__, "__qualname__": f"Recording{cls.__name__}",
        "__annotations__": {"_cs_reads": Any, "_cs_at": Any, "_cs_real": Any, "_cs_detached": Any},
        "_cs_reads": PrivateAttr(default=None), "_cs_at": PrivateAttr(default=()),
        "_cs_real": PrivateAttr(default=None), "_cs_detached": PrivateAttr(default=frozenset()),
        "__eq__": __eq__, "__hash__": __hash__,
        "model_dump": model_dump, "model_dump_json": model_dump_json, "model_copy": model_copy,
        "__repr__": __repr__, "__str__": __repr__, "__iter__": __iter__,
    }
    view_class = type(f"Recording{cls.__name__}", (cls,), namespace)
    # A property per field, set after pydantic built the class: a class-level data descriptor
    # wins over the instance's __dict__ (where pydantic keeps field values), so field reads
    # go through it while every other attribute stays a plain lookup.
    for name in fields:
        setattr(view_class, name, property(_field_reader(name)))
    return view_class


def _field_reader(name: str) -> Any:
    def read(self: Any) -> Any:
        value = self.__dict__[name]
        private = self.__pydantic_private__
        if name not in private["_cs_detached"]:
            if not _is_view(value):
                private["_cs_reads"].record(private["_cs_at"] + (name,), value)
            elif isinstance(value, BaseModel):
                private["_cs_reads"].record(private["_cs_at"] + (name,), PRESENT)
        return value
    read.__name__ = name
    return read


class _RecordingDict(dict):
    """A dict field (`compute.peak`) whose key lookups are recorded per key."""

    def __init__(self, data: dict, at: Location, reads: Reads) -> None:
        super().__init__({k: _wrap(v, at + (k,), reads) for k, v in data.items()})
        self._at, self._reads, self._real = at, reads, dict(data)

    def _key(self, key: Any) -> None:
        self._reads.record(self._at + (key,), self._real.get(key, MISSING))

    def _all(self) -> None:
        self._reads.record(self._at, dict(self._real))

    def __getitem__(self, key: Any) -> Any:
        self._key(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._key(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._key(key)
        return super().__contains__(key)

    def _whole(name: str) -> Any:  # noqa: N805 - builds the methods that read the whole dict
        def method(self: "_RecordingDict", *args: Any, **kwargs: Any) -> Any:
            self._all()
            return getattr(dict, name)(self, *args, **kwargs)
        method.__name__ = name
        return method

    for _name in ("__iter__", "__len__", "keys", "items", "values", "__eq__", "__ne__", "__repr__", "copy",
                  "__or__", "__ror__", "__reversed__"):
        locals()[_name] = _whole(_name)
    del _name, _whole
