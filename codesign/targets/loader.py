"""Load targets from YAML, by bundled name or by path, with errors a person can act on.

Every failure is a :class:`TargetError` whose message names the file, the field path
(``memory[1].bandwidth``), the line where YAML put it, the bad value and what was expected,
for every problem in the file at once, so one edit-and-retry fixes them all.

A target file is untrusted input (people write them, copy them, generate them), so reading
one takes time bounded by its size, and every way a file can be wrong is a
:class:`TargetError`, never another exception:

* A file over :data:`MAX_FILE_BYTES` (64 KiB; the bundled files are about 2 KB) is refused
  before it is parsed.
* YAML anchors and aliases (``&name`` / ``*name``, and so ``<<:`` merge keys) are refused,
  every one, not only those that would expand a lot: a target needs none (each figure is
  written once, next to its source), and refusing them all is what makes an alias bomb
  ("billion laughs": nested aliases that expand to millions of nodes from a few hundred
  bytes) cost one linear scan. The error names the line and column of the first one.
* Collections nested deeper than :data:`MAX_NESTING` (a target needs four levels) are
  refused, so nothing downstream recurses without bound.
* A scalar YAML cannot turn into a value (a date such as ``2001-13-45``, an integer of
  thousands of digits) is reported with its line, like a syntax error.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .schema import Target

__all__ = [
    "TargetError",
    "Problem",
    "load_target",
    "list_targets",
    "bundled_target_path",
    "target_json_schema",
    "BUNDLED_DIR",
    "MAX_FILE_BYTES",
    "MAX_NESTING",
]

BUNDLED_DIR = Path(__file__).parent / "data"
"""Where the bundled target files live (shipped as package data)."""

_SUFFIXES = (".yaml", ".yml")
CALIBRATION_SUFFIX = ".calibration"  # `h200.calibration.yaml`: a calibration, not a target

MAX_FILE_BYTES = 64 * 1024
"""Largest target file read (the bundled ones are about 2 KB): bounds the time of a load."""

MAX_NESTING = 16
"""Deepest nesting of YAML collections accepted (a target file needs four levels)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a target file."""

    path: str  # field path such as "memory[1].bandwidth"; "" for the whole file
    message: str  # what was expected, including the bad value
    line: int | None = None  # 1-based line in the file, when known

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        field = f"{self.path}: " if self.path else ""
        return f"{where}{field}{self.message}"


class TargetError(Exception):
    """A target could not be found, read or validated; ``str()`` says all of why."""

    def __init__(
        self, message: str, *, source: str | None = None, problems: Sequence[Problem] = ()
    ) -> None:
        super().__init__(message)
        self.source = source
        self.problems: tuple[Problem, ...] = tuple(problems)


# ---------------------------------------------------------------------------- lookup


def list_targets() -> list[str]:
    """Names of the bundled targets, sorted (calibration files beside them are not targets)."""
    return sorted(p.stem for p in BUNDLED_DIR.iterdir()
                  if p.suffix in _SUFFIXES and not p.stem.endswith(CALIBRATION_SUFFIX))


def bundled_target_path(name: str) -> Path:
    """The file of bundled target ``name``; unknown names get a suggestion."""
    for suffix in _SUFFIXES if not name.endswith(CALIBRATION_SUFFIX) else ():
        path = BUNDLED_DIR / f"{name}{suffix}"
        if path.is_file():
            return path
    known = list_targets()
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise TargetError(
        f"unknown target {name!r}{hint} Bundled targets: {', '.join(known)} "
        "(or give the path of a .yaml file)",
        source=name,
    )


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.endswith(_SUFFIXES)


def load_target(name_or_path: str | Path) -> Target:
    """A validated :class:`Target` from a bundled name (``"sn40l"``) or a YAML file path.

    A string without a slash or a .yaml/.yml suffix is a bundled name; anything else is a
    path. Raises :class:`TargetError` for every way this can fail.
    """
    if isinstance(name_or_path, Path) or _looks_like_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "not found"
            raise TargetError(f"target file {what}: {path}", source=str(path))
    else:
        path = bundled_target_path(name_or_path)
    stat = path.stat()
    return _load_file(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _load_file(path: str, mtime_ns: int, size: int) -> Target:
    """Parse and validate one file; cached per (path, mtime, size): targets are immutable."""
    if size > MAX_FILE_BYTES:
        raise _too_big(size, path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat()
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TargetError(
            f"{path}: cannot read target file: line {line}: not UTF-8 text ({exc.reason} "
            f"at byte {exc.start}, {data[exc.start:exc.start + 1]!r})",
            source=path,
            problems=[Problem("", f"not UTF-8 text ({exc.reason})", line)],
        ) from None
    except OSError as exc:
        raise TargetError(f"{path}: cannot read target file: {exc}", source=path) from None
    return parse_target(text, source=path)


def _too_big(size: int, source: str) -> TargetError:
    return TargetError(
        f"{source}: the file is {size / 2**20:.1f} MiB ({size} bytes); a target file may be "
        f"at most {MAX_FILE_BYTES // 1024} KiB",
        source=source,
        problems=[Problem("", f"file too large ({size} bytes)", None)],
    )


def parse_target(text: str, *, source: str = "<string>") -> Target:
    """A validated :class:`Target` from YAML text; ``source`` names it in errors."""
    if len(text) > MAX_FILE_BYTES:
        raise _too_big(len(text.encode("utf-8", "surrogatepass")), source)
    try:
        tree, data = _read_yaml(text)
    except _Refused as exc:
        raise _yaml_error(exc, source, refused=True) from None
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, source) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, source) from None
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML marks nearly all errors
        raise TargetError(f"{source}: invalid YAML: {exc}", source=source) from None

    if not isinstance(data, dict):
        found = "empty" if data is None else f"a {_yaml_type(data)}"
        raise TargetError(
            f"{source}: the top level is {found}; expected a mapping of target fields "
            f"({', '.join(Target.model_fields)})",
            source=source,
            problems=[Problem("", f"expected a mapping, got {found}", 1)],
        )

    problems = _duplicate_keys(tree)
    if not problems and isinstance(data.get("calibration"), str):
        data = {**data, "calibration": _calibration_data(data["calibration"], source)}
    if not problems:
        try:
            return Target.model_validate(data)
        except ValidationError as exc:
            problems = [_problem(err, tree) for err in exc.errors()]
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    lines = "\n".join(f"  {p}" for p in problems)
    raise TargetError(
        f"{source}: invalid target ({count}):\n{lines}", source=source, problems=problems
    )


def _calibration_data(reference: str, source: str) -> dict:
    """The mapping of a calibration file a target refers to, by a path relative to the
    target file — or, for a bare file name not found there, the bundled calibration of that
    name (a bundled target copied elsewhere to edit keeps its measured calibration);
    errors name both files."""
    base = Path(source).parent if source and not source.startswith("<") else Path.cwd()
    path = (base / reference).resolve()
    where = f"{source}: calibration: {reference}"
    bundled = BUNDLED_DIR / reference
    if not path.is_file() and Path(reference).name == reference and bundled.is_file():
        path = bundled
    if not path.is_file():
        raise TargetError(f"{where}: file not found ({path}); give a path relative to the target "
                          f"file, or run `codesign calibrate` to make one", source=source)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise _too_big(size, str(path))
    try:
        _, data = _read_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TargetError(f"{where}: cannot read the calibration file: {str(exc).splitlines()[0]}",
                          source=source) from None
    if not isinstance(data, dict):
        raise TargetError(f"{where}: the calibration file must hold a mapping", source=source)
    return data


def target_json_schema() -> dict[str, Any]:
    """JSON Schema of a target file, for editors (unit fields accept strings or numbers)."""
    schema = Target.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "codesign target",
    }


# ---------------------------------------------------------------------------- reading

# libyaml when it is there (about ten times faster); PyYAML's own parser otherwise.
_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BYTE_OFFSETS = _BaseLoader is not yaml.SafeLoader  # libyaml reports offsets in bytes


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that a target file may not use (an anchor, an alias, deep nesting)."""


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader, with every failure of a constructor turned into a marked error."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a constructor trips over
            # is the file's fault: a date 2001-13-45 (ValueError), an integer with more
            # digits than Python converts (ValueError), "!!timestamp x" (AttributeError)
            value = node.value if isinstance(node, yaml.ScalarNode) else node.tag
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_short(value)}: {exc}", node.start_mark
            ) from None


def _check_events(text: str) -> None:
    """One linear pass over the YAML events: refuse anchors, aliases and deep nesting
    before anything is composed, so no later step can expand or recurse without bound."""
    loader = _Loader(text)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.AliasEvent):
                raise _Refused(
                    None, None,
                    f"YAML anchors and aliases are not allowed in a target file (found alias "
                    f"'*{event.anchor}'); write the value out",
                    event.start_mark,
                )
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                raise _Refused(
                    None, None,
                    f"YAML anchors and aliases are not allowed in a target file (found anchor "
                    f"'&{anchor}'); write the value out",
                    event.start_mark,
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_NESTING:
                    raise _Refused(
                        None, None,
                        f"collections nested more than {MAX_NESTING} deep; a target file "
                        "needs four levels",
                        event.start_mark,
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        loader.dispose()


def _read_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data of a single-document YAML text."""
    _check_events(text)
    loader = _Loader(text)
    try:
        tree = loader.get_single_node()
        data = loader.construct_document(tree) if tree is not None else None
    finally:
        loader.dispose()
    return tree, data


# ---------------------------------------------------------------------------- messages


def _yaml_error(exc: yaml.MarkedYAMLError, source: str, *, refused: bool = False) -> TargetError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "syntax error"
    if exc.context:
        problem = f"{exc.context}, {problem}"
    what = "refused" if refused else "invalid YAML"
    if mark is None:  # pragma: no cover - marked errors carry a mark
        return TargetError(f"{source}: {what}: {problem}", source=source)
    line, column = mark.line + 1, mark.column + 1
    return TargetError(
        f"{source}: {what} at line {line}, column {column}: {problem}",
        source=source,
        problems=[Problem("", f"{what} at column {column}: {problem}", line)],
    )


def _reader_error(exc: yaml.reader.ReaderError, text: str, source: str) -> TargetError:
    """A character YAML does not allow (NUL, most control characters), with its line."""
    position = max(0, int(exc.position))
    if _BYTE_OFFSETS:
        before = text.encode("utf-8", "surrogatepass")[:position]
        line = before.count(b"\n") + 1
    else:
        line = text[:position].count("\n") + 1
    character = exc.character
    code = f"#x{character:04x}" if isinstance(character, int) else f"#x{ord(character):04x}"
    problem = f"unacceptable character {code}: {exc.reason}"
    return TargetError(
        f"{source}: invalid YAML at line {line}: {problem}",
        source=source,
        problems=[Problem("", f"invalid YAML: {problem}", line)],
    )


def _yaml_type(value: object) -> str:
    names = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}
    return names.get(type(value), type(value).__name__)


def _format_path(loc: Sequence[int | str]) -> str:
    """('memory', 1, 'bandwidth') -> 'memory[1].bandwidth'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part != "[key]":
            text += f".{part}" if text else str(part)
    return text


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _problem(error: Any, tree: yaml.Node | None) -> Problem:
    """Turn one pydantic error into a sentence: what was expected, and what was given."""
    loc: tuple[int | str, ...] = tuple(error["loc"])
    kind: str = error["type"]
    value = error.get("input")
    path = _format_path(loc)
    line = _line_of(tree, loc)
    if loc in _SHOWN_AT and not _has_key(tree, loc):
        line = _line_of(tree, _SHOWN_AT[loc])  # a missing field, shown where it is needed

    if kind == "extra_forbidden":
        field = str(loc[-1])
        allowed = _fields_at(loc[:-1])
        close = difflib.get_close_matches(field, allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return Problem(
            path,
            f"unknown field {field!r}{hint} Expected fields: {', '.join(allowed)}",
            line,
        )
    if kind == "missing":
        return Problem(path, "required field is missing", line)

    message: str = _PLAIN.get(kind) or error["msg"]
    message = message.removeprefix("Value error, ")
    message = message.replace("Input should be", "expected")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        message = message.replace("expected ", "expected a number ", 1)
    if "[key]" in loc:
        message = f"unknown key {value!r}; {message}"
    elif not isinstance(value, (dict, list, tuple)) and "got " not in message:
        message = f"{message}, got {_short(value)}"
    return Problem(path, message, line)


# Where the problem of a field that is not in the file is best shown: a missing
# interconnect is needed because of the sockets line.
_SHOWN_AT: dict[tuple[int | str, ...], tuple[int | str, ...]] = {
    ("interconnect",): ("sockets",),
}


def _has_key(tree: yaml.Node | None, loc: Sequence[int | str]) -> bool:
    """Whether the top-level mapping of ``tree`` has the one-part key ``loc``."""
    return isinstance(tree, yaml.MappingNode) and any(
        key.value == loc[0] for key, _ in tree.value
    )


# Plainer words for pydantic's commonest complaints, by error type.
_PLAIN: dict[str, str] = {
    "int_parsing": "expected a whole number",
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a mapping (key: value pairs)",
    "model_type": "expected a mapping (key: value pairs)",
    "model_attributes_type": "expected a mapping (key: value pairs)",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
}


def _fields_at(loc: Sequence[int | str]) -> list[str]:
    """Field names allowed at ``loc`` (for suggestions), found by walking the models."""
    model: type[BaseModel] | None = Target
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The first pydantic model inside ``annotation`` (through Optional, tuple, list...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _line_of(tree: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of the YAML node at ``loc``, or of its nearest existing ancestor."""
    node = tree
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if node is None:
            break
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            if part == "[key]":
                break  # the previous step already landed on the key
            for key, value in node.value:
                if key.value == part:
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _duplicate_keys(tree: yaml.Node | None, path: tuple[int | str, ...] = ()) -> list[Problem]:
    """Keys given twice in one mapping; plain YAML loading would silently keep the last."""
    problems: list[Problem] = []
    if isinstance(tree, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in tree.value:
            name = str(key.value)
            if name in seen:
                problems.append(
                    Problem(
                        _format_path((*path, name)),
                        "field given more than once",
                        key.start_mark.line + 1,
                    )
                )
            seen.add(name)
            problems += _duplicate_keys(value, (*path, name))
    elif isinstance(tree, yaml.SequenceNode):
        for i, item in enumerate(tree.value):
            problems += _duplicate_keys(item, (*path, i))
    return problems
