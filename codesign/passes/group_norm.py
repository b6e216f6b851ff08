"""`split-group-norm`: a group norm as chunked statistics and a normalising pointwise op.

A group norm of x[N, C, *spatial] with G groups normalises N·G blocks of C/G·H·W elements.
Run as one reduction it has only N·G rows (32 for a VAE at batch 1): a GPU is idle while 32
programs stream megabytes each — torch's own CUDA group norm, which the Triton backend
would call, takes 350 µs on a 128-channel 512² activation of an H200 where one pass over it
takes 17. The statistics split exactly into per-chunk statistics and their combination.
Along the spatial dims (L = H·W elements, split into S chunks of L/S):

    m_cs = mean(x[n, c, chunk s]),        v_cs = var(x[n, c, chunk s])         (N·C·S rows)
    mean_g = mean over (c in g, s) of m_cs
    var_g  = mean over (c in g, s) of v_cs + var over (c in g, s) of m_cs      (equal counts)

The second line is the law of total variance: exact, and each chunk's variance is a two-pass
variance (mean, then squared deviations), so no E[x²] − mean² cancellation. The statistics
accumulate in f32 (in the input's type when it is wider); the output is
`(x − mean_g)·rsqrt(var_g + eps)·weight + bias`, a pointwise op that fuses with what follows
(the SiLU of a ResNet block) and reads x through a reshape, in either memory layout.

With `when=auto` (the compile pipeline) the split is made where the target's host backend
has no group-norm kernel of its own (`Backend.runs_as_kernel`: Triton calls torch for it;
C++ and MLIR have one); `when=always` splits every group norm. Each group norm's decision,
with its chunk count, is in the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import ClassVar

from codesign.ir.builder import GraphBuilder
from codesign.ir.graph import Graph, Node
from codesign.ir.ops import Template, get_op
from codesign.ir.types import DType
from codesign.passes.manager import PassContext
from codesign.passes.registry import Pass, register_pass

WHEN = ("auto", "always")


def _is_group_norm(node: Node) -> bool:
    return get_op(node.op).template is Template.group_norm


def chunks(spatial: int, chunk: int) -> int:
    """How many equal chunks the spatial extent splits into: the largest power of two that
    divides it and leaves chunks of at least `chunk` elements (1 for a small extent)."""
    s = 1
    while spatial % (2 * s) == 0 and spatial // (2 * s) >= chunk:
        s *= 2
    return s


def split_group_norm(b: GraphBuilder, node: Node, chunk: int) -> int:
    """Append the split form of the group norm `node` to `b` (its last node computes the
    result, under a fresh name); the number of chunks per channel."""
    x, *params = node.operands
    xt = b.types[x]
    groups, eps = int(node.attrs["groups"]), float(node.attrs.get("eps", 1e-5))
    n, c = xt.shape[0], xt.shape[1]
    spatial = prod(xt.shape[2:])
    s = chunks(spatial, chunk)
    work = xt.dtype if xt.dtype is DType.f64 else DType.f32
    hint = node.name

    def chunked() -> str:  # each reader casts for itself, so the cast fuses into its reader
        read = x if xt.dtype is work else b.add("cast", [x], {"dtype": work.value}, hint=f"{x}_{work.value}")
        return b.reshape(read, (n, c, s, spatial // s))

    def squared_deviation(values: str, mean: str) -> str:
        d = b.add("sub", [values, mean])
        return b.add("mul", [d, d])
    # each statistic is a mean of the same rows: one row kernel computes both (`same-rows`),
    # the second pass reading the first's result (a two-pass variance)
    chunk_mean = b.add("mean", [chunked()], {"dims": (3,), "keepdim": True}, hint=f"{hint}.chunk_mean")
    chunk_var = b.add("mean", [squared_deviation(chunked(), chunk_mean)], {"dims": (3,), "keepdim": True},
                      hint=f"{hint}.chunk_var")
    cg = c // groups
    means, variances = b.reshape(chunk_mean, (n, groups, cg * s)), b.reshape(chunk_var, (n, groups, cg * s))
    mean = b.add("mean", [means], {"dims": (2,), "keepdim": True}, hint=f"{hint}.mean")
    within = b.add("mean", [variances], {"dims": (2,), "keepdim": True}, hint=f"{hint}.within")
    between = b.add("mean", [squared_deviation(means, mean)], {"dims": (2,), "keepdim": True},
                    hint=f"{hint}.between")
    var = b.add("add", [within, between], hint=f"{hint}.var")
    rstd = b.add("rsqrt", [b.add("add", [var, b.constant(eps, work)])], hint=f"{hint}.rstd")
    per_channel = (n, c) + (1,) * (xt.rank - 2)  # a group's statistic for each of its channels

    def by_channel(stat: str) -> str:
        return b.reshape(b.add("expand", [stat], {"shape": (n, groups, cg)}), per_channel)
    xf = x if xt.dtype is work else b.add("cast", [x], {"dtype": work.value}, hint=f"{x}_{work.value}")
    y = b.add("mul", [b.add("sub", [xf, by_channel(mean)]), by_channel(rstd)])
    param_shape = (c,) + (1,) * (xt.rank - 2)
    if params:
        y = b.add("mul", [y, b.reshape(b.cast(params[0], work), param_shape)])
    if len(params) > 1:
        y = b.add("add", [y, b.reshape(b.cast(params[1], work), param_shape)])
    if xt.dtype is not work:
        y = b.add("cast", [y], {"dtype": xt.dtype.value})
    return s


@register_pass
@dataclass(frozen=True)
class SplitGroupNorm(Pass):
    """Rewrite group_norm into per-chunk statistics, their exact combination and a pointwise op."""

    name: ClassVar[str] = "split-group-norm"
    summary: ClassVar[str] = ("group_norm → per-channel chunk mean / variance, combined per group (exact), and a "
                              "normalising pointwise op; where the host backend has no group-norm kernel")

    when: str = field(default="auto", metadata={
        "doc": "auto: where the target's host backend runs group_norm as an extern call; always: every group norm"})
    chunk: int = field(default=4096, metadata={"doc": "least elements per chunk of a channel's spatial extent"})

    def __post_init__(self) -> None:
        if self.when not in WHEN:
            raise ValueError(f"when={self.when!r} is not one of {', '.join(WHEN)}")
        if self.chunk < 1:
            raise ValueError(f"chunk={self.chunk} must be at least 1")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        norms = [n for n in graph.nodes if _is_group_norm(n)]
        if not norms:
            return graph
        kept = self._kept_reason(ctx)
        if kept is not None:
            for node in norms:
                ctx.ledger.record(self.name, f"%{node.name}", "kept", kept)
            return graph
        b = GraphBuilder(graph.name, list(graph.inputs), [], dict(graph.types()))
        for node in graph.nodes:
            if not _is_group_norm(node):
                b.nodes.append(node)
                continue
            b.loc = node.loc
            s = split_group_norm(b, node, self.chunk)
            del b.types[b.nodes[-1].name]  # the result keeps the group norm's name: readers are unchanged
            b.nodes[-1] = b.nodes[-1].with_(name=node.name, loc=node.loc, group=node.group)  # after fuse: its group
            x = b.types[node.operands[0]]
            rows = x.shape[0] * x.shape[1] * s
            ctx.ledger.record(self.name, f"%{node.name}", "split",
                              f"{x.shape[0] * int(node.attrs['groups'])} group rows → {rows} chunk rows "
                              f"of {prod(x.shape[2:]) // s} elements", chunks=s, rows=rows)
        b.loc = None
        return Graph(graph.name, graph.inputs, tuple(b.nodes), graph.outputs, graph.groups)

    def _kept_reason(self, ctx: PassContext) -> str | None:
        if self.when == "always":
            return None
        if ctx.target is None:
            return "no target: its host backend decides (give one, or run split-group-norm{when=always})"
        from codesign.codegen.registry import get_backend
        backend = get_backend(ctx.target.host_backend)
        if backend.runs_as_kernel(Template.group_norm):
            return f"the {backend.name} backend has a group-norm kernel"
        return None
