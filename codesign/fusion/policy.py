"""Fusion profitability: is a legal fusion worth it? A replaceable policy object.

Nothing here decides correctness (that is `legality`), so a user may swap the policy —
say, to fuse only what saves at least a microsecond — without risking wrong code. The
default asks the cost model: fuse when the fused kernel's predicted time is below the sum
of the two kernels' times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from codesign.cost.model import KernelCost


@dataclass(frozen=True, order=True)
class Score:
    """Sortable candidate score; larger saves more. Parts kept for the ledger."""

    saved_seconds: float
    saved_home_bytes: int
    saved_launches: int
    added_flops: int

    def as_dict(self) -> dict[str, float]:
        return {"saved_seconds": self.saved_seconds, "saved_home_bytes": self.saved_home_bytes,
                "saved_launches": self.saved_launches, "added_flops": self.added_flops}


def score(separate: tuple[KernelCost, KernelCost], fused: KernelCost, home: str) -> Score:
    a, b = separate
    return Score(a.time + b.time - fused.time,
                 a.bytes.get(home, 0) + b.bytes.get(home, 0) - fused.bytes.get(home, 0),
                 1, fused.total_flops - a.total_flops - b.total_flops)


_BLOCK = re.compile(r"^(.*?\.\d+)(?:\.|$)")


@dataclass(frozen=True)
class FusionPolicy:
    """The default profitability rules.

    `min_saving`: seconds a fusion must save to be taken. `stream_layers`: stream each
    repeated block (a module path with an index, e.g. `layers.3`) as one kernel, as the
    SN40L does with a whole decoder layer (the pass turns it on for dataflow targets);
    pairwise fusion then keeps blocks apart so each layer's kernel holds only its own ops.
    """

    min_saving: float = 0.0
    stream_layers: bool = False

    @property
    def keep_blocks_apart(self) -> bool:
        return self.stream_layers

    def profitable(self, s: Score) -> bool:
        return s.saved_seconds > self.min_saving

    def layer_of(self, loc: str | None) -> str | None:
        """The indexed module path prefix of a node (`model.layers.3`), if any."""
        if not loc:
            return None
        m = _BLOCK.match(loc)
        return m.group(1) if m else None

    def blocks(self, graph) -> dict[str, str]:
        """Node name → repeated block, for blocks that are containers (a decoder layer holds
        submodules; a bare `Sequential` entry such as `features.0` is one op, not a block)."""
        locs = {n.loc for n in graph.nodes if n.loc}
        prefixes = {p for p in (self.layer_of(loc) for loc in locs) if p}
        containers = {p for p in prefixes if any(loc.startswith(p + ".") for loc in locs)}
        table = {}
        for node in graph.nodes:
            block = self.layer_of(node.loc)
            if block in containers:
                table[node.name] = block
        return table
