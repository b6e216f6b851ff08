"""Op definitions: what an op means, once, for every pass and backend.

An `OpDef` gives an op's operand and attribute signature, its shape inference, its
reference semantics in torch (the numerics oracle), and its *structure*: the iteration
domain, one indexing map per operand and the result, and the scalar body — the same view
as MLIR's `linalg.generic`. Tiling, fusion legality, traffic counting and code generation
read the structure, so adding an op means adding its maps and its body here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from enum import Enum
from math import prod
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from codesign.ir.affine import AffineMap
from codesign.ir.scalar import Combiner, Expr
from codesign.ir.types import TensorType
from codesign.lazy import LazyModule

if TYPE_CHECKING:
    import torch
else:
    torch = LazyModule("torch")


class OpKind(str, Enum):
    """Broad family of an op; passes use it to pick rules without naming every op."""

    pointwise = "pointwise"
    reduction = "reduction"
    contraction = "contraction"
    normalization = "normalization"
    layout = "layout"
    source = "source"
    window = "window"
    gather = "gather"
    region = "region"


class Trait(str, Enum):
    """Properties passes and backends ask of an op instead of its name."""

    commutative = "commutative"  # a binary op whose operands may be swapped
    may_read_outside = "may_read_outside"  # maps may leave an operand's bounds; reads are guarded
    anchor = "anchor"  # a heavy op a fusion group forms around (one per kernel)
    quiet = "quiet"  # costs nothing but addressing: never worth a kernel of its own
    maximizing = "maximizing"  # keeps the largest candidate (argmax, max_pool; not: argmin, avg_pool)
    log_result = "log_result"  # yields the log of its template's result (log_softmax)
    centered = "centered"  # a norm that subtracts the mean first (layer_norm; not: rms_norm)


class Template(str, Enum):
    """The named code template a backend picks for an op (chosen by this, never by name)."""

    elementwise = "elementwise"  # a scalar body at every point (pointwise, layout, source, gather)
    reduce = "reduce"  # a combiner over the reduced dims
    variance = "variance"  # two-pass mean / variance
    softmax = "softmax"
    norm = "norm"  # layer / RMS norm over trailing rows
    group_norm = "group_norm"
    gemm = "gemm"  # matmul, linear
    conv = "conv"
    attention = "attention"
    pool = "pool"
    argminmax = "argminmax"
    scan = "scan"  # cumsum
    moe = "moe"


class IterKind(str, Enum):
    parallel = "parallel"
    reduction = "reduction"


@dataclass(frozen=True)
class IterDim:
    """One loop of an op's iteration domain."""

    size: int
    kind: IterKind = IterKind.parallel


@dataclass(frozen=True)
class Structure:
    """The `linalg.generic` view of an op.

    `operand_maps[i]` maps an iteration point to operand i's index; `None` marks an
    indirect (data-dependent) access, e.g. the table read of an embedding. `body` names the
    computation (for a pointwise op, the op itself); `expr` is the scalar body at one point
    for elementwise ops (`codesign.ir.scalar`), `combiner` how a reduction combines.
    """

    domain: tuple[IterDim, ...]
    operand_maps: tuple[AffineMap | None, ...]
    result_map: AffineMap
    body: str
    expr: Expr | None = None
    combiner: Combiner | None = None

    @property
    def loop_sizes(self) -> tuple[int, ...]:
        return tuple(d.size for d in self.domain)

    @property
    def points(self) -> int:
        return prod(self.loop_sizes)


class ShapeError(ValueError):
    """Operands or attributes that do not fit the op; the verifier names the node."""


@dataclass(frozen=True)
class AttrSpec:
    """Type and default of one attribute; `required` attrs have no default."""

    kinds: tuple[type, ...]
    required: bool = False
    default: object = None
    doc: str = ""


@dataclass(frozen=True)
class Call:
    """Everything a reference implementation needs to run one node."""

    args: Sequence[torch.Tensor]
    attrs: Mapping[str, object]
    type: TensorType
    regions: Sequence[Callable[..., torch.Tensor]] = ()


Infer = Callable[[Sequence[TensorType], Mapping[str, object]], TensorType | None]  # None: source op
Run = Callable[[Call], "torch.Tensor"]
RunInto = Callable[[Call, "torch.Tensor"], None]  # writes the result into a tensor of the node's shape and dtype
StructureFn = Callable[[Sequence[TensorType], TensorType, Mapping[str, object]], Structure]
FlopsFn = Callable[[Sequence[TensorType], TensorType, Mapping[str, object]], int]


@dataclass(frozen=True, eq=False)
class OpDef:
    """One op, defined once; compared and hashed by identity (`get_op(node.op) is RESHAPE`)."""

    name: str
    kind: OpKind
    min_operands: int
    max_operands: int | None  # None: variadic
    infer: Infer
    run: Run
    structure: StructureFn
    flops: FlopsFn
    attrs: Mapping[str, AttrSpec] = field(default_factory=dict)
    regions: int = 0
    doc: str = ""
    template: Template | None = None
    traits: frozenset[Trait] = frozenset()
    identity: float | int | None = None  # x op identity == x (a binary op's neutral element)
    pointer_operands: tuple[int, ...] = ()  # operands a template reads whole, by pointer
    run_into: RunInto | None = None  # `run`, writing a given tensor (torch's out=): no copy into a kernel's buffer

    def has(self, trait: Trait) -> bool:
        return trait in self.traits

    def attr_values(self, given: Mapping[str, object]) -> dict[str, object]:
        """The given attributes with defaults filled in."""
        values = {k: spec.default for k, spec in self.attrs.items() if not spec.required}
        values.update(given)
        return values


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} is defined twice")
    OPS[op.name] = op
    return op


class UnknownOpError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        close = difflib.get_close_matches(name, OPS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownOpError(f"unknown op {name!r}{hint}") from None


def node_structure(node, types: Mapping[str, TensorType]) -> Structure:
    """The structure (domain, maps, body) of one graph node, its operand types from `types`."""
    op = get_op(node.op)
    return op.structure([types[o] for o in node.operands], node.type, op.attr_values(node.attrs))


def elementwise_flops(per_element: int = 1) -> FlopsFn:
    return lambda operands, result, attrs: per_element * result.numel


def no_flops(operands, result, attrs) -> int:
    return 0
