"""A fusion group's plan, typed: what the group is, and the tiles chosen for it.

The plan is data in the IR (`Group.plan`), written by the fuse and tile passes and read by
the cost model, placement and the code generators. Its text form is one line per group,
keys sorted as for any attribute dictionary:

```
group 3 {anchor = "fc", chip_ratio = 1.02, chip_reads = [1.0, 4.0, 1.0], chip_tile = [128, 256, 64],
         kind = "contraction", ratio_smem = 1.3, scheme = "output-stationary", tile_smem = [1, 128, 64, 64]}
```

| key            | field        | meaning |
|----------------|--------------|---------|
| `kind`         | `kind`       | what the kernel is built around: `pointwise`, `contraction`, `attention`, `layer` (a streamed dataflow layer), ... |
| `anchor`       | `anchor`     | the node whose loop nest the tiles describe |
| `scheme`       | `scheme`     | the schedule the tiles belong to (`output-stationary`, `flash`, ...) |
| `tile_<tier>`  | `tiles`      | one tile extent per loop of the anchor's domain, at `<tier>` (tier name → tuple of ints) |
| `ratio_<tier>` | `ratios`     | achieved traffic over the I/O lower bound at those tiles (the re-read ratio) |
| `chip_tile`    | `chip_tile`  | tiles sized to the whole chip's fast tier (what the home tier sees) |
| `chip_reads`   | `chip_reads` | how many times each anchor operand is read from the home tier at the chip tiles |
| `chip_ratio`   | `chip_ratio` | achieved / lower bound at the chip tiles |
| `implementation` | `implementation` | `library`: the backend hands the group's one op to the vendor library (cuBLAS), which the calibrated cost model predicts faster than the generated kernel (`partition`); absent: generated |
| `map_tiles`    | `map_tiles`  | tiles the kernel streams through its pipeline (`map`, spatial targets) |
| `map_stages`   | `map_stages` | the pipeline's stages, by anchor node name, in order |
| `map_units`    | `map_units`  | compute units per stage |
| `map_memory`   | `map_memory` | memory units per stage |
| `map_sections` | `map_sections` | section of each stage (runs of stages, from 0; one section: the kernel fits) |
| `map_weights`  | `map_weights` | per stage `resident` (weights stay in its memory units) or `streamed` (re-read every tile) |

The key set is closed: a key outside this table (a misspelling such as `anchr`, or a
decision no pass reads) is an error naming the key — a plan that is edited by hand and
resumed must not have parts that are silently ignored. Numbers keep the type they were
given (`ratio_sram = 1` stays an int), so text → plan → text is byte-identical.

Which tier's tile a backend uses is decided by the target's tier order (fastest first,
`Target.tier_names`), never by the tier's name: `GroupPlan.fastest_tile(tiers)`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # the graph module imports this one
    from codesign.ir.graph import Graph

LAYER = "layer"
"""`kind` of a group that streams as one kernel with every intermediate buffered on chip."""

TILE_PREFIX = "tile_"
RATIO_PREFIX = "ratio_"
MAP_KEYS = ("map_tiles", "map_stages", "map_units", "map_memory", "map_sections", "map_weights")
"""The dataflow mapping's keys (`codesign.mapping.plan` reads and writes them)."""
PLAIN_KEYS = ("anchor", "chip_ratio", "chip_reads", "chip_tile", "implementation", "kind", "scheme") + MAP_KEYS
KEY_FORMS = ("kind", "anchor", "scheme", "tile_<tier>", "ratio_<tier>", "chip_tile", "chip_reads", "chip_ratio",
             "implementation") + MAP_KEYS
WEIGHTS = ("resident", "streamed")
"""`map_weights` entries."""
LIBRARY = "library"
"""`implementation` of a group whose one op runs in the vendor library."""
_TIER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # as `MemoryTier.name` in the target schema


class PlanError(ValueError):
    """A group plan key or value that is not part of the plan's schema.

    `key` names the offending key; `in_value` says whether the key is known and its value
    is what is wrong (the parser points at the value then, else at the key).
    """

    def __init__(self, key: str, message: str, in_value: bool = False):
        self.key, self.in_value = key, in_value
        super().__init__(message)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ints(key: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                               for v in value):
        raise PlanError(key, f"group key {key!r} must be a list of positive integers, got {_show(value)}", True)
    return value


def _numbers(key: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, tuple) or not all(_is_number(v) for v in value):
        raise PlanError(key, f"group key {key!r} must be a list of numbers, got {_show(value)}", True)
    return value


def _number(key: str, value: Any) -> float:
    if not _is_number(value):
        raise PlanError(key, f"group key {key!r} must be a number, got {_show(value)}", True)
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise PlanError(key, f"group key {key!r} must be a string, got {_show(value)}", True)
    return value


def _show(value: Any) -> str:
    from codesign.ir.printer import format_attr
    try:
        return format_attr(value)
    except TypeError:
        return repr(value)


def _tier(key: str, tier: Any) -> str:
    if not isinstance(tier, str) or not _TIER_NAME.match(tier):
        raise PlanError(key, f"group key {key!r} names no memory tier (expected {key.split('_')[0]}_<tier> "
                             f"with a tier name such as smem or sram)")
    return tier


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(sorted(mapping.items())))


@dataclass(frozen=True)
class GroupPlan:
    """The decisions recorded for one fusion group (see the module docstring for the keys).

    Every field is optional: a group straight out of `fuse` has a kind (and usually an
    anchor); `tile` adds tiles, ratios and chip reads. `tiles` and `ratios` are read-only
    mappings keyed by tier name.
    """

    kind: str | None = None
    anchor: str | None = None
    scheme: str | None = None
    tiles: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    ratios: Mapping[str, float] = field(default_factory=dict)
    chip_tile: tuple[int, ...] | None = None
    chip_reads: tuple[float, ...] | None = None
    chip_ratio: float | None = None
    implementation: str | None = None
    map_tiles: int | None = None
    map_stages: tuple[str, ...] | None = None
    map_units: tuple[int, ...] | None = None
    map_memory: tuple[int, ...] | None = None
    map_sections: tuple[int, ...] | None = None
    map_weights: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for key in ("kind", "anchor", "scheme", "implementation"):
            if getattr(self, key) is not None:
                _text(key, getattr(self, key))
        tiles = {_tier(TILE_PREFIX + str(t), t): _ints(TILE_PREFIX + str(t), tuple(v) if isinstance(v, list) else v)
                 for t, v in dict(self.tiles).items()}
        ratios = {_tier(RATIO_PREFIX + str(t), t): _number(RATIO_PREFIX + str(t), v)
                  for t, v in dict(self.ratios).items()}
        object.__setattr__(self, "tiles", _frozen(tiles))
        object.__setattr__(self, "ratios", _frozen(ratios))
        if self.chip_tile is not None:
            object.__setattr__(self, "chip_tile", _ints("chip_tile", tuple(self.chip_tile)))
        if self.chip_reads is not None:
            object.__setattr__(self, "chip_reads", _numbers("chip_reads", tuple(self.chip_reads)))
        if self.chip_ratio is not None:
            _number("chip_ratio", self.chip_ratio)
        self._check_mapping()

    def _check_mapping(self) -> None:
        given = [k for k in MAP_KEYS if getattr(self, k) is not None]
        if not given:
            return
        missing = [k for k in MAP_KEYS if getattr(self, k) is None]
        if missing:
            raise PlanError(missing[0], f"a mapped group needs every one of {', '.join(MAP_KEYS)}; "
                                        f"it lacks {', '.join(missing)}")
        if not isinstance(self.map_tiles, int) or isinstance(self.map_tiles, bool) or self.map_tiles < 1:
            raise PlanError("map_tiles", f"group key 'map_tiles' must be a positive integer, got "
                                         f"{_show(self.map_tiles)}", True)
        for key in ("map_stages", "map_units", "map_memory", "map_sections", "map_weights"):
            value = getattr(self, key)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, key, value)
            if not isinstance(value, tuple) or not value:
                raise PlanError(key, f"group key {key!r} must be a non-empty list, got {_show(value)}", True)
        for key in ("map_units", "map_memory"):
            _ints(key, getattr(self, key))
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in self.map_sections):
            raise PlanError("map_sections", "group key 'map_sections' must be a list of section numbers "
                                            f"(0, 1, ...), got {_show(self.map_sections)}", True)
        if not all(isinstance(v, str) for v in self.map_stages):
            raise PlanError("map_stages", f"group key 'map_stages' must be a list of node names, got "
                                          f"{_show(self.map_stages)}", True)
        if not all(v in WEIGHTS for v in self.map_weights):
            raise PlanError("map_weights", f"group key 'map_weights' entries must be one of "
                                           f"{', '.join(map(repr, WEIGHTS))}, got {_show(self.map_weights)}", True)
        lengths = {k: len(getattr(self, k)) for k in MAP_KEYS[1:]}
        if len(set(lengths.values())) != 1:
            raise PlanError("map_units", "group keys map_stages, map_units, map_memory, map_sections and "
                                         "map_weights need one entry per stage, but have "
                                         + ", ".join(f"{k} {n}" for k, n in lengths.items()), True)

    def __hash__(self) -> int:
        return hash((self.kind, self.anchor, self.scheme, tuple(self.tiles.items()), tuple(self.ratios.items()),
                     self.chip_tile, self.chip_reads, self.chip_ratio, self.implementation,
                     *(getattr(self, k) for k in MAP_KEYS)))

    def __reduce__(self):  # read-only mappings do not pickle; plain dicts do
        return (type(self), (self.kind, self.anchor, self.scheme, dict(self.tiles), dict(self.ratios),
                             self.chip_tile, self.chip_reads, self.chip_ratio, self.implementation,
                             *(getattr(self, k) for k in MAP_KEYS)))

    # -- text form ------------------------------------------------------------------------
    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> "GroupPlan":
        """The plan of a text-form attribute dictionary; raises `PlanError` naming the key."""
        plain: dict[str, Any] = {}
        tiles: dict[str, Any] = {}
        ratios: dict[str, Any] = {}
        for key, value in attrs.items():
            if key in PLAIN_KEYS:
                plain[key] = value
                if value is None:
                    raise PlanError(key, f"group key {key!r} must have a value, got none", True)
            elif key.startswith(TILE_PREFIX):
                tiles[_tier(key, key[len(TILE_PREFIX):])] = _ints(key, value)
            elif key.startswith(RATIO_PREFIX):
                ratios[_tier(key, key[len(RATIO_PREFIX):])] = _number(key, value)
            else:
                close = difflib.get_close_matches(key, PLAIN_KEYS, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PlanError(key, f"unknown group key {key!r}{hint} (a group plan has "
                                     f"{', '.join(KEY_FORMS)})")
        return cls(tiles=tiles, ratios=ratios, **plain)

    @cached_property
    def attrs(self) -> Mapping[str, Any]:
        """The plan as the text form's key/value pairs (read-only; the printer sorts them)."""
        def plain(*keys: str) -> list[tuple[str, Any]]:
            return [(k, getattr(self, k)) for k in keys if getattr(self, k) is not None]
        # in the order the passes decide them (plan.json keeps it; the printer sorts)
        out = dict(plain("kind", "anchor"))
        out.update((TILE_PREFIX + t, v) for t, v in self.tiles.items())
        out.update(plain("scheme"))
        out.update((RATIO_PREFIX + t, v) for t, v in self.ratios.items())
        out.update(plain("chip_tile", "chip_reads", "chip_ratio", "implementation", *MAP_KEYS))
        return MappingProxyType(out)

    # -- accessors ------------------------------------------------------------------------
    @property
    def is_mapped(self) -> bool:
        """Whether the `map` pass (or a hand edit) gave the group a dataflow mapping."""
        return self.map_tiles is not None

    def without_mapping(self) -> "GroupPlan":
        return replace(self, **{k: None for k in MAP_KEYS})

    @property
    def uses_library(self) -> bool:
        """Whether the backend runs the group's one op in the vendor library."""
        return self.implementation == LIBRARY

    @property
    def is_layer(self) -> bool:
        """Whether the group streams as one dataflow layer (every intermediate buffered)."""
        return self.kind == LAYER

    def tile(self, tier: str) -> tuple[int, ...] | None:
        return self.tiles.get(tier)

    def ratio(self, tier: str) -> float | None:
        return self.ratios.get(tier)

    def fastest_tile(self, tiers: Sequence[str] = ()) -> tuple[str, tuple[int, ...]] | None:
        """(tier, tile) for the fastest tier that has a tile, in the order `tiers` gives
        (a target's tier names, fastest first). Tiers `tiers` does not list come after it,
        by name, so a plan with one tile always yields it. None when there is no tile."""
        if not self.tiles:
            return None
        rank = {t: i for i, t in enumerate(tiers)}
        tier = min(self.tiles, key=lambda t: (rank.get(t, len(rank)), t))
        return tier, self.tiles[tier]

    def with_tile(self, tier: str, tile: Sequence[int], *, ratio: float | None = None,
                  scheme: str | None = None) -> "GroupPlan":
        """This plan with `tile` at `tier` (and its ratio, scheme when given)."""
        ratios = {**self.ratios, tier: ratio} if ratio is not None else self.ratios
        return replace(self, tiles={**self.tiles, tier: tuple(tile)}, ratios=ratios,
                       scheme=self.scheme if scheme is None else scheme)

    def with_chip(self, tile: Sequence[int], reads: Sequence[float], ratio: float) -> "GroupPlan":
        """This plan with the chip-level tiles, operand read counts and ratio."""
        return replace(self, chip_tile=tuple(tile), chip_reads=tuple(reads), chip_ratio=ratio)


def chip_rereads(graph: "Graph") -> dict[str, tuple[float, ...]]:
    """Anchor node name → read count per operand at the chip tiles (for the cost model)."""
    return {g.plan.anchor: tuple(g.plan.chip_reads) for g in graph.groups
            if g.plan.chip_reads is not None and g.plan.anchor is not None}


__all__ = ["GroupPlan", "LAYER", "MAP_KEYS", "PlanError", "WEIGHTS", "chip_rereads"]
