"""What a kernel does, in the terms an efficiency model needs.

The roofline needs only FLOPs and bytes. Measured silicon also depends on what kind of work
the FLOPs are (matrix units or vector lanes, transcendental functions on the special-function
units), on the shape of a contraction (a GEMM's tiles fill the chip in waves, and a short
reduction dimension never fills the pipeline), and on a fixed cost per kernel. A
`KernelFeatures` records exactly these, once, from the IR; the calibrated model
(`codesign.cost.calibration`) prices them and the calibration fit (`codesign.calibrate`)
learns from them, so both read one definition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import prod
from typing import Mapping

from codesign.ir.graph import Node
from codesign.ir.kernels import Kernel, kernel_anchor
from codesign.ir.ops import OpKind, Template, get_op
from codesign.ir.scalar import FLOAT_ONLY, Apply, walk
from codesign.ir.types import TensorType

# templates whose FLOPs run on the matrix units, each with its own fitted efficiency
MATRIX_TEMPLATES = (Template.gemm, Template.attention, Template.conv, Template.moe)


@dataclass(frozen=True)
class KernelFeatures:
    """One kernel's work: the figures the cost model prices and the calibration fits."""

    template: str  # the kernel's heaviest template: gemm, attention, conv, moe, or "vector"
    dtype: str  # the anchor's dtype (the kernel's first compute node without an anchor)
    matrix_flops: int  # FLOPs of the matrix-unit template (0 for a vector kernel)
    vector_flops: int  # every other FLOP
    special: int  # transcendental evaluations (exp, log, tanh, erf, sigmoid, sqrt, ...)
    home_bytes: int  # bytes read from and written to the home tier (re-reads included)
    gemm: tuple[int, int, int, int] | None = None  # (batch, M, N, K) of a GEMM or attention anchor

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "KernelFeatures":
        gemm = data.get("gemm")
        return cls(str(data["template"]), str(data["dtype"]), int(data["matrix_flops"]),
                   int(data["vector_flops"]), int(data["special"]), int(data["home_bytes"]),
                   tuple(int(v) for v in gemm) if gemm else None)


def special_count(node: Node, types: Mapping[str, TensorType]) -> int:
    """Transcendental evaluations of one node: per element, the transcendental primitives of
    its scalar body; softmax one exp per element; attention one exp per score."""
    op = get_op(node.op)
    if op.template is Template.softmax:
        return node.type.numel
    if op.template is Template.attention:
        q, k = types[node.operands[0]], types[node.operands[1]]
        scores = prod(q.shape[:-1]) * k.shape[-2]
        return scores // 2 if node.attrs.get("causal") else scores
    if op.template in (Template.norm, Template.group_norm, Template.variance):
        return node.type.numel // max(node.type.shape[-1], 1) if node.type.shape else 1
    if op.structure is None:
        return 0
    expr = op.structure([types[o] for o in node.operands], node.type, op.attr_values(node.attrs)).expr
    if expr is None:
        return 0
    per_element = sum(1 for e in walk(expr) if isinstance(e, Apply) and e.prim in FLOAT_ONLY)
    return per_element * node.type.numel


def gemm_shape(node: Node, types: Mapping[str, TensorType]) -> tuple[int, int, int, int] | None:
    """(batch, M, N, K) of a GEMM or attention anchor: what its tiles quantise over.

    A GEMM's rows are every leading result dimension when the second operand is shared (a
    linear layer); a batched matmul keeps its batch. Attention is priced as its first
    product: M = query rows, N = key rows, K = head dim, batch = batch x heads."""
    op = get_op(node.op)
    shape = node.type.shape
    if op.template is Template.gemm and shape:
        n = shape[-1]
        a, b = types[node.operands[0]], types[node.operands[1]]
        k = a.shape[-1] if a.shape else 1
        batched = len(b.shape) >= 3
        batch = prod(shape[:-2]) if batched else 1
        m = node.type.numel // (n * batch) if n and batch else 0
        return batch, m, n, k
    if op.template is Template.attention:
        q, k = types[node.operands[0]], types[node.operands[1]]
        return prod(q.shape[:-2]), q.shape[-2], k.shape[-2], q.shape[-1]
    return None


def kernel_features(kernel: Kernel, types: Mapping[str, TensorType], node_flops, home_bytes: int,
                    runs: Mapping[str, float]) -> KernelFeatures:
    """The kernel's features; `node_flops(node)` and `runs` (recompute factors) come from the
    cost model, so FLOPs here are the cost model's FLOPs."""
    template = "vector"
    matrix = vector = special = 0
    anchor = kernel_anchor(kernel)
    for node in kernel.nodes:
        op = get_op(node.op)
        f = int(node_flops(node) * runs.get(node.name, 1.0))
        if op.template in MATRIX_TEMPLATES or op.kind is OpKind.contraction:
            matrix += f
            if template == "vector" or op.template is Template.attention:
                template = op.template.value if op.template in MATRIX_TEMPLATES else "gemm"
        else:
            vector += f
        special += int(special_count(node, types) * runs.get(node.name, 1.0))
    dtype = (anchor.type.dtype if anchor is not None else kernel.nodes[0].type.dtype).value
    shape = gemm_shape(anchor, types) if anchor is not None else None
    return KernelFeatures(template, dtype, matrix, vector, special, int(home_bytes), shape)
