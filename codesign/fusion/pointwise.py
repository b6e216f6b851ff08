"""Exact cost and working-set figures of pure pointwise groups, kept per group as sums.

A group with no heavy op (no contraction, reduction, norm, pool, gather, region) runs
every node once: `CostModel.kernel_cost`'s recompute factors are all 1.0, so its FLOPs,
fast-tier bytes and (capped) buffer bytes are sums of per-node constants, its home-tier
bytes the sizes of the values it reads from outside plus those it writes out, and its
compute time a left-to-right sum over its nodes in graph order. Kept per group and
combined on a merge, they give a candidate's time, home bytes, FLOPs and working set in
time proportional to the later group's nodes (the compute sum continues from the earlier
group's), not to the merged group — the same numbers, bit for bit, that `kernel_cost` and
`capacity.working_set` compute from the merged kernel (tests/test_fusion.py checks both
on every candidate of the example models). Long pointwise chains fuse in O(n log n).
"""

from __future__ import annotations

from dataclasses import dataclass

from codesign.analysis import node_flops
from codesign.cost.model import TENSOR_KINDS, CostModel, fast_tier, peak_flops
from codesign.fusion.capacity import POINTWISE_BLOCK
from codesign.fusion.partition import Partition, is_free_constant
from codesign.ir.ops import OpKind, Template, get_op


@dataclass
class Sums:
    """One pointwise group's figures (see the module doc)."""

    compute: float
    flops: dict[str, int]
    fast_bytes: int
    in_bytes: int  # values read from outside, once each
    out_bytes: int  # members written out
    stored: dict[int, int]  # members kept in buffers: itemsize -> count
    stored_capped: dict[int, int]  # elem -> sum of min(nbytes, POINTWISE_BLOCK * elem) over them
    in_stored: dict[int, int]  # inputs kept in buffers (not scalar constants): itemsize -> count
    in_capped: dict[int, int]

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())


@dataclass(frozen=True)
class Figures:
    """What the fusion pass reads of a kernel's cost."""

    time: float
    home_bytes: int
    total_flops: int


def _add(x: dict[int, int], y: dict[int, int], sign: int = 1) -> dict[int, int]:
    out = dict(x)
    for k, v in y.items():
        out[k] = out.get(k, 0) + sign * v
    return out


class PointwiseCosts:
    """Sums for every pointwise group of a partition; `figures` / `candidate` answer cost
    questions, `merged` updates after `Partition.merge`. `enabled` is False where the cost
    model is not the stock one (a subclass may price kernels differently)."""

    def __init__(self, part: Partition, cost: CostModel) -> None:
        target = cost.target
        self.part, self.cost = part, cost
        self.home, self.fast = cost.home, fast_tier(target)
        self.enabled = type(cost) is CostModel and self.home != self.fast
        self.bandwidth = {t: target.total_bandwidth(t) for t in (self.home, self.fast)}
        self.launch = target.launch_overhead
        types = part.types
        self.elems = sorted({t.dtype.itemsize for t in types.values()})
        self.term: dict[str, float | None] = {}
        self.sums: dict[str, Sums] = {}
        self.folded = 0  # compute terms added up by `combine` (a complexity count for tests)
        if not self.enabled:
            return
        for key, members in part.members.items():
            node = part.nodes[members[0]]
            if part.facts[key].heavy:
                continue
            op = get_op(node.op)
            tensor = op.kind in TENSOR_KINDS or op.template is Template.moe
            f = int(node_flops(node, types) * 1.0)
            flops = {}
            compute = 0.0
            if f:
                flops[node.type.dtype.value] = f
                self.term[node.name] = f / (peak_flops(target, node.type.dtype, tensor) * target.sockets)
                compute += self.term[node.name]
            else:
                self.term[node.name] = None
            fast = 0 if op.kind is OpKind.layout else sum(types[o].nbytes for o in node.operands) + node.type.nbytes
            facts = part.facts[key]
            stored, capped = ({}, {e: 0 for e in self.elems})
            if op.kind not in (OpKind.layout, OpKind.source):
                stored = {node.type.dtype.itemsize: 1}
                capped = {e: min(node.type.nbytes, POINTWISE_BLOCK * e) for e in self.elems}
            in_stored, in_capped = self._inputs(facts.reads)
            self.sums[key] = Sums(compute, flops, fast, sum(types[v].nbytes for v in facts.reads),
                                  node.type.nbytes if node.name in facts.writes else 0,
                                  stored, capped, in_stored, in_capped)

    def _inputs(self, values) -> tuple[dict[int, int], dict[int, int]]:
        types, nodes = self.part.types, self.part.nodes
        items: dict[int, int] = {}
        capped = {e: 0 for e in self.elems}
        for v in values:
            node = nodes.get(v)
            if node is not None and is_free_constant(node):
                continue
            t = types[v]
            items[t.dtype.itemsize] = items.get(t.dtype.itemsize, 0) + 1
            for e in self.elems:
                capped[e] += min(t.nbytes, POINTWISE_BLOCK * e)
        return items, capped

    def has(self, key: str) -> bool:
        return key in self.sums

    def time(self, compute: float, home_bytes: int, fast_bytes: int) -> float:
        """`CostModel.kernel_cost`'s roofline, from the figures."""
        tiers = {self.home: home_bytes, self.fast: fast_bytes}
        memory_time = {t: b / self.bandwidth[t] for t, b in tiers.items() if b}
        slowest = max(memory_time.items(), key=lambda kv: kv[1], default=(self.home, 0.0))
        return max(compute, slowest[1]) + self.launch

    def figures(self, key: str) -> Figures:
        s = self.sums[key]
        home = s.in_bytes + s.out_bytes
        return Figures(self.time(s.compute, home, s.fast_bytes), home, s.total_flops)

    def combine(self, a: str, b: str) -> Sums:
        """The sums of a and b merged (the partition not yet changed)."""
        part, types = self.part, self.part.types
        sa, sb = self.sums[a], self.sums[b]
        fa, fb = part.facts[a], part.facts[b]
        crossing = [*part.succ[a].get(b, ()), *part.succ[b].get(a, ())]
        small, big = (fa.reads, fb.reads) if len(fa.reads) <= len(fb.reads) else (fb.reads, fa.reads)
        twice = [v for v in small if v in big]  # outside values both read
        gone = crossing + twice  # each counted in one side's inputs too many
        in_bytes = sa.in_bytes + sb.in_bytes - sum(types[v].nbytes for v in gone)
        gone_stored, gone_capped = self._inputs(gone)
        out_bytes = sa.out_bytes + sb.out_bytes
        for v in crossing:
            if v not in part.outputs and all(part.group_of(u) in (a, b) for u in part.users.get(v, ())):
                out_bytes -= types[v].nbytes
        ma, mb = part.members[a], part.members[b]
        if part.order[ma[-1]] < part.order[mb[0]]:
            compute, rest = sa.compute, mb
        elif part.order[mb[-1]] < part.order[ma[0]]:
            compute, rest = sb.compute, ma
        else:
            compute, rest = 0.0, sorted(ma + mb, key=part.order.__getitem__)
        term = self.term
        self.folded += len(rest)
        for n in rest:
            t = term[n]
            if t is not None:
                compute += t
        flops = dict(sa.flops)
        for k, v in sb.flops.items():
            flops[k] = flops.get(k, 0) + v
        return Sums(compute, flops, sa.fast_bytes + sb.fast_bytes, in_bytes, out_bytes,
                    _add(sa.stored, sb.stored), _add(sa.stored_capped, sb.stored_capped),
                    _add(_add(sa.in_stored, sb.in_stored), gone_stored, -1),
                    _add(_add(sa.in_capped, sb.in_capped), gone_capped, -1))

    def candidate(self, a: str, b: str) -> tuple[Sums, Figures, int]:
        """The merged sums, the merged kernel's figures and its working set (bytes)."""
        s = self.combine(a, b)
        home = s.in_bytes + s.out_bytes
        items = [e for e, c in _add(s.stored, s.in_stored).items() if c > 0]
        ws = 0
        if items:
            elem = max(items)
            ws = s.stored_capped[elem] + s.in_capped[elem]
        return s, Figures(self.time(s.compute, home, s.fast_bytes), home, s.total_flops), ws

    def merged(self, survivor: str, gone: str, sums: Sums | None) -> None:
        """Record a merge the partition has made (`sums`: the candidate's, None: not pointwise)."""
        self.sums.pop(gone, None)
        if sums is None:
            self.sums.pop(survivor, None)
        else:
            self.sums[survivor] = sums
