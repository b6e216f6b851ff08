"""Targets: chips described as validated YAML data (see DESIGN.md, "Targets").

The names load on first use (`codesign.lazy`): `codesign.targets.units` and the command
line's parser do not pay for pydantic and the schema.
"""

from typing import TYPE_CHECKING

from codesign.lazy import lazy_attributes

if TYPE_CHECKING:
    from .loader import TargetError, list_targets, load_target, target_json_schema
    from .schema import MemoryTier, Target
    from .units import UnitError

__all__ = [
    "Target",
    "MemoryTier",
    "load_target",
    "list_targets",
    "TargetError",
    "target_json_schema",
    "UnitError",
]

__getattr__, __dir__ = lazy_attributes(__name__, globals(), {
    "TargetError": ".loader", "list_targets": ".loader", "load_target": ".loader",
    "target_json_schema": ".loader", "MemoryTier": ".schema", "Target": ".schema", "UnitError": ".units"})
