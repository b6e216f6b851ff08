"""What a kernel does, in the terms an efficiency model needs.

The roofline needs only FLOPs and bytes. Measured silicon also depends on what kind of work
the FLOPs are (matrix units or vector lanes, transcendental functions on the special-function
units), on the shape of a contraction (a GEMM's tiles fill the chip in waves, and a short
reduction dimension never fills the pipeline; a convolution is a GEMM over the im2col matrix
it builds first), and on a fixed cost per kernel. A
`KernelFeatures` records exactly these, once, from the IR; the calibrated model
(`codesign.cost.calibration`) prices them and the calibration fit (`codesign.calibrate`)
learns from them, so both read one definition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from math import prod
from typing import Mapping

from codesign.ir.graph import Node
from codesign.ir.kernels import Kernel, kernel_anchor
from codesign.ir.ops import OpKind, Template, get_op, node_structure
from codesign.ir.scalar import FLOAT_ONLY, Apply, walk
from codesign.ir.types import TensorType

# templates whose FLOPs run on the matrix units, each with its own fitted efficiency
MATRIX_TEMPLATES = (Template.gemm, Template.attention, Template.conv, Template.moe)
ROW_TEMPLATES = (Template.reduce, Template.variance, Template.softmax, Template.norm, Template.group_norm,
                 Template.pool, Template.argminmax, Template.scan)
VECTOR_CLASSES = ("vector", "row", "pool", "group_norm")  # kernel classes without a matrix anchor


@dataclass(frozen=True)
class KernelFeatures:
    """One kernel's work: the figures the cost model prices and the calibration fits."""

    template: str  # gemm, attention, conv, depthwise, moe; pool, group_norm, "row" (other reductions,
    # norms, softmax); "vector" (see `kernel_class`)
    dtype: str  # the anchor's dtype (the kernel's first compute node without an anchor)
    matrix_flops: int  # FLOPs of the matrix-unit template (0 for a vector kernel)
    vector_flops: int  # every other FLOP
    special: int  # transcendental evaluations (exp, log, tanh, erf, sigmoid, sqrt, ...)
    home_bytes: int  # bytes read from and written to the home tier (re-reads included)
    gemm: tuple[int, int, int, int] | None = None  # (batch, M, N, K) of a GEMM, attention or conv anchor
    strided_bytes: int = 0  # of home_bytes, those read across the innermost loop (a transpose)
    prologue_flops: int = 0  # of vector_flops, those of ops fused before a matrix op's operand
    arguments: int = 0  # tensors the kernel is launched with (its outside inputs and outputs)
    epilogue_flops: int = 0  # of vector_flops, those applied to a matrix op's result in its kernel
    operand_bytes: tuple[int, ...] = ()  # size of each outside input and output (for cache reuse)
    im2col_bytes: int = 0  # bytes of the im2col matrix a conv anchor builds before its GEMM (`im2col_bytes`)
    channels_first: bool = False  # a 2-D conv anchor on NCHW data (a library's fast kernels want NHWC)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "KernelFeatures":
        gemm = data.get("gemm")
        return cls(str(data["template"]), str(data["dtype"]), int(data["matrix_flops"]),
                   int(data["vector_flops"]), int(data["special"]), int(data["home_bytes"]),
                   tuple(int(v) for v in gemm) if gemm else None, int(data.get("strided_bytes", 0)),
                   int(data.get("prologue_flops", 0)), int(data.get("arguments", 0)),
                   int(data.get("epilogue_flops", 0)), tuple(int(v) for v in data.get("operand_bytes", ())),
                   int(data.get("im2col_bytes", 0)), bool(data.get("channels_first", False)))


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
    expr = node_structure(node, types).expr
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
    if op.template is Template.conv and not is_depthwise(node, types):
        return conv_gemm(node, types)
    return None


def conv_gemm(node: Node, types: Mapping[str, TensorType]) -> tuple[int, int, int, int]:
    """(batch, M, N, K) of a conv as a GEMM: per image and group, the weights viewed as a
    [F/groups, C/groups · taps] matrix times the im2col matrix [C/groups · taps, output pixels].
    Read from the weight [F, C/groups, *kernel] and the output's size, so any layout (NC*, N*C)."""
    w = types[node.operands[1]].shape
    groups = int(get_op(node.op).attr_values(node.attrs)["groups"])
    images, features = node.type.shape[0], w[0]
    pixels = node.type.numel // max(images * features, 1)
    return images * groups, features // groups, pixels, prod(w[1:])


def is_depthwise(node: Node, types: Mapping[str, TensorType]) -> bool:
    """A conv with one input channel per group: each output plane is a few taps of one input
    plane, a vector kernel (a GEMM with K = taps would be all overhead)."""
    if get_op(node.op).template is not Template.conv:
        return False
    groups = int(get_op(node.op).attr_values(node.attrs)["groups"])
    return groups > 1 and types[node.operands[1]].shape[1] == 1


def im2col_bytes(node: Node, types: Mapping[str, TensorType]) -> int:
    """Bytes of the im2col matrix a conv builds (each input pixel copied once per tap that
    reads it, padding included) before multiplying it: none for a depthwise conv (no GEMM) or
    a 1x1 conv with unit stride and no padding (its input already is the matrix)."""
    if get_op(node.op).template is not Template.conv or is_depthwise(node, types):
        return 0
    attrs = get_op(node.op).attr_values(node.attrs)
    taps = types[node.operands[1]].shape[2:]
    if all(k == 1 for k in taps) and all(s == 1 for s in attrs["stride"]) and not any(attrs["padding"]):
        return 0
    batch, _, pixels, k = conv_gemm(node, types)
    return batch * pixels * k * node.type.dtype.itemsize


# the class a kernel is priced as (its `KernelFeatures.template`), and the class whose fitted
# figures stand in for it where a calibration has none of its own
CLASS_FALLBACK = {"depthwise": "conv", "conv": "gemm", "pool": "row", "group_norm": "row", "row": "vector"}


def class_chain(template: str) -> tuple[str, ...]:
    """`template`, then the classes whose figures stand in for it, most specific first."""
    chain = [template]
    while chain[-1] in CLASS_FALLBACK:
        chain.append(CLASS_FALLBACK[chain[-1]])
    return tuple(chain)


def kernel_class(op_template: Template, node: Node, types: Mapping[str, TensorType]) -> str:
    """The class a kernel anchored (or dominated) by a node of `op_template` is priced as."""
    if op_template is Template.conv and is_depthwise(node, types):
        return "depthwise"
    if op_template in MATRIX_TEMPLATES:
        return op_template.value
    if op_template in (Template.pool, Template.group_norm):
        return op_template.value
    return "row" if op_template in ROW_TEMPLATES else "vector"




def _is_matrix(node: Node) -> bool:
    op = get_op(node.op)
    return op.template in MATRIX_TEMPLATES or op.kind is OpKind.contraction


STRIDED_WINDOW = 1024
"""Consecutive iterations a kernel runs as one block (the Triton backend's flat tile; on a CPU,
iterations whose lines stay cached together)."""
SECTOR_BYTES = 32  # the unit a GPU's memory system moves (a quarter of a line)


def strided_share(node: Node, operand: int, types: Mapping[str, TensorType]) -> float:
    """`access_share` of the node's op at its operand and result types (memoised: fusion
    prices many candidate kernels holding the same nodes, and each evaluation walks 1,024
    iterations)."""
    attrs = tuple(sorted((k, _hashable(v)) for k, v in node.attrs.items()))
    return access_share(node.op, attrs, tuple(types[o] for o in node.operands), node.type, operand)


def _hashable(value):
    """An attribute value as a memo key: lists as tuples (what the attribute specs take)."""
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


@lru_cache(maxsize=4096)
def access_share(op_name: str, attrs: tuple, operands: tuple[TensorType, ...], result: TensorType,
                 operand: int) -> float:
    """The share of operand `operand`'s read that costs as a transpose: of the sectors one block
    of `STRIDED_WINDOW` consecutive iterations of the node's domain reads, those beyond what a
    contiguous read of as many elements needs, over the most there could be. Evaluated on the
    access map itself (on index vectors), so a floordiv / mod map (pixel shuffle) counts as it
    reads. NCHW data read in NHWC order with 64 channels: a block walks 16 pixels of 64
    planes, 32 bytes of each — whole sectors, share 0; with 512 channels, 2 pixels of 512
    planes (share 0.47); a transpose whose rows are longer than the block touches a new sector
    at every iteration (share 1); a contiguous or broadcast read, 0. A data-dependent read (a
    gather) is not priced as strided."""
    op = get_op(op_name)
    if op.structure is None:
        return 0.0
    st = op.structure(list(operands), result, op.attr_values(dict(attrs)))
    amap = st.operand_maps[operand] if operand < len(st.operand_maps) else None
    if amap is None or not st.domain:
        return 0.0
    source = operands[operand]
    itemsize = max(source.dtype.itemsize, 1)
    sizes = [max(d.size, 1) for d in st.domain]
    window = min(STRIDED_WINDOW, prod(sizes))
    needed = -(-window * itemsize // SECTOR_BYTES)
    if window <= needed:
        return 0.0
    import numpy as np  # here: the IR and its cost model load without numpy until a kernel is priced
    rest, index = np.arange(window, dtype=np.int64), []
    for size in reversed(sizes):  # the iteration points of one block, innermost fastest
        index.append(rest % size)
        rest = rest // size
    index.reverse()
    strides = [prod(source.shape[i + 1:]) for i in range(len(source.shape))]
    address = sum((np.asarray(c, dtype=np.int64) * s for c, s in zip(amap.evaluate(index), strides)),
                  np.zeros(window, dtype=np.int64))
    sectors = np.unique(address * itemsize // SECTOR_BYTES).size
    return min(1.0, max(0.0, (sectors - needed) / (window - needed)))


def strided_bytes(kernel: Kernel, types: Mapping[str, TensorType]) -> int:
    """Bytes of the kernel's outside inputs read across the innermost loop (a transpose):
    an outside input upstream of any vector op that reads its operand with a stride, each
    counted once, at its `strided_share`. Matrix templates stage their operands in tiles and read either layout at
    full speed, so they are left out."""
    producers = {n.name: n for n in kernel.nodes}
    outside = set(kernel.inputs)
    strided: dict[str, float] = {}  # outside input -> its largest strided share
    for node in kernel.nodes:
        if _is_matrix(node):
            continue
        for i, operand in enumerate(node.operands):
            if types[operand].numel <= 1:
                continue
            share = strided_share(node, i, types)
            if share <= 0.0:
                continue
            stack = [operand]  # the outside inputs this strided read ultimately comes from
            seen: set[str] = set()
            while stack:
                name = stack.pop()
                if name in seen:
                    continue
                seen.add(name)
                if name in outside:
                    strided[name] = max(strided.get(name, 0.0), share)
                elif name in producers and not _is_matrix(producers[name]):
                    stack.extend(producers[name].operands)
    return sum(round(types[name].nbytes * share) for name, share in sorted(strided.items()))


def prologue_nodes(kernel: Kernel) -> set[str]:
    """Nodes whose value flows (inside the kernel) into a matrix op's operand: a fused
    prologue, which the matrix template evaluates again for every tile that reads it."""
    producers = {n.name: n for n in kernel.nodes}
    prologue: set[str] = set()
    stack = [o for n in kernel.nodes if _is_matrix(n) for o in n.operands if o in producers]
    while stack:
        name = stack.pop()
        if name in prologue or _is_matrix(producers[name]):
            continue
        prologue.add(name)
        stack.extend(o for o in producers[name].operands if o in producers)
    return prologue


def kernel_features(kernel: Kernel, types: Mapping[str, TensorType], node_flops, home_bytes: int,
                    runs: Mapping[str, float]) -> KernelFeatures:
    """The kernel's features; `node_flops(node)` and `runs` (recompute factors) come from the
    cost model, so FLOPs here are the cost model's FLOPs."""
    template = "vector"
    matrix = vector = special = prologue_flops = epilogue_flops = staged = 0
    has_matrix = any(_is_matrix(n) for n in kernel.nodes)
    anchor = kernel_anchor(kernel)
    prologue = prologue_nodes(kernel)
    for node in kernel.nodes:
        op = get_op(node.op)
        f = int(node_flops(node) * runs.get(node.name, 1.0))
        if _is_matrix(node):
            matrix += f
            staged += im2col_bytes(node, types)
            if template in VECTOR_CLASSES or op.template is Template.attention:
                template = kernel_class(op.template, node, types) if op.template in MATRIX_TEMPLATES else "gemm"
        else:
            vector += f
            if node.name in prologue:
                prologue_flops += f
            elif has_matrix:
                epilogue_flops += f
            if op.template in ROW_TEMPLATES and template == "vector":
                template = kernel_class(op.template, node, types)
        special += int(special_count(node, types) * runs.get(node.name, 1.0))
    dtype = (anchor.type.dtype if anchor is not None else kernel.nodes[0].type.dtype).value
    shape = gemm_shape(anchor, types) if anchor is not None else None
    arguments = len(kernel.inputs) + len(kernel.outputs)
    sizes = tuple(sorted((types[v].nbytes for v in (*kernel.inputs, *kernel.outputs) if types[v].numel > 1),
                         reverse=True))
    channels_first = (anchor is not None and get_op(anchor.op) is get_op("conv")  # conv_nhwc reads NHWC
                      and types[anchor.operands[0]].rank == 4)
    return KernelFeatures(template, dtype, matrix, vector, special, int(home_bytes), shape,
                          strided_bytes(kernel, types), prologue_flops, arguments, epilogue_flops, sizes, staged,
                          channels_first)
