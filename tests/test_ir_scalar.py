"""Every op's scalar body computes what its torch reference computes.

For each op sample graph of the backend tests (one per op family) and every node whose
structure carries a body (`Structure.expr`), the body is evaluated on the whole iteration
domain by `codesign.ir.scalar.evaluate` — operands read through their maps, gated loads,
indirect loads for the gathers — and compared with the interpreter's result (the torch
reference). Reductions: the body (the load) folded with the combiner over the reduced
dims, then finalized. Inputs are fresh random tensors per seed.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from codesign.ir import get_op, parse_graph, run_graph, structure_of
from codesign.ir.ops import OPS
from codesign.ir.ops.registry import IterKind, Template
from codesign.ir.scalar import Acc, Combiner, Prim, evaluate, format_expr, prims_used
from codesign.ir.types import DType
from helpers import rel_err
from op_samples import OP_SAMPLES, sample_inputs

BODY_TEMPLATES = (Template.elementwise,)


def grid(sizes) -> list[torch.Tensor]:
    if not sizes:
        return []
    return list(torch.meshgrid(*(torch.arange(n) for n in sizes), indexing="ij"))


def gather(tensor: torch.Tensor, coords: list[torch.Tensor], valid: torch.Tensor | None,
           shape: tuple[int, ...]) -> torch.Tensor:
    """`tensor` at integer coordinates (clamped where `valid` is false)."""
    if tensor.dim() == 0:
        return tensor.expand(shape)
    fixed = []
    for c, n in zip(coords, tensor.shape):
        c = torch.as_tensor(c, dtype=torch.long).expand(shape)
        if valid is not None:
            c = torch.where(valid, c, torch.zeros_like(c))
        fixed.append(c.clamp(0, n - 1) if valid is not None else c)
    return tensor[tuple(fixed)]


def evaluate_node(graph, node, env) -> torch.Tensor:
    """The node's result recomputed from its structure's body alone."""
    st = structure_of(graph, node)
    sizes = st.loop_sizes
    points = grid(sizes)
    args = [env[o] for o in node.operands]

    def read(i, index, valid):
        if index is None:
            amap = st.operand_maps[i]
            coords = [r.evaluate(points) for r in amap.results]
        else:
            coords = index
        return gather(args[i], coords, valid, sizes)

    value = evaluate(st.expr, points, sizes, read)
    if st.combiner is None:
        return value.to(node.type.dtype.torch).reshape(node.type.shape)
    reduced = tuple(d for d, it in enumerate(st.domain) if it.kind is IterKind.reduction)
    acc = combine(st.combiner, value, reduced, args[0].dtype)
    if st.combiner.finalize is not None:
        acc = evaluate(st.combiner.finalize, [], acc.shape, read, acc=acc)
    return acc.to(node.type.dtype.torch).reshape(node.type.shape)


def combine(c: Combiner, value: torch.Tensor, dims: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    acc_dtype = c.accumulator(DType.from_torch(dtype)).torch
    x = value.to(acc_dtype)
    if not dims:
        return x
    fold = {Prim.add: lambda t, d: t.sum(d), Prim.mul: lambda t, d: t.prod(d),
            Prim.maximum: lambda t, d: t.amax(d), Prim.minimum: lambda t, d: t.amin(d),
            Prim.logical_or: lambda t, d: t.any(d), Prim.logical_and: lambda t, d: t.all(d)}[c.op]
    for d in sorted(dims, reverse=True):
        x = fold(x, d)
    # the identity must be neutral: combining it once more changes nothing
    from codesign.ir.scalar import torch_function
    return torch_function(c.op)(x, torch.full_like(x, c.identity))


SAMPLES = [s for s in OP_SAMPLES]


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
@pytest.mark.parametrize("seed", [0, 1])
def test_bodies_match_the_reference(sample, seed):
    graph = parse_graph(sample.text)
    inputs, state = sample_inputs(dataclasses.replace(sample, seed=sample.seed + 7919 * seed), graph)
    env = {**dict(zip((i.name for i in graph.runtime_inputs), inputs)), **state}
    checked = 0
    for node in graph.nodes:
        env[node.name] = run_graph_node(graph, node, env)
        st = structure_of(graph, node)
        if st.expr is None or (st.combiner is None and any(d.kind is IterKind.reduction for d in st.domain)):
            continue
        got = evaluate_node(graph, node, env)
        want = env[node.name]
        label = f"%{node.name} = {node.op}: body {format_expr(st.expr)}"
        if want.dtype.is_floating_point:
            tol = 1e-5 if want.dtype in (torch.float32, torch.float64) else 1e-2
            ok = torch.isnan(want) == torch.isnan(got)
            assert bool(ok.all()), label
            finite = ~torch.isnan(want)
            assert rel_err(got[finite].double(), want[finite].double()) <= tol, label
        else:
            assert torch.equal(got, want), label
        checked += 1
    assert checked or not any(structure_of(graph, n).expr is not None for n in graph.nodes)


def run_graph_node(graph, node, env) -> torch.Tensor:
    """One node through the reference interpreter."""
    from codesign.ir import Graph, Input
    from codesign.ir.types import TensorType
    types = graph.types()
    inputs = tuple(Input(o, types[o]) for o in dict.fromkeys(node.operands))
    g = Graph("one", inputs, (node.with_(group=None),), (node.name,))
    (out,) = run_graph(g, [env[i.name] for i in inputs])
    return out


def test_every_elementwise_op_has_a_body_and_a_sample():
    """Each op with the elementwise template appears in a sample and carries a body there
    (else no backend could derive its code)."""
    seen, without = set(), set()
    for sample in OP_SAMPLES:
        graph = parse_graph(sample.text)
        for node in graph.nodes:
            if get_op(node.op).template is Template.elementwise:
                seen.add(node.op)
                if structure_of(graph, node).expr is None:
                    without.add(node.op)
    elementwise = {name for name, op in OPS.items() if op.template is Template.elementwise}
    assert not without, f"elementwise ops without a scalar body: {sorted(without)}"
    assert elementwise <= seen, f"elementwise ops in no op sample: {sorted(elementwise - seen)}"


def test_logaddexp_extremes():
    """Equal infinities and large gaps, where the naive formula fails."""
    a = torch.tensor([math.inf, -math.inf, 80.0, -80.0, 0.0, 1e30])
    b = torch.tensor([math.inf, -math.inf, -80.0, -80.0, 0.0, 1e30])
    text = ("graph @g(%a: f32[6], %b: f32[6]) -> (f32[6]) {\n"
            "  %r = logaddexp(%a, %b) : f32[6]\n  return %r\n}\n")
    graph = parse_graph(text)
    env = {"a": a, "b": b}
    got = evaluate_node(graph, graph.nodes[0], env)
    assert torch.allclose(got, torch.logaddexp(a, b), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("op", ["amax", "amin", "sum", "prod"])
def test_boolean_and_integer_reductions_start_from_their_identity(op):
    """amax / amin on i1 are or / and starting from False / True (a wrong identity makes
    every result True or False); integer extremes start from the type's bounds."""
    text = ("graph @g(%m: i1[3,5], %i: i32[3,5]) -> (i1[3], i32[5]) {\n"
            f"  %a = {op}(%m) {{dims = [1]}} : {'i64' if op in ('sum', 'prod') else 'i1'}[3]\n"
            f"  %b = {op}(%i) {{dims = [0]}} : i32[5]\n  return %a, %b\n}}\n")
    if op in ("sum", "prod"):
        text = text.replace("-> (i1[3]", "-> (i64[3]")
    graph = parse_graph(text)
    m = torch.tensor([[True] * 5, [False] * 5, [True, False, True, True, True]])
    i = torch.randint(-100, 100, (3, 5), dtype=torch.int32)
    env = {"m": m, "i": i}
    for node in graph.nodes:
        want = run_graph_node(graph, node, env)
        env[node.name] = want
        assert torch.equal(evaluate_node(graph, node, env), want), node.name
