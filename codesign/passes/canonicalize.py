"""Canonicalization: small local rewrites applied to a fixpoint, in a fixed order.

Each pattern is a small class with `match_and_rewrite(node, rewriter)` that returns early
when it does not apply and changes the IR only through the `Rewriter` (as in xDSL). The
driver walks the graph in SSA order, tries the patterns in list order on each node until
none applies, and sweeps again until a sweep changes nothing. Every pattern preserves the
interpreter's results exactly; the one caveat is `x + 0.0`, which turns a `-0.0` into
`+0.0` — equal as numbers, so folding it is safe for every consumer here.

Replaced nodes are erased; nodes that merely became unused are left for `dce`.

Fusion groups (a dump after `fuse`, edited and resumed) stay valid: a group whose nodes the
patterns erased is dropped, the others keep their ids (`dce.prune_groups`), and no rewrite
makes a group non-convex. Rerouting a node's readers to one of its operands' values (the
identity, neutral-operand and chain folds) only shortcuts a path that already ran through
the node; a folded constant has no operands; and CSE merges only nodes of the same group, or
two ungrouped ones (`_cse_key`), which have the same operands and so no path between them.

Sweeps: `max_sweeps` (the pass's `max_iterations`) bounds the sweeps that rewrite
something. The sweep that rewrites nothing, which confirms the fixpoint, is not counted,
so one sweep is enough for a graph that one sweep canonicalizes (as MLIR's greedy driver
does not fail the canonicalizer over its confirming iteration). A graph still changing
after that many sweeps raises `CanonicalizeError` (a `PassError`: the command line prints
it as one line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from codesign.ir.graph import Graph, Node
from codesign.ir.ops import OPS, Call, OpDef, OpKind, Trait, UnknownOpError, get_op
from codesign.ir.ops.layout import CONCAT, EXPAND, PERMUTE, RESHAPE, SLICE
from codesign.ir.ops.pointwise import CAST
from codesign.ir.ops.source import FULL
from codesign.ir.printer import format_attrs
from codesign.ir.types import DType, TensorType
from codesign.passes.dce import prune_groups
from codesign.passes.manager import PassContext, PassError
from codesign.passes.registry import Pass, register_pass


class Rewriter:
    """A graph under rewriting: patterns read it and change it only through these methods.

    A pattern may change only the node it was given: replace its value by an existing one
    (`replace_all_uses`), or swap it for a new node defining the same name and type
    (`replace_node`). Uses of a replaced value are renamed lazily, as the driver reaches them.
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self._nodes: dict[str, Node] = {n.name: n for n in graph.nodes}  # keeps SSA order
        self._types = graph.types()
        self._alias: dict[str, str] = {}
        self._available: dict[tuple, str] = {}  # value-numbering table for CSE
        self._current: str | None = None
        self.modified = False  # set by the last rewrite call
        self.changed = False  # anything rewritten in this sweep

    # -- reading ---------------------------------------------------------------------------
    def resolve(self, value: str) -> str:
        while value in self._alias:
            value = self._alias[value]
        return value

    def producer(self, value: str) -> Node | None:
        """The node defining `value` (None for a graph input)."""
        return self._nodes.get(self.resolve(value))

    def type_of(self, value: str) -> TensorType:
        return self._types[self.resolve(value)]

    def equivalent(self, node: Node) -> str | None:
        """An earlier value computed by the same pure op on the same operands, if any."""
        key = _cse_key(node)
        found = self._available.get(key) if key is not None else None
        return found if found != node.name else None

    # -- writing ---------------------------------------------------------------------------
    def replace_all_uses(self, node: Node, value: str) -> None:
        """Every use of `node` reads `value` instead; `node` is erased."""
        self._check_current(node)
        value = self.resolve(value)
        if self._types[value] != node.type:
            raise AssertionError(f"canonicalize: replacing %{node.name}: {node.type} "
                                 f"by %{value}: {self._types[value]} changes the type")
        self._alias[node.name] = value
        del self._nodes[node.name]
        self._mark()

    def replace_node(self, node: Node, new: Node) -> None:
        """Swap `node` for `new`, which defines the same name with the same type."""
        self._check_current(node)
        if new.name != node.name or new.type != node.type:
            raise AssertionError(f"canonicalize: %{node.name} must keep its name and type")
        self._nodes[node.name] = new
        self._mark()

    def _check_current(self, node: Node) -> None:
        if node.name != self._current:
            raise AssertionError(f"canonicalize: a pattern may only rewrite the node it matched "
                                 f"(%{self._current}), not %{node.name}")

    def _mark(self) -> None:
        self.modified = self.changed = True

    # -- the driver's side -----------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._nodes)

    def begin(self, name: str) -> Node:
        """Make `name` the node patterns may rewrite, its operands renamed to current values."""
        node = self._nodes[name]
        operands = tuple(self.resolve(o) for o in node.operands)
        if operands != node.operands:
            node = self._nodes[name] = node.with_(operands=operands)
        self._current = name
        return node

    def current(self, name: str) -> Node | None:
        return self._nodes.get(name)

    def remember(self, node: Node) -> None:
        key = _cse_key(node)
        if key is not None:
            self._available.setdefault(key, node.name)

    def result(self) -> Graph:
        outputs = tuple(self.resolve(o) for o in self.graph.outputs)
        replaced = {name: self.resolve(name) for name in self._alias}
        return prune_groups(self.graph.with_nodes(self._nodes.values(), outputs), replaced)


def _cse_key(node: Node) -> tuple | None:
    """What makes two nodes compute the same value; None for nodes never merged (regions).

    The node's fusion group is part of the key: merging a node into an equal one of another
    group would make the second group's readers read the first group, which can close a
    cycle between the groups (a group that feeds the first one). Within one kernel (or
    between two ungrouped nodes, whose operands are the same) a merge only removes edges.
    Attributes compare as printed, which keeps a NaN's sign (`-nan` and `nan` stay apart).
    """
    if node.regions:
        return None
    try:
        attrs = get_op(node.op).attr_values(node.attrs)
    except UnknownOpError:
        return None
    return node.op, node.operands, format_attrs(attrs), str(node.type), node.group



# -- patterns ------------------------------------------------------------------------------
class Pattern:
    """A rewrite of one node; `ops` are the ops (their OpDefs) it can match (empty: any)."""

    name: ClassVar[str]
    ops: ClassVar[frozenset[OpDef]] = frozenset()

    def match_and_rewrite(self, node: Node, rewriter: Rewriter) -> None:
        raise NotImplementedError


def _full_value(rewriter: Rewriter, value: str) -> int | float | bool | None:
    """The fill value when `value` is a `full` constant, else None."""
    producer = rewriter.producer(value)
    if producer is None or get_op(producer.op) is not FULL:
        return None
    return producer.attrs.get("value")


class RemoveIdentityLayout(Pattern):
    """reshape/expand to the same shape, identity permute, full-range slice, concat of one,
    cast to the same dtype: the result is the operand."""

    name = "remove-identity-layout"
    ops = frozenset({RESHAPE, PERMUTE, EXPAND, SLICE, CONCAT, CAST})

    def match_and_rewrite(self, node: Node, rewriter: Rewriter) -> None:
        if len(node.operands) != 1:
            return
        source = node.operands[0]
        src = rewriter.type_of(source)
        if src != node.type:
            return
        op = get_op(node.op)
        attrs = op.attr_values(node.attrs)
        if op in (RESHAPE, EXPAND) and tuple(attrs["shape"]) != src.shape:
            return
        if op is PERMUTE and tuple(attrs["perm"]) != tuple(range(src.rank)):
            return
        if op is SLICE:
            full_range = (0, src.shape[attrs["dim"]], 1)
            if (attrs["start"], attrs["end"], attrs["step"]) != full_range:
                return
        if op is CAST and attrs["dtype"] != src.dtype.value:
            return
        rewriter.replace_all_uses(node, source)


class FoldReshapeOfReshape(Pattern):
    """reshape(reshape(x)) → reshape(x): row-major order is kept by both."""

    name = "fold-reshape-of-reshape"
    ops = frozenset({RESHAPE})

    def match_and_rewrite(self, node: Node, rewriter: Rewriter) -> None:
        inner = rewriter.producer(node.operands[0])
        if inner is None or get_op(inner.op) is not RESHAPE:
            return
        rewriter.replace_node(node, node.with_(operands=(inner.operands[0],)))


class FoldPermuteOfPermute(Pattern):
    """permute(permute(x, p1), p2) → permute(x, p) with p[i] = p1[p2[i]]."""

    name = "fold-permute-of-permute"
    ops = frozenset({PERMUTE})

    def match_and_rewrite(self, node: Node, rewriter: Rewriter) -> None:
        inner = rewriter.producer(node.operands[0])
        if inner is None or get_op(inner.op) is not PERMUTE:
            return
        p1, p2 = tuple(inner.attrs["perm"]), tuple(node.attrs["perm"])
        composed = tuple(p1[i] for i in p2)
        rewriter.replace_node(node, node.with_(operands=(inner.operands[0],),
                                               attrs={**node.attrs, "perm": composed}))


class FoldNeutralOperand(Pattern):
    """x op e → x for a binary op's identity e (`OpDef.identity`: x * 1, x + 0; on either
    side when the op is commutative), when x already has the result's type, so that
    dropping the constant changes neither shape (broadcast) nor dtype."""

    name = "fold-neutral-operand"

    def match_and_rewrite(self, node: Node, rewriter: Rewriter) -> None:
        op = get_op(node.op)
        neutral = op.identity
        if neutral is None or len(node.operands) != 2:
            return
        sides = (node.operands, node.operands[::-1]) if op.has(Trait.commutative) else (node.operands[::-1],)
        for const, other in sides:
            value = _full_value(rewriter, const)
            if isinstance(value, bool) or value is None or value != neutral:
                continue
            if rewriter.type_of(other) == node.type:
                rewriter.replace_all_uses(node, other)
                return


class FoldScalarConstants(Pattern):
    """A pointwise op whose operands are all rank-0 `full`s becomes a `full`, computed by
    the op's own reference `run`, so the folded value is bit-identical.

    The folded constant is ungrouped, deliberately, whatever group the node it replaces was
    in: `fuse` leaves scalar constants out of groups too (`fusion.partition.is_free_constant`),
    since every backend inlines them into the kernels that read them. Ungrouping cannot make
    a group non-convex (the constant reads nothing), and a group whose nodes all fold away
    is dropped.
    """

    name = "fold-scalar-constants"

    def match_and_rewrite(self, node: Node, rewriter: Rewriter) -> None:
        if not node.operands or node.regions or node.type.rank != 0:
            return
        op = get_op(node.op)
        if op.kind is not OpKind.pointwise:
            return
        producers = [rewriter.producer(o) for o in node.operands]
        if any(p is None or get_op(p.op) is not FULL or p.type.rank != 0 for p in producers):
            return
        args = [FULL.run(Call((), FULL.attr_values(p.attrs), p.type)) for p in producers]
        try:
            result = op.run(Call(args, op.attr_values(node.attrs), node.type))
        except Exception:  # noqa: BLE001 - leave a failing op for run time to report
            return
        value = _python_scalar(result.to(node.type.dtype.torch).item(), node.type.dtype)
        rewriter.replace_node(node, Node(node.name, FULL.name, (), node.type, {"value": value},
                                         loc=node.loc, group=None))


def _python_scalar(value: object, dtype: DType) -> int | float | bool:
    if dtype is DType.i1:
        return bool(value)
    return float(value) if dtype.is_float else int(value)


class EliminateCommonSubexpression(Pattern):
    """A pure node equal to an earlier one (op, operands, attributes, type; nodes with
    regions excluded) is replaced by it. This also dedupes identical `full` constants."""

    name = "cse"

    def match_and_rewrite(self, node: Node, rewriter: Rewriter) -> None:
        earlier = rewriter.equivalent(node)
        if earlier is not None:
            rewriter.replace_all_uses(node, earlier)


PATTERNS: tuple[Pattern, ...] = (
    RemoveIdentityLayout(),
    FoldReshapeOfReshape(),
    FoldPermuteOfPermute(),
    FoldNeutralOperand(),
    FoldScalarConstants(),
    EliminateCommonSubexpression(),
)
"""Every canonicalization pattern, in the order the driver tries them."""

_MAX_REWRITES_PER_NODE = 64


class CanonicalizeError(PassError):
    """The patterns did not reach a fixpoint within the sweeps `max_iterations` allows."""


def apply_patterns(graph: Graph, patterns: Sequence[Pattern] = PATTERNS,
                   max_sweeps: int = 10) -> Graph:
    """Apply `patterns` to a fixpoint (regions first, each on its own).

    At most `max_sweeps` sweeps may rewrite something; one more, which must rewrite nothing,
    confirms the fixpoint. A graph still changing then raises `CanonicalizeError`.
    """
    if max_sweeps < 1:
        raise ValueError(f"max_sweeps must be at least 1, got {max_sweeps}")
    graph = graph.with_nodes(
        n.with_(regions=tuple(apply_patterns(r, patterns, max_sweeps) for r in n.regions))
        if n.regions else n for n in graph.nodes)
    for _ in range(max_sweeps + 1):  # the last sweep only confirms the fixpoint
        rewriter = Rewriter(graph)
        for name in rewriter.names():
            _rewrite_node(rewriter, name, patterns)
        graph = rewriter.result()
        if not rewriter.changed:
            return graph
    raise CanonicalizeError(
        f"canonicalize did not reach a fixpoint over @{graph.name} in {max_sweeps} rewriting "
        f"sweep{'s' if max_sweeps != 1 else ''} (max_iterations={max_sweeps}): raise max_iterations, "
        f"or two patterns undo each other")


def _rewrite_node(rewriter: Rewriter, name: str, patterns: Sequence[Pattern]) -> None:
    node = rewriter.begin(name)
    for _ in range(_MAX_REWRITES_PER_NODE):
        for pattern in patterns:
            if pattern.ops and OPS.get(node.op) not in pattern.ops:
                continue
            rewriter.modified = False
            pattern.match_and_rewrite(node, rewriter)
            if rewriter.modified:
                break
        else:
            rewriter.remember(node)
            return
        current = rewriter.current(name)
        if current is None:  # replaced by another value
            return
        node = current
    raise RuntimeError(f"canonicalize: patterns keep rewriting %{name}; two patterns undo each other")


@register_pass
@dataclass(frozen=True)
class Canonicalize(Pass):
    """Run the canonicalization patterns to a fixpoint."""

    name: ClassVar[str] = "canonicalize"
    summary: ClassVar[str] = ("fold identity layout ops, reshape/permute chains, x*1, x+0 and "
                              "scalar constants; dedupe equal nodes (CSE)")

    max_iterations: int = field(default=10, metadata={
        "doc": "rewriting sweeps before giving up with an error (the sweep confirming the fixpoint is free)"})
    disable_patterns: tuple[str, ...] = field(
        default=(), metadata={"doc": "pattern names to skip: " + ", ".join(p.name for p in PATTERNS)})

    def __post_init__(self) -> None:
        known = {p.name for p in PATTERNS}
        unknown = [n for n in self.disable_patterns if n not in known]
        if unknown:
            raise ValueError(f"unknown pattern(s) {', '.join(unknown)} in disable_patterns "
                             f"(patterns: {', '.join(sorted(known))})")
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be at least 1, got {self.max_iterations}")

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        patterns = [p for p in PATTERNS if p.name not in self.disable_patterns]
        return apply_patterns(graph, patterns, self.max_iterations)
