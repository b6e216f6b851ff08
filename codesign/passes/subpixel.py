"""`subpixel-conv`: nearest upsampling then a convolution, as a sub-pixel conv and a pixel shuffle.

Decoders (image and video VAEs) upsample by nearest neighbour and convolve the r-times larger
tensor. The pair is exactly a convolution of the *low-resolution* input with `C_out·r^d`
output channels followed by a depth-to-space (pixel shuffle), as Turbo-VAED
(arXiv 2508.09136) retrains a decoder to do; here it is a rewrite, with no retraining.

Along one spatial axis, with upsampling factor r, kernel k, dilation δ and zero padding
(p_lo, p_hi), output position `o = r·q + φ` (phase φ) reads the upsampled input at
`o + jδ − p_lo`, whose low-resolution position is `q + d(φ, j)` with
`d(φ, j) = ⌊(φ + jδ − p_lo) / r⌋`. Zero padding of the upsampled tensor is zero padding
of the low-resolution one (a position is in range exactly when its ⌊·/r⌋ is), so

    y[r·q + φ] = Σ_a x[q + lo(φ) + a] · Σ_{j : d(φ, j) = lo(φ) + a} w[j]

for `lo(φ) = d(φ, 0)`: each phase is a small conv whose taps are sums of the original
taps. For k = 3, r = 2 every phase needs 2 taps per axis (16 instead of 36 in 2-D). One
conv computes all phases, their windows aligned by padding the low-resolution input by
`A = −min lo(φ)`; the result, shuffled, is the output shifted by `K = r·A − p_lo` (phases
rotated by K so that the shuffle puts each where it belongs), so a slice finishes it.
The rewrite needs stride 1 and zero padding; any kernel size, padding (phases of unequal
length included: the slice keeps what the original computes), groups, bias and dilation. Axes the upsampling leaves alone (r = 1: time in a spatial-only video upsample) keep
their kernel, dilation and padding, so causal (one-sided) temporal padding stays exact.

The transformed weights are graph ops on the weight input (slices and concats of the taps
each new tap sums, reduced by a `sum`, in the phase-major channel order), recomputed on
every call, so a live
weight update shows in the next call as in eager; their names say which weight they derive
from (`%<weight>.subpixel`). With `when=auto` (the compile pipeline) the rewrite is made
where the target enables it (`Target.subpixel_conv`, on by default for GPU and mobile
targets) and the cost model predicts it faster; every match, made or not, is in the ledger
with both predicted times. `when=always` rewrites every exact match (and still ledgers).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from math import prod
from typing import ClassVar, Sequence

from codesign.ir.builder import GraphBuilder
from codesign.ir.graph import Graph, Node
from codesign.ir.ops import get_op
from codesign.ir.types import DType, TensorType
from codesign.passes.manager import PassContext
from codesign.passes.pricing import price_kernels
from codesign.passes.registry import Pass, register_pass

WHEN = ("auto", "always")
CONV, PAD, CAST, UPSAMPLE = (get_op(name) for name in ("conv", "pad", "cast", "upsample_nearest"))


@dataclass(frozen=True)
class AxisPlan:
    """The rewrite along one spatial axis: `size` is the low-resolution length."""

    r: int
    k: int
    dilation: int
    pad_lo: int
    pad_hi: int
    size: int

    @property
    def out_len(self) -> int:
        """Length of the original conv's output along this axis."""
        return self.r * self.size + self.pad_lo + self.pad_hi - self.dilation * (self.k - 1)

    def window(self, phase: int, tap: int) -> int:
        """d(φ, j): the low-resolution offset original tap j reads for output phase φ."""
        return (phase + tap * self.dilation - self.pad_lo) // self.r

    @property
    def lo(self) -> tuple[int, ...]:
        return tuple(self.window(p, 0) for p in range(self.r))

    @property
    def new_k(self) -> int:
        """Taps per phase of the sub-pixel conv (the widest phase's window)."""
        if self.r == 1:
            return self.k
        return max(self.window(p, self.k - 1) - self.window(p, 0) + 1 for p in range(self.r))

    @property
    def new_dilation(self) -> int:
        return self.dilation if self.r == 1 else 1

    @property
    def new_pads(self) -> tuple[int, int]:
        """(before, after) zero padding of the low-resolution input for the sub-pixel conv."""
        if self.r == 1:
            return self.pad_lo, self.pad_hi
        before = -min(self.lo)
        last = (self.out_len - 1 + self.r * before - self.pad_lo) // self.r  # the last output read
        return before, max(0, last + self.new_k - self.size - before)

    @property
    def shift(self) -> int:
        """K: where the original output starts in the shuffled sub-pixel output."""
        return self.r * self.new_pads[0] - self.pad_lo if self.r > 1 else 0

    def phase_of_slot(self, slot: int) -> int:
        """The output phase whose weights sit in channel slot `slot` (phases rotated by K)."""
        return (slot - self.shift) % self.r

    def taps(self, slot: int, a: int) -> tuple[int, ...]:
        """Original taps summed into new tap `a` of channel slot `slot`."""
        if self.r == 1:
            return (a,)
        p = self.phase_of_slot(slot)
        return tuple(j for j in range(self.k) if self.window(p, j) == self.lo[p] + a)



@dataclass(frozen=True)
class Match:
    """A conv reading a nearest upsample (through an optional cast, then an optional zero
    pad), and its per-axis plan."""

    conv: Node
    upsample: Node
    pad: Node | None
    axes: tuple[AxisPlan, ...]
    cast: Node | None = None

    @property
    def source(self) -> str:
        return self.upsample.operands[0]


def _match(node: Node, producers: dict[str, Node], types: dict[str, TensorType]) -> Match | str | None:
    """The match for a conv fed by an upsample; a reason string when it is not exact; None
    when the conv does not read an upsample at all (nothing to say)."""
    if get_op(node.op) is not CONV:
        return None
    x = producers.get(node.operands[0])
    pad = cast = None
    if x is not None and get_op(x.op) is PAD:
        pad, x = x, producers.get(x.operands[0])
    if x is not None and get_op(x.op) is CAST:  # diffusers upsamples bf16 in f32 and casts back
        cast, x = x, producers.get(x.operands[0])
    if x is None or get_op(x.op) is not UPSAMPLE:
        return None
    attrs = get_op("conv").attr_values(node.attrs)
    nsp = len(attrs["stride"])
    if any(s != 1 for s in attrs["stride"]):
        return f"stride {list(attrs['stride'])}: only a stride-1 conv is a sub-pixel conv"
    low = types[x.operands[0]]
    scales = tuple(x.attrs["scales"])
    scales = (1,) * (nsp - len(scales)) + scales  # scales apply to the trailing dims
    if len(scales) != nsp:
        return f"the upsample scales {list(x.attrs['scales'])} reach past the conv's spatial dims"
    pads = [(0, 0)] * nsp
    if pad is not None:
        p = tuple(pad.attrs["pads"])
        if pad.attrs.get("value", 0.0) != 0 or any(v < 0 for v in p) or any(p[:4]):
            return (f"the pad between upsample and conv is not a zero padding of the spatial dims "
                    f"(pads {list(p)}, value {pad.attrs.get('value', 0.0)})")
        pads = [(p[4 + 2 * i], p[5 + 2 * i]) for i in range(nsp)]
    w = types[node.operands[1]]
    axes = tuple(AxisPlan(scales[i], w.shape[2 + i], attrs["dilation"][i], attrs["padding"][i] + pads[i][0],
                          attrs["padding"][i] + pads[i][1], low.shape[2 + i]) for i in range(nsp))
    if all(a.r == 1 for a in axes):
        return None
    if node.group is not None:
        return f"the conv is already in fusion group {node.group}: run subpixel-conv before fuse"
    return Match(node, x, pad, axes, cast)


# -- building the rewritten nodes ------------------------------------------------------------
def _subpixel_weight(b: GraphBuilder, weight: str, axes: Sequence[AxisPlan]) -> str:
    """The sub-pixel conv's weight [F·R, C/g, k'...] from the original [F, C/g, k...].

    New tap (slot, a) of an axis is the sum of the original taps `AxisPlan.taps(slot, a)`.
    Piece i holds the i-th of those taps (zero where a new tap has fewer), built by slices
    and concats; the weight is the `sum` over the stacked pieces, phase slots major after
    the filter index. Ending in a reduction keeps the transform a kernel of its own: fusion
    never makes it a prologue of the conv (which would recompute it at every multiply).
    """
    dtype = b.types[weight].dtype
    w = b.cast(weight, DType.f32) if dtype in (DType.bf16, DType.f16) else weight  # one rounding, at the end
    hint = f"{weight}.subpixel"
    slices: dict[tuple[str, int, int], str] = {}
    zeros: dict[tuple[int, ...], str] = {}

    def tap(value: str, dim: int, j: int | None) -> str:
        if j is None:
            shape = list(b.types[value].shape)
            shape[dim] = 1
            if tuple(shape) not in zeros:
                zeros[tuple(shape)] = b.constant(0.0, b.types[value].dtype, tuple(shape))
            return zeros[tuple(shape)]
        if (value, dim, j) not in slices:
            slices[value, dim, j] = b.add("slice", [value], {"dim": dim, "start": j, "end": j + 1, "step": 1},
                                          hint=hint)
        return slices[value, dim, j]

    depth = [max(len(a.taps(slot, t)) for slot in range(a.r) for t in range(a.new_k)) for a in axes]
    concats: dict[tuple[str, int, int], str] = {}
    pieces = []
    for picks in itertools.product(*(range(d) for d in depth)):
        piece = w
        for i, (axis, pick) in enumerate(zip(axes, picks)):
            if axis.r == 1:
                continue
            if (piece, i, pick) not in concats:
                parts = [tap(piece, 2 + i, taps[pick] if pick < len(taps) else None)
                         for taps in (axis.taps(slot, t) for slot in range(axis.r) for t in range(axis.new_k))]
                concats[piece, i, pick] = b.add("concat", parts, {"dim": 2 + i}, hint=hint)
            piece = concats[piece, i, pick]
        pieces.append(piece)
    f, cg = b.types[w].shape[:2]
    nsp = len(axes)
    split = (f, cg) + tuple(x for a in axes for x in (a.r, a.new_k)) + (1,)
    stacked = [b.reshape(p, split) for p in pieces]
    w = b.add("concat", stacked, {"dim": len(split) - 1}, hint=hint) if len(stacked) > 1 else stacked[0]
    perm = (0,) + tuple(2 + 2 * i for i in range(nsp)) + (1,) + tuple(3 + 2 * i for i in range(nsp)) + (len(split) - 1,)
    w = b.add("permute", [w], {"perm": perm}, hint=hint)
    w = b.add("sum", [w], {"dims": (len(split) - 1,), "keepdim": False}, hint=hint)
    w = b.reshape(w, (f * prod(a.r for a in axes), cg) + tuple(a.new_k for a in axes))
    return b.cast(w, dtype)


def _subpixel_bias(b: GraphBuilder, bias: str, phases: int) -> str:
    """Each filter's bias repeated once per phase slot."""
    f = b.types[bias].shape[0]
    column = b.reshape(bias, (f, 1))
    wide = b.add("expand", [column], {"shape": (f, phases)}, hint=f"{bias}.subpixel")
    return b.reshape(wide, (f * phases,))


def _depth_to_space(b: GraphBuilder, value: str, axes: Sequence[AxisPlan]) -> str:
    """[N, F·R, S...] → [N, F, S₀·r₀, ...]: pixel_shuffle in 2-D with one factor, else a
    reshape / permute / reshape (1-D, 3-D, unequal factors)."""
    t = b.types[value]
    n, fr = t.shape[:2]
    spatial = t.shape[2:]
    rs = tuple(a.r for a in axes)
    if len(axes) == 2 and rs[0] == rs[1]:
        return b.add("pixel_shuffle", [value], {"factor": rs[0]})
    f = fr // prod(rs)
    v = b.reshape(value, (n, f) + rs + tuple(spatial))
    nsp = len(axes)
    perm = (0, 1) + tuple(x for i in range(nsp) for x in (2 + nsp + i, 2 + i))
    v = b.add("permute", [v], {"perm": perm}, hint="depth_to_space")
    return b.reshape(v, (n, f) + tuple(s * r for s, r in zip(spatial, rs)))


@dataclass(frozen=True)
class Rewritten:
    """The nodes a rewrite appended, by role: the weight (and bias) transform, a pad of the
    low-resolution input, the sub-pixel conv, and its epilogue (depth-to-space, slices)."""

    derived: tuple[Node, ...]
    prologue: tuple[Node, ...]
    conv: Node
    epilogue: tuple[Node, ...]

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.derived + self.prologue + (self.conv,) + self.epilogue


def rewrite_nodes(b: GraphBuilder, m: Match) -> Rewritten:
    """Append the sub-pixel form of `m` to `b`; its last node computes the conv's value."""
    conv = m.conv
    attrs = get_op("conv").attr_values(conv.attrs)
    b.loc = conv.loc
    first = len(b.nodes)
    weight = _subpixel_weight(b, conv.operands[1], m.axes)
    phases = prod(a.r for a in m.axes)
    bias = [_subpixel_bias(b, conv.operands[2], phases)] if len(conv.operands) == 3 else []
    derived = len(b.nodes)
    pads = [a.new_pads for a in m.axes]
    x = m.source
    if m.cast is not None:  # a cast commutes with the upsample: cast the small tensor
        x = b.add("cast", [x], dict(m.cast.attrs))
    if all(lo == hi for lo, hi in pads):
        padding = tuple(lo for lo, _ in pads)
    else:
        x = b.add("pad", [x], {"pads": (0, 0, 0, 0) + tuple(v for p in pads for v in p), "value": 0.0})
        padding = (0,) * len(pads)
    prologue = len(b.nodes)
    out = b.add("conv", [x, weight, *bias], {"stride": (1,) * len(pads), "padding": padding,
                                            "dilation": tuple(a.new_dilation for a in m.axes),
                                            "groups": attrs["groups"]}, hint=f"{conv.name}.subpixel")
    y = _depth_to_space(b, out, m.axes)
    for i, a in enumerate(m.axes):
        size = b.types[y].shape[2 + i]
        if a.shift or size != a.out_len:
            y = b.add("slice", [y], {"dim": 2 + i, "start": a.shift, "end": a.shift + a.out_len, "step": 1})
    if b.types[y] != conv.type:  # the plan's arithmetic is wrong: a bug, never a user error
        raise AssertionError(f"subpixel-conv: %{conv.name} rewritten to {b.types[y]}, not {conv.type}")
    nodes = tuple(b.nodes[first:])
    return Rewritten(nodes[:derived - first], nodes[derived - first:prologue - first], nodes[prologue - first],
                     nodes[prologue - first + 1:])


# -- the decision ----------------------------------------------------------------------------
def _predicted(target, before: Sequence[Sequence[Node]], after: Sequence[Sequence[Node]],
               types: dict[str, TensorType]) -> tuple[float, float, int, int]:
    """Predicted times and FLOPs of the original and the rewritten nodes, each kernel as
    fusion would at best form it (the upsample inlined into the conv; the weight transform
    one kernel, the depth-to-space and slices the conv's epilogue)."""
    t0, f0 = price_kernels(target, before, types)
    t1, f1 = price_kernels(target, after, types)
    return t0, t1, f0, f1


@register_pass
@dataclass(frozen=True)
class SubpixelConv(Pass):
    """Rewrite nearest upsample + stride-1 conv into a sub-pixel conv + pixel shuffle (exact)."""

    name: ClassVar[str] = "subpixel-conv"
    summary: ClassVar[str] = ("nearest upsample then stride-1 conv → conv on the low-resolution input "
                              "with C_out·r^d channels (weights derived by graph ops) and a pixel shuffle")

    when: str = field(default="auto", metadata={
        "doc": "auto: where the target enables it (subpixel_conv) and the cost model predicts a gain; "
               "always: every exact match"})

    def __post_init__(self) -> None:
        if self.when not in WHEN:
            raise ValueError(f"when={self.when!r} is not one of {', '.join(WHEN)}")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        producers = graph.node_map()
        types = graph.types()
        b = GraphBuilder(graph.name, list(graph.inputs), [], dict(types))
        for node in graph.nodes:
            found = _match(node, producers, types)
            if isinstance(found, str):
                ctx.ledger.record(self.name, f"%{node.name}", "kept", found)
            if not isinstance(found, Match):
                b.nodes.append(node)
                continue
            start = len(b.nodes)
            new = rewrite_nodes(b, found)
            kept = self._decide(found, new, b.types, ctx)
            if kept is not None:
                del b.nodes[start:]
                for n in new.nodes:
                    del b.types[n.name]
                b.nodes.append(node)
                ctx.ledger.record(self.name, f"%{node.name}", "kept", kept[0], **kept[1])
                continue
            # the last new node takes the conv's name, so every reader reads it unchanged
            del b.types[b.nodes[-1].name]
            b.nodes[-1] = b.nodes[-1].with_(name=node.name, loc=node.loc)
        b.loc = None
        return Graph(graph.name, graph.inputs, tuple(b.nodes), graph.outputs, graph.groups)

    def _decide(self, m: Match, new: Rewritten, types: dict[str, TensorType],
                ctx: PassContext) -> tuple[str, dict] | None:
        """None to make the rewrite (ledgered here), else (reason, data) to keep the original."""
        data: dict = {"scales": [a.r for a in m.axes], "kernel": [a.k for a in m.axes],
                      "taps_before": prod(a.r * a.k for a in m.axes),
                      "taps_after": prod(a.r * a.new_k for a in m.axes),
                      "weight": m.conv.operands[1], "derived_weight": new.conv.operands[1]}
        target = ctx.target
        if target is not None:
            before = [[m.upsample] + [n for n in (m.cast, m.pad) if n is not None] + [m.conv]]
            after = [g for g in (new.derived, new.prologue, (new.conv,) + new.epilogue) if g]
            t0, t1, f0, f1 = _predicted(target, before, after, types)
            data.update(time_before=t0, time_after=t1, flops_before=f0, flops_after=f1)
        if self.when == "auto":
            if target is None:
                return "no target to price it on (give one, or run subpixel-conv{when=always})", data
            if not target.subpixel_conv:
                return (f"target {target.name} does not enable it (subpixel_conv: false; set it in the target "
                        f"file, or run subpixel-conv{{when=always}})"), data
            if data["time_after"] >= data["time_before"]:
                return (f"the cost model predicts no gain on {target.name} ({data['time_after']:.3g} s vs "
                        f"{data['time_before']:.3g} s before)"), data
        reason = (f"{data['taps_after']} taps instead of {data['taps_before']} per low-resolution point; "
                  f"weights derived from %{m.conv.operands[1]}")
        ctx.ledger.record(self.name, f"%{m.conv.name}", "rewritten", reason, **data)
        return None
