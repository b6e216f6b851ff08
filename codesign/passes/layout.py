"""`channels-last`: 2-D convolutions on NHWC data, the layout kept NHWC between them.

A GPU's convolution library runs its fast (tensor-core) kernels on channels-last data; fed
NCHW tensors it transposes them around every call. So on a target with
`channels_last_conv`, each 2-D `conv` becomes, exactly,

    permute(x, NCHW→NHWC) → conv_nhwc → permute(·, NHWC→NCHW)

and the pass then moves the layout through the ops that do not care about it, so that
between two convs the data stays NHWC and no permute is left there:

- a pointwise op whose operands broadcast right-aligned (add, mul, SiLU, GELU, casts; the
  body reads its operands only at the point) computes the same values on permuted operands:
  when one of its full-size operands is already NHWC it runs on NHWC operands (a broadcast
  operand such as a `[C, 1, 1]` scale is reshaped and permuted, a tiny tensor);
- a permute of an NHWC value composes with it (a model's own `permute(0, 2, 3, 1)`, as
  ConvNeXt does before its LayerNorm, cancels: it reads the NHWC value itself);
- an eval BatchNorm is per channel: on NHWC data it is the same op on the rows
  `[N·H·W, C]` (two reshapes, free index maps); a constant pad reorders its pads;
- every other op (GroupNorm, pooling, upsampling, reductions) reads the NCHW form,
  `permute(v_nhwc, NHWC→NCHW)`, a layout op that fusion folds into that op's kernel as an
  index map; it is made only where some reader needs it.

So every value is computed once, in the layout its producer chose, and permutes are left
only at the edges of the NHWC region (the network's input, before norms that read NCHW,
the output). The weight stays the parameter `[F, C/groups, kh, kw]` as the model holds it:
a backend stores it channels-last when it binds the weights (the Triton backend, once per
binding), and a live weight update is seen as in eager.

With `when=auto` (the compile pipeline) the rewrite is made where the target enables it
(`Target.channels_last_conv`: on for gpu targets), per NHWC region (what stays connected once
the conversions are taken out): a conv alone in its region (between two GroupNorms, which
read NCHW) would only get conversions around it, so it is kept; a region of several convs is
rewritten when the cost model's predicted gain of its convs (the library's NCHW time less its
NHWC time, where the calibration measured both: `Efficiency.nchw_library_conv`) exceeds the
predicted time of the conversions at its edges — without that figure, always. So a ResNet
(conversions at the input and output only) runs NHWC and the SD VAE decoder (a conversion on
both sides of every GroupNorm) stays NCHW. `always` rewrites every 2-D conv; `never` is the
off switch (for A/B measurements). Every conv is in the ledger (rewritten or kept, why, its
predicted time in both layouts), and the graph's summary counts the layout conversions left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping

from codesign.ir.affine import AffineMap
from codesign.ir.builder import GraphBuilder
from codesign.ir.graph import Graph, Node
from codesign.ir.ops import OpKind, get_op
from codesign.ir.ops.pointwise import broadcast_map
from codesign.ir.scalar import Affine, Load, Loop, walk
from codesign.ir.types import TensorType
from codesign.passes.manager import PassContext
from codesign.passes.pricing import price_kernels
from codesign.passes.registry import Pass, register_pass

WHEN = ("auto", "always", "never")
TO_LAST = (0, 2, 3, 1)  # NCHW -> NHWC
TO_FIRST = (0, 3, 1, 2)  # NHWC -> NCHW
CONV, CONV_NHWC, PERMUTE, PAD, BATCH_NORM = (get_op(name) for name in
                                            ("conv", "conv_nhwc", "permute", "pad", "batch_norm"))


def why_not_nhwc(node: Node, types: Mapping[str, TensorType]) -> str | None:
    """Why conv `node` cannot run channels-last here (legality), or None when it can."""
    rank = types[node.operands[0]].rank
    if rank != 4:
        return f"{rank - 2}-D conv: only 2-D convs run channels-last (NHWC)"
    if node.group is not None:
        return f"the conv is already in fusion group {node.group}: run channels-last before fuse"
    return None


def is_layout_free(node: Node, types: Mapping[str, TensorType]) -> bool:
    """A 4-D pointwise op that computes the same values on permuted operands: its operands
    broadcast right-aligned (NumPy's rule) and its body reads them only at the point (no
    loop index, no explicit coordinate)."""
    op = get_op(node.op)
    if op.kind is not OpKind.pointwise or node.regions or node.type.rank != 4 or op.structure is None:
        return False
    operands = [types[o] for o in node.operands]
    s = op.structure(operands, node.type, op.attr_values(node.attrs))
    if s.result_map != AffineMap.identity(4):
        return False
    if any(m != broadcast_map(t.shape, node.type.shape) for m, t in zip(s.operand_maps, operands)):
        return False
    body = s.expr
    return body is not None and not any(
        isinstance(e, (Loop, Affine)) or (isinstance(e, Load) and (e.index is not None or e.valid is not None))
        for e in walk(body))


def _permuted(t: TensorType, perm: tuple[int, ...]) -> TensorType:
    return TensorType(tuple(t.shape[p] for p in perm), t.dtype)


class _Layouts:
    """The graph being rebuilt: each value's NHWC twin (the value permuted NCHW→NHWC), and the
    NCHW forms not yet made (made at their first reader, under the original name)."""

    def __init__(self, graph: Graph):
        self.b = GraphBuilder(graph.name, list(graph.inputs), [], dict(graph.types()))
        self.twin: dict[str, str] = {}
        self.pending: dict[str, Node] = {}
        self.converted: dict[str, str] = {}  # adapted broadcast operands, made once
        self.rename: dict[str, str] = {}  # a permute that cancels reads the NHWC value itself
        self.graph = graph  # the result, once built
        self.to_last = self.to_first = 0  # layout conversions made
        self.conversions: set[str] = set()  # the permutes this pass made between the layouts

    def resolve(self, value: str) -> str:
        return self.rename.get(value, value)

    def nchw(self, value: str) -> str:
        """`value` in its own (NCHW) layout, made now if only its twin exists so far."""
        node = self.pending.pop(value, None)
        if node is not None:
            self.b.nodes.append(node)
            self.conversions.add(node.name)
            self.to_first += 1
        return value

    def nhwc(self, value: str) -> str:
        """The twin of 4-D `value`: the NHWC value itself when known, else a permute of it."""
        if value not in self.twin:
            self.twin[value] = self.b.add("permute", [self.nchw(value)], {"perm": TO_LAST}, hint=f"{value}.nhwc")
            self.conversions.add(self.twin[value])
            self.to_last += 1
        return self.twin[value]

    def broadcast_operand(self, value: str, rank: int) -> str:
        """A broadcast operand of a 4-D op, made 4-D (leading 1s) and permuted NCHW→NHWC."""
        t = self.b.types[value]
        if t.rank == 0:
            return self.nchw(value)
        if value in self.twin:
            return self.twin[value]
        if value not in self.converted:
            v = self.nchw(value)
            if t.rank < rank:
                v = self.b.reshape(v, (1,) * (rank - t.rank) + t.shape)
            self.converted[value] = self.b.add("permute", [v], {"perm": TO_LAST}, hint=f"{value}.nhwc")
            self.conversions.add(self.converted[value])
        return self.converted[value]

    def defer_nchw(self, original: Node, nhwc: str) -> None:
        """`original`'s value is the NHWC value `nhwc` permuted back; made when read in NCHW."""
        self.twin[original.name] = nhwc
        self.pending[original.name] = Node(original.name, PERMUTE.name, (nhwc,), original.type,
                                           {"perm": TO_FIRST}, loc=original.loc)


@register_pass
@dataclass(frozen=True)
class ChannelsLast(Pass):
    """Run 2-D convs on NHWC data; keep the layout NHWC through the layout-free ops between them."""

    name: ClassVar[str] = "channels-last"
    summary: ClassVar[str] = ("2-D conv → conv_nhwc on channels-last data, the layout moved through "
                              "pointwise ops and permutes so that it stays NHWC between convs")

    when: str = field(default="auto", metadata={
        "doc": "auto: where the target enables it (channels_last_conv); always: every 2-D conv; never: off"})

    def __post_init__(self) -> None:
        if self.when not in WHEN:
            raise ValueError(f"when={self.when!r} is not one of {', '.join(WHEN)}")

    def _policy(self, ctx: PassContext) -> str | None:
        """Why no conv of this graph is rewritten (the policy), or None to rewrite the legal ones."""
        if self.when == "never":
            return "channels-last{when=never}: the pass is switched off"
        if self.when == "always":
            return None
        target = ctx.target
        if target is None:
            return "no target to decide for (give one, or run channels-last{when=always})"
        if not target.channels_last_conv:
            return (f"target {target.name} does not enable it (channels_last_conv: false; set it in the "
                    f"target file, or run channels-last{{when=always}})")
        return None

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        types = graph.types()
        convs = [n for n in graph.nodes if get_op(n.op) is CONV]
        if not convs:
            return graph
        refused = self._policy(ctx)
        legal = {n.name: why_not_nhwc(n, types) for n in convs}
        for n in convs:
            if refused is not None or legal[n.name] is not None:
                ctx.ledger.record(self.name, f"%{n.name}", "kept", refused or legal[n.name])
        chosen = {name for name, why in legal.items() if why is None} if refused is None else set()
        if not chosen:
            return graph
        out = _rewrite(graph, chosen)
        regions = _regions(out, chosen)
        if self.when == "auto":
            dropped = self._unprofitable(graph, out, chosen, regions, ctx)
            if dropped:
                chosen -= dropped
                if not chosen:
                    return graph
                out = _rewrite(graph, chosen)
                regions = _regions(out, chosen)
        self._ledger(graph, out, chosen, regions, ctx)
        return out.graph

    def _unprofitable(self, before: Graph, out: "_Layouts", chosen: set[str],
                      regions: Mapping[str, tuple[int, int]], ctx: PassContext) -> set[str]:
        """The convs of the NHWC regions not worth their conversions, each ledgered. A conv
        alone in its region only gets conversions around it: it is kept NCHW (on the H200,
        305 of 313 distinct convs of six CNNs gain less from NHWC than their own two
        conversions cost, benchmarks/results/conv_layouts_h200.json). A region of two convs
        or more is rewritten where the cost model cannot tell the layouts apart; where it can
        (a calibration that measured the library's convs in both: `nchw_library_conv`), only
        when its convs' predicted gain, NCHW time less NHWC time, exceeds the predicted time
        of the conversions at its edges."""
        target, types = ctx.target, out.b.types
        nodes = {n.name: n for n in out.b.nodes}
        members: dict[int, list[str]] = {}
        for conv, (region, _) in regions.items():
            members.setdefault(region, []).append(conv)
        calibration = target.calibration.efficiency if target.calibration else None
        priced = calibration is not None and calibration.nchw_library_conv is not None
        conversions = _region_conversions(out, chosen) if priced else {}
        before_types = before.types()
        dropped: set[str] = set()
        for region, convs in sorted(members.items()):
            if len(convs) == 1:
                reason = ("alone in its NHWC region: its input and output would be converted around it and "
                          "nothing cancels")
                data = {"region": region}
            elif priced:
                originals = [n for n in before.nodes if n.name in convs]
                gain = (price_kernels(target, [[c] for c in originals], before_types)[0]
                        - price_kernels(target, [[nodes[out.twin[c.name]]] for c in originals], types)[0])
                cost = price_kernels(target, [[nodes[c]] for c in conversions.get(region, [])], types)[0]
                if gain > cost:
                    continue
                reason = (f"NHWC region {region} ({len(convs)} conv(s)) would gain {gain * 1e6:.1f} us from the "
                          f"library's NHWC convs and pay {cost * 1e6:.1f} us for its "
                          f"{len(conversions.get(region, []))} layout conversion(s) (predicted)")
                data = {"region": region, "gain": gain, "time_conversions": cost}
            else:
                continue
            for conv in convs:
                ctx.ledger.record(self.name, f"%{conv}", "kept", reason + " (channels-last{when=always} rewrites it)",
                                  **data)
            dropped.update(convs)
        return dropped

    def _ledger(self, before: Graph, out: "_Layouts", chosen: set[str], regions: Mapping[str, tuple[int, int]],
                ctx: PassContext) -> None:
        """One entry per rewritten conv (its predicted time in both layouts), one for the graph
        (conversions left, their predicted time)."""
        target, types = ctx.target, out.b.types
        nodes = {n.name: n for n in out.b.nodes}
        for conv in (n for n in before.nodes if n.name in chosen):
            data: dict = {"nhwc": out.twin[conv.name], "region": regions[conv.name][0],
                          "region_convs": regions[conv.name][1]}
            if target is not None:
                nhwc = nodes[out.twin[conv.name]]
                data["time_nchw"], data["flops"] = price_kernels(target, [[conv]], types)
                data["time_nhwc"], _ = price_kernels(target, [[nhwc]], types)
            ctx.ledger.record(self.name, f"%{conv.name}", "nhwc",
                              "the convolution library runs NHWC data without transposes "
                              "(channels_last_conv)", **data)
        conversions = [n for n in out.b.nodes if get_op(n.op) is PERMUTE and n.attrs.get("perm") in (TO_LAST, TO_FIRST)
                       and types[n.operands[0]].rank == 4]
        data = {"convs": len(chosen), "to_nhwc": out.to_last, "to_nchw": out.to_first}
        if target is not None:
            data["time_conversions"], _ = price_kernels(target, [[n] for n in conversions], types)
        ctx.ledger.record(self.name, f"@{before.name}", "layout",
                          f"{len(chosen)} conv(s) on NHWC data; {out.to_last} conversion(s) to NHWC and "
                          f"{out.to_first} back to NCHW left at the edges of the NHWC region", **data)


def _rewrite(graph: Graph, chosen: set[str]) -> _Layouts:
    """Rebuild `graph` with the convs in `chosen` on NHWC data (the module docstring's rules)."""
    at = _Layouts(graph)
    b = at.b
    for node in graph.nodes:
        b.loc = node.loc
        op = get_op(node.op)
        node = node.with_(operands=tuple(at.resolve(o) for o in node.operands))
        has_twin = node.type.rank == 4 and bool(node.operands) and node.operands[0] in at.twin and node.group is None
        if node.name in chosen:
            x = at.nhwc(node.operands[0])
            rest = [at.nchw(o) for o in node.operands[1:]]
            at.defer_nchw(node, b.add(CONV_NHWC.name, [x, *rest], dict(node.attrs), hint=f"{node.name}.nhwc"))
        elif op is BATCH_NORM and has_twin:  # per channel: on NHWC rows [N·H·W, C] it is the same op
            n, c, h, w = node.type.shape
            stats = [at.nchw(o) for o in node.operands[1:]]
            flat = b.reshape(at.twin[node.operands[0]], (n * h * w, c))
            y = b.add(BATCH_NORM.name, [flat, *stats], dict(node.attrs), hint=f"{node.name}.nhwc_rows")
            at.defer_nchw(node, b.reshape(y, (n, h, w, c)))
        elif op is PAD and has_twin:  # (before, after) per dim, reordered with the dims
            pads = tuple(node.attrs["pads"])
            permuted = tuple(v for d in TO_LAST for v in pads[2 * d:2 * d + 2])
            at.defer_nchw(node, b.add(PAD.name, [at.twin[node.operands[0]]], {**node.attrs, "pads": permuted},
                                      hint=f"{node.name}.nhwc"))
        elif op is PERMUTE and node.group is None and node.type.rank == 4 and node.operands[0] in at.twin:
            # permute(v, p) with v = permute(v_nhwc, TO_FIRST) is permute(v_nhwc, TO_FIRST[p])
            composed = tuple(TO_FIRST[i] for i in node.attrs["perm"])
            twin = at.twin[node.operands[0]]
            if composed == (0, 1, 2, 3):
                at.rename[node.name] = twin
            else:
                b.nodes.append(node.with_(operands=(twin,), attrs={**node.attrs, "perm": composed}))
        elif op is PERMUTE and node.group is None and node.type.rank == 4 and tuple(node.attrs["perm"]) == TO_FIRST:
            at.defer_nchw(node, node.operands[0])  # the model's own NHWC -> NCHW: its operand is the twin
        elif node.group is None and is_layout_free(node, b.types) and any(
                o in at.twin and b.types[o].shape == node.type.shape for o in node.operands):
            operands = [at.nhwc(o) if b.types[o].shape == node.type.shape else at.broadcast_operand(o, 4)
                        for o in node.operands]
            nhwc = b.add(node.op, operands, dict(node.attrs), hint=f"{node.name}.nhwc")
            if b.types[nhwc] != _permuted(node.type, TO_LAST):  # the rules above are wrong: a bug
                raise AssertionError(f"channels-last: %{node.name} rewritten to {b.types[nhwc]}")
            at.defer_nchw(node, nhwc)
        else:
            b.nodes.append(node.with_(operands=tuple(at.nchw(o) for o in node.operands)))
    b.loc = None
    outputs = tuple(at.nchw(at.resolve(o)) for o in graph.outputs)
    at.graph = Graph(graph.name, graph.inputs, tuple(b.nodes), outputs, graph.groups)
    return at


def _components(at: _Layouts):
    """(members, find): the rewritten graph's nodes less this pass's conversions, joined along
    their operands (union-find); `find(v)` names v's component."""
    parent: dict[str, str] = {n.name: n.name for n in at.b.nodes if n.name not in at.conversions}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for n in at.b.nodes:
        if n.name in parent:
            for o in n.operands:
                if o in parent:
                    parent[find(o)] = find(n.name)
    return parent, find


def _regions(at: _Layouts, chosen: set[str]) -> dict[str, tuple[int, int]]:
    """Per rewritten conv (by its original name): its NHWC region (numbered in graph order) and
    how many convs the region holds. A region is a connected part of the rewritten graph once
    the conversions this pass made are taken out: the convs it holds exchange their data
    without converting it."""
    _, find = _components(at)
    convs, number = _numbered(at, chosen, find)
    roots = [find(c) for c in convs]
    by_twin = {at.twin[k]: k for k in chosen}
    return {by_twin[c]: (number[r], roots.count(r)) for c, r in zip(convs, roots)}


def _numbered(at: _Layouts, chosen: set[str], find) -> tuple[list[str], dict[str, int]]:
    """The rewritten convs (their NHWC twins) in graph order, and each region's number by its
    component root: regions numbered in the order their first conv appears."""
    twins = {at.twin[k] for k in chosen}
    convs = [c for c in (n.name for n in at.graph.nodes) if c in twins]
    return convs, {r: i for i, r in enumerate(dict.fromkeys(find(c) for c in convs))}


def _region_conversions(at: _Layouts, chosen: set[str]) -> dict[int, list[str]]:
    """The layout conversions this pass made, by the NHWC region they feed or leave (numbered
    as `_regions` numbers them)."""
    parent, find = _components(at)
    _, number = _numbered(at, chosen, find)
    users: dict[str, list[str]] = {}
    for n in at.b.nodes:
        for o in n.operands:
            users.setdefault(o, []).append(n.name)
    out: dict[int, list[str]] = {}
    for n in at.b.nodes:
        if n.name not in at.conversions:
            continue
        sides = [u for u in users.get(n.name, []) if u in parent] + [o for o in n.operands if o in parent]
        regions = {number[find(v)] for v in sides if find(v) in number}
        for region in sorted(regions)[:1]:  # an edge of one region (two regions never share one)
            out.setdefault(region, []).append(n.name)
    return out


def nchw_convs(graph: Graph) -> Graph:
    """`graph` with every `conv_nhwc` written back as permute → conv → permute (in its group):
    the same values, for a backend whose convolutions read NCHW only (`Backend.nhwc_conv`
    false: the C++ backend, the MLIR export). The identity on a graph without one."""
    if not any(get_op(n.op) is CONV_NHWC for n in graph.nodes):
        return graph
    b = GraphBuilder(graph.name, list(graph.inputs), [], dict(graph.types()))
    for node in graph.nodes:
        if get_op(node.op) is not CONV_NHWC:
            b.nodes.append(node)
            continue
        b.loc = node.loc
        start = len(b.nodes)
        x = b.add(PERMUTE.name, [node.operands[0]], {"perm": TO_FIRST}, hint=f"{node.name}.nchw_in")
        y = b.add(CONV.name, [x, *node.operands[1:]], dict(node.attrs), hint=f"{node.name}.nchw")
        b.nodes.append(Node(node.name, PERMUTE.name, (y,), node.type, {"perm": TO_LAST}, loc=node.loc))
        b.nodes[start:] = [n.with_(group=node.group) for n in b.nodes[start:]]
    return Graph(graph.name, graph.inputs, tuple(b.nodes), graph.outputs, graph.groups)
