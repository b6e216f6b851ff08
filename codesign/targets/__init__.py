"""Targets: chips described as validated YAML data (see DESIGN.md, "Targets")."""

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
