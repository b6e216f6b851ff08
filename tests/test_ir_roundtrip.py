"""Text form round trip: print → parse → print is the identity, and parse(print(g)) == g.

The sample graphs below use every registered op (a test asserts that coverage), every kind
of attribute value, tiers, rank-0 types, every input kind and a `moe` node with a region.
Random graphs from hypothesis must also round-trip, verify and run in the interpreter.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codesign.ir.builder import GraphBuilder
from codesign.ir import (OPS, DType, Graph, Input, InputKind, Node, TensorType, parse_graph,
                         print_graph, run_graph, structure_of, verify)

f32, f16, i64, i1 = DType.f32, DType.f16, DType.i64, DType.i1


def T(*shape, dtype=f32, tier=None):
    return TensorType(tuple(shape), dtype, tier)


def inp(b: GraphBuilder, name, type_, kind=InputKind.input, source=None):
    if kind is not InputKind.input and source is None:
        source = name  # the parser's default: the state-dict key is the input's name
    return b.add_input(Input(name, type_, kind, source))


def with_tiers(g: Graph, tiers: dict[str, str]) -> Graph:
    return g.with_nodes(replace(n, type=replace(n.type, tier=tiers[n.name])) if n.name in tiers else n
                        for n in g.nodes)


# ------------------------------------------------------------------- sample graphs
def pointwise_graph() -> Graph:
    b = GraphBuilder("pointwise")
    x = inp(b, "x", T(2, 3, 4))
    y = inp(b, "model.y", T(3, 4), InputKind.param, "model.layers.0.y")
    outs = []
    for op in ("neg", "abs", "exp", "log", "sqrt", "rsqrt", "reciprocal", "tanh", "sigmoid", "erf",
               "sin", "cos", "floor", "ceil", "sign", "relu", "silu", "hardswish"):
        outs.append(b.add(op, [x]))
    outs.append(b.add("gelu", [x], {"approximate": "tanh"}))
    outs.append(b.add("clamp", [x], {"min": -0.5, "max": None}))
    outs.append(b.add("clamp", [x], {"max": 2}))
    outs.append(b.add("tril", [x], {"diagonal": -1}))
    outs.append(b.add("triu", [x], {"diagonal": 1}))
    outs.append(b.add("cast", [x], {"dtype": "f16"}))
    b.loc = "block.0.act"
    for op in ("add", "sub", "mul", "remainder", "pow", "maximum", "minimum", "logaddexp"):
        outs.append(b.add(op, [x, y]))
    outs.append(b.add("div", [x, y], {"rounding_mode": "floor"}))
    cmp = [b.add(op, [x, y]) for op in ("eq", "ne", "lt", "le", "gt", "ge")]
    b.loc = None
    outs.append(b.add("logical_and", cmp[:2]))
    outs.append(b.add("logical_or", cmp[2:4]))
    outs.append(b.add("logical_not", [cmp[4]]))
    outs.append(b.add("where", [cmp[5], x, y]))
    half = b.constant(0.5, f32)
    ramp = b.add("iota", [], {"start": -2, "step": 0.5}, type=T(4))
    outs.append(b.add("add", [b.add("mul", [x, half]), ramp]))
    g = b.finish(outs)
    return with_tiers(g, {outs[0]: "sram", half: "pmu", outs[-1]: "hbm"})


def reduction_graph() -> Graph:
    b = GraphBuilder("reductions")
    x = inp(b, "x", T(2, 6, 4))
    w = inp(b, "ln.weight", T(4), InputKind.param)
    bias = inp(b, "ln.bias", T(4), InputKind.param, "encoder.ln.bias")
    gw = inp(b, "gn.w", T(6), InputKind.const)
    gb = inp(b, "gn.b", T(6), InputKind.const, "consts.gn_b")
    mean = inp(b, "bn.running_mean", T(6), InputKind.buffer)
    var = inp(b, "bn.running_var", T(6), InputKind.buffer, "bn.running_var_")
    outs = [b.add("sum", [x], {"dims": (0, 2)}), b.add("mean", [x], {"dims": (1,), "keepdim": True}),
            b.add("amax", [x], {"dims": (2,)}), b.add("amin", [x], {"dims": (0, 1)}),
            b.add("prod", [x], {"dims": (1,), "keepdim": False}),
            b.add("sum", [x], {"dims": (0, 1, 2)}),  # rank-0 result
            b.add("var", [x], {"dims": (2,), "correction": 0}),
            b.add("any", [b.add("gt", [x, b.constant(0.0, f32)])], {"dims": (1,)}),
            b.add("argmax", [x], {"dim": 1}), b.add("argmin", [x], {"dim": 0, "keepdim": True}),
            b.add("cumsum", [x], {"dim": 2}), b.add("softmax", [x], {"dim": 2}),
            b.add("log_softmax", [x], {"dim": 0}),
            b.add("layer_norm", [x, w, bias], {"normalized_rank": 1, "eps": 1e-05}),
            b.add("rms_norm", [x, w], {"normalized_rank": 1, "eps": 1e-06}),
            b.add("group_norm", [x, gw, gb], {"groups": 3}),
            b.add("batch_norm", [x, mean, var, gw, gb], {"eps": 0.001})]
    return with_tiers(b.finish(outs), {outs[5]: "sram"})


def layout_graph() -> Graph:
    b = GraphBuilder("layout")
    x = inp(b, "x", T(1, 8, 4, 6, tier="hbm"))
    outs = [b.add("reshape", [x], {"shape": (8, 24)}), b.add("reshape", [x], {"shape": (1, 1, 192)}),
            b.add("permute", [x], {"perm": (0, 2, 3, 1)}), b.add("expand", [x], {"shape": (3, 8, 4, 6)}),
            b.add("expand", [x], {"shape": (2, 1, 8, 4, 6)}),
            b.add("slice", [x], {"dim": 3, "start": 1, "end": 6, "step": 2}),
            b.add("slice", [x], {"dim": 1, "start": 2, "end": 2}),  # empty result
            b.add("concat", [x, x, x], {"dim": 1}),
            b.add("pad", [x], {"pads": (0, 0, 0, 0, 1, -1, 2, 2), "value": float("-inf")}),
            b.add("pad", [x], {"pads": (1, 0, 0, 0, 0, 0, 0, 0), "value": 3}),
            b.add("pixel_shuffle", [x], {"factor": 2}), b.add("pixel_unshuffle", [x], {"factor": 2}),
            b.add("upsample_nearest", [x], {"scales": (2, 3)}),
            b.add("reshape", [b.add("sum", [x], {"dims": (0, 1, 2, 3)})], {"shape": (1,)})]
    return b.finish(outs)


def contraction_graph() -> Graph:
    b = GraphBuilder("contractions")
    img = inp(b, "img", T(2, 4, 6, 6))
    cw = inp(b, "conv.weight", T(6, 2, 3, 3), InputKind.param)
    cb = inp(b, "conv.bias", T(6), InputKind.param)
    a = inp(b, "a", T(2, 3, 5))
    mw = inp(b, "m", T(5, 4), InputKind.param, "proj.weight")
    lb = inp(b, "lb", T(4), InputKind.param, "proj.bias")
    q, k, v = inp(b, "q", T(1, 4, 3, 8)), inp(b, "k", T(1, 2, 5, 8)), inp(b, "v", T(1, 2, 5, 8))
    mask = inp(b, "mask", T(3, 5, dtype=i1))
    table = inp(b, "wte", T(10, 8), InputKind.param, "transformer.wte.weight")
    ids = inp(b, "ids", T(2, 3, dtype=i64))
    flat = inp(b, "flat_ids", T(3, dtype=i64))
    b.loc = "backbone.conv1"
    conv = b.add("conv", [img, cw, cb], {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2), "groups": 2})
    b.loc = None
    outs = [conv,
            b.add("conv", [img, cw], {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 2}),
            b.add("conv_nhwc", [b.add("permute", [img], {"perm": (0, 2, 3, 1)}), cw, cb],
                  {"stride": (1, 2), "padding": (1, 1), "dilation": (1, 1), "groups": 2}),
            b.add("max_pool", [img], {"kernel": (2, 2), "stride": (2, 2), "padding": (1, 1), "ceil_mode": True}),
            b.add("avg_pool", [img], {"kernel": (3, 3), "stride": (1, 2), "padding": (1, 0),
                                      "count_include_pad": False}),
            b.add("matmul", [a, mw]),
            b.add("linear", [a, b.add("permute", [mw], {"perm": (1, 0)}), lb]),
            b.add("attention", [q, k, v, mask], {"scale": 0.35355339059327373}),
            b.add("attention", [q, k, v], {"scale": 0.125, "causal": True}),
            b.add("embedding", [table, ids]),
            b.add("index_select", [table, flat], {"dim": 0}),
            b.add("index", [table, ids]),
            b.add("index", [img, ids, flat], {"dim": 1}),
            b.add("gather", [table, ids], {"dim": 0})]
    return b.finish(outs)


EXPERT = """graph @expert(%tokens: f32[6,8], %w1: f32[16,8], %w2: f32[8,16]) -> (f32[6,8]@sram) {
      %h = linear(%tokens, %w1) : f32[6,16] loc("experts.w1")
      %a = silu(%h) : f32[6,16]
      %o = linear(%a, %w2) : f32[6,8]@sram loc("experts.w2")
      return %o
    }"""

MOE_TEXT = f"""graph @moe_block(%x: f32[2,3,8], %gate.weight: f32[4,8] param, %experts.w1: f32[4,16,8] param "block.experts.gate_up", %experts.w2: f32[4,8,16] param) -> (f32[2,3,8], f32[2,3,8]) {{
  %moe = moe(%x, %gate.weight, %experts.w1, %experts.w2) {{normalize = true, num_experts = 4, top_k = 2}} : f32[2,3,8] loc("model.layers.0.block_sparse_moe") ({{
    {EXPERT}
  }})
  %y = add(%moe, %x) : f32[2,3,8]
  return %moe, %y
}}
"""


def moe_graph() -> Graph:
    return parse_graph(MOE_TEXT)


ALL_GRAPHS = [pointwise_graph(), reduction_graph(), layout_graph(), contraction_graph(), moe_graph()]
GRAPH_IDS = [g.name for g in ALL_GRAPHS]


def random_value(t: TensorType, gen: torch.Generator) -> torch.Tensor:
    if t.dtype.is_float:
        return torch.randn(t.shape, generator=gen).to(t.dtype.torch)
    if t.dtype is i1:
        return torch.rand(t.shape, generator=gen) > 0.5
    return torch.randint(0, 3, t.shape, generator=gen).to(t.dtype.torch)


def run_random(g: Graph, seed=0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    inputs = [random_value(i.type, gen) for i in g.runtime_inputs]
    state = {i.name: random_value(i.type, gen) for i in g.state_inputs}
    outs = run_graph(g, inputs, state)
    for o, t in zip(outs, g.output_types()):
        assert tuple(o.shape) == t.shape and o.dtype == t.dtype.torch
    return outs


# ---------------------------------------------------------------------------- tests
def test_sample_graphs_use_every_registered_op():
    used = {n.op for g in ALL_GRAPHS for n in g.walk()}
    missing = set(OPS) - used
    assert not missing, f"ops without a round-trip sample: {sorted(missing)}"
    assert used <= set(OPS)


@pytest.mark.parametrize("graph", ALL_GRAPHS, ids=GRAPH_IDS)
def test_roundtrip(graph):
    text = print_graph(graph)
    again = parse_graph(text)
    assert print_graph(again) == text
    assert again == graph
    assert str(graph) == text and text.endswith("}\n")
    verify(graph)
    verify(again)
    for a, b in zip(run_random(graph), run_random(again)):
        assert torch.equal(a, b) or torch.allclose(a, b, equal_nan=True)


@pytest.mark.parametrize("graph", ALL_GRAPHS, ids=GRAPH_IDS)
def test_structure_of_every_sample_node_is_well_formed(graph):
    types = graph.types()
    for node in graph.nodes:
        s = structure_of(graph, node)
        assert len(s.operand_maps) == len(node.operands), node.op
        assert s.result_map.num_dims == len(s.domain)
        assert len(s.result_map.results) == node.type.rank
        for m, o in zip(s.operand_maps, node.operands):
            if m is not None:
                assert m.num_dims == len(s.domain) and len(m.results) == types[o].rank, node.op


def test_moe_text_is_canonical_and_region_roundtrips():
    g = moe_graph()
    assert print_graph(g) == MOE_TEXT  # the hand-written text is exactly the printer's output
    (region,) = g.nodes[0].regions
    assert region.name == "expert" and [i.name for i in region.inputs] == ["tokens", "w1", "w2"]
    assert region.nodes[2].type == T(6, 8, tier="sram") and region.nodes[0].loc == "experts.w1"
    assert g.inputs[2].source == "block.experts.gate_up" and g.inputs[3].source == "experts.w2"
    assert [n.name for n in g.walk()] == ["moe", "h", "a", "o", "y"]


ZOO = """graph @zoo(%x: f32[] param "we\\"ird \\\\ key") -> (f32[]@sram) {
  %z = full() {a = 1, b = -3, c = 1e-05, d = -0.0, e = inf, f = -inf, g = nan, h = true, i = false, j = none, k = "q\\"uo\\\\te\\n\\t\\u00fc\\u20ac\\ud83d\\ude00", l = [[1, 2], [], ["x", [none]]], m = [], n = 1.5e+300, o = -2.5, p = 123456789012345678901234567890, value = 0.5} : f32[]@sram
  return %z
}
"""


def test_attribute_zoo_roundtrips():
    g = parse_graph(ZOO)
    assert print_graph(g) == ZOO
    attrs = g.nodes[0].attrs
    assert attrs["a"] == 1 and type(attrs["a"]) is int
    assert attrs["b"] == -3
    assert attrs["c"] == 1e-05 and type(attrs["c"]) is float
    assert attrs["d"] == 0.0 and math.copysign(1, attrs["d"]) == -1
    assert attrs["e"] == math.inf and attrs["f"] == -math.inf and math.isnan(attrs["g"])
    assert attrs["h"] is True and attrs["i"] is False and attrs["j"] is None
    assert attrs["k"] == 'q"uo\\te\n\tü€😀'
    assert attrs["l"] == ((1, 2), (), ("x", (None,))) and attrs["m"] == ()
    assert attrs["n"] == 1.5e300 and attrs["p"] == 123456789012345678901234567890
    assert g.inputs[0].source == 'we"ird \\ key' and g.inputs[0].kind is InputKind.param
    assert g.nodes[0].type == T(tier="sram") and g.output_types() == (T(tier="sram"),)
    # nan != nan, so the graphs differ by ==; everything else must be equal
    g2 = parse_graph(print_graph(g))
    strip = lambda graph: graph.with_nodes([replace(graph.nodes[0], attrs={k: v for k, v in
                                                                           graph.nodes[0].attrs.items() if k != "g"})])
    assert strip(g2) == strip(g)


def test_raw_unicode_in_strings_parses_and_prints_escaped():
    g = parse_graph('graph @u(%x: f32[1]) -> (f32[1]) {\n  %y = relu(%x) : f32[1] loc("böse.€")\n  return %y\n}\n')
    assert g.nodes[0].loc == "böse.€"
    assert '"b\\u00f6se.\\u20ac"' in print_graph(g)
    assert parse_graph(print_graph(g)) == g


def test_comments_are_ignored():
    text = """// leading comment
graph @c(%x: f32[2]) -> (f32[2]) { // after the header
  // a whole-line comment with "quotes" and %values
  %y = relu(%x) : f32[2] loc("a//b") // trailing
  return %y // done
}
// the end
"""
    g = parse_graph(text)
    assert g.nodes[0].loc == "a//b"  # `//` inside a string is not a comment
    assert print_graph(g) == "graph @c(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f32[2] loc(\"a//b\")\n  return %y\n}\n"


def test_whitespace_is_free():
    g = parse_graph("graph @w(%x:f32[2,3])->(f32[3,2]@sram){%y=permute(%x){perm=[1,0]}:f32[3,2]@sram return %y}")
    assert g.nodes[0].attrs == {"perm": (1, 0)} and g.nodes[0].type.tier == "sram"
    assert parse_graph(print_graph(g)) == g
    spaced = parse_graph("graph @w ( %x : f32 [ 2 , 3 ] ) -> ( f32[3,2] @ sram ) {\r\n\t%y = permute ( %x ) "
                         "{ perm = [ 1 , 0 ] } : f32[3,2] @ sram\r\n return %y\r\n}\r\n")
    assert spaced == g


def test_input_kinds_print_as_documented():
    g = Graph("k", (Input("x", T(2)), Input("w", T(2), InputKind.param, "w"),
                    Input("b", T(2), InputKind.buffer, "model.b"), Input("c", T(), InputKind.const, "c"),
                    Input("d", T(2, dtype=i1, tier="sram"), InputKind.const, "tables.d")),
              (Node("y", "add", ("x", "w"), T(2)),), ("y",))
    text = print_graph(g)
    assert text.splitlines()[0] == ('graph @k(%x: f32[2], %w: f32[2] param, %b: f32[2] buffer "model.b", '
                                    '%c: f32[] const, %d: i1[2]@sram const "tables.d") -> (f32[2]) {')
    assert parse_graph(text) == g
    assert [i.name for i in g.state_inputs] == ["w", "b", "c", "d"] and g.runtime_inputs == (g.inputs[0],)


def test_state_input_without_source_reads_back_with_its_name():
    """Documented normalisation: a state input's source defaults to its name when parsed."""
    g = Graph("n", (Input("w", T(2), InputKind.param),), (Node("y", "relu", ("w",), T(2)),), ("y",))
    g2 = parse_graph(print_graph(g))
    assert g2.inputs[0].source == "w"
    assert print_graph(g2) == print_graph(g)


def test_zero_input_and_multi_output_graphs():
    text = ("graph @s() -> (f32[], i64[3]) {\n  %a = full() {value = 1} : f32[]\n"
            "  %b = iota() {start = 5, step = -1} : i64[3]\n  return %a, %b\n}\n")
    g = parse_graph(text)
    assert print_graph(g) == text and verify(g) is g
    a, b = run_graph(g, [])
    assert a.item() == 1.0 and b.tolist() == [5, 4, 3]


# -------------------------------------------------------------- hypothesis: attributes
scalars = st.one_of(st.integers(-10 ** 30, 10 ** 30), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.none(), st.text(max_size=12))
attr_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=12)
attr_keys = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
                      st.sampled_from(["true", "none", "inf", "nan", "loc", "graph", "return"]))


def _has_nan(v) -> bool:
    return (isinstance(v, float) and math.isnan(v)) or (isinstance(v, tuple) and any(map(_has_nan, v)))


@settings(max_examples=150, deadline=None)
@given(attrs=st.dictionaries(attr_keys, attr_values, max_size=5),
       loc=st.one_of(st.none(), st.text(max_size=10)),
       source=st.text(max_size=10),
       tier=st.one_of(st.none(), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)),
       # within the IR's limit of 2**50 bytes a tensor (`types.MAX_TENSOR_BYTES`); larger is a ParseError
       shape=st.one_of(st.lists(st.integers(0, 10 ** 4), max_size=3), st.lists(st.integers(0, 2 ** 48), max_size=1)))
def test_any_attributes_names_and_strings_roundtrip(attrs, loc, source, tier, shape):
    t = TensorType(tuple(shape), f32, tier)
    g = Graph("h", (Input("p.0", t, InputKind.param, source),),
              (Node("n$1", "relu", ("p.0",), t, attrs, (), loc),), ("n$1",))
    text = print_graph(g)
    g2 = parse_graph(text)
    assert print_graph(g2) == text
    if not any(_has_nan(v) for v in attrs.values()):
        assert g2 == g
    for key, value in attrs.items():  # bools stay bools, ints stay ints (True == 1 in Python)
        assert repr(g2.nodes[0].attrs[key]) == repr(value) or _has_nan(value)


# ------------------------------------------------------------ hypothesis: random graphs
UNARY = ["relu", "neg", "tanh", "sigmoid", "abs", "silu", "gelu", "sin", "floor", "erf", "exp"]
BINARY = ["add", "sub", "mul", "maximum", "minimum", "div"]


@st.composite
def random_graphs(draw):
    """A random chain of pointwise / reduction / layout / norm ops with valid shapes."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    b = GraphBuilder("rand")
    values = [b.add_input(Input("x", T(*shape)))]
    n_params = 0
    for step in range(draw(st.integers(1, 8))):
        v = draw(st.sampled_from(values))
        t = b.types[v]
        r = t.rank
        choices = ["unary", "binary", "const"]
        if r >= 1:
            choices += ["reduce", "softmax", "permute", "reshape", "slice", "pad", "concat", "expand",
                        "layer_norm", "cumsum"]
        kind = draw(st.sampled_from(choices))
        b.loc = draw(st.one_of(st.none(), st.sampled_from(["layer.0", "blk/ü", 'q"t'])))
        if kind == "unary":
            op = draw(st.sampled_from(UNARY))
            new = b.add(op, [v], {"approximate": "tanh"} if op == "gelu" and draw(st.booleans()) else {})
        elif kind in ("binary", "const"):
            k = draw(st.integers(0, r))
            other = tuple(s if draw(st.booleans()) else 1 for s in t.shape[r - k:])
            if kind == "const":
                o = b.constant(draw(st.floats(-2, 2, width=32)), f32, other)
            else:
                o = b.add_input(Input(f"p{n_params}", T(*other), InputKind.param, f"p{n_params}"))
                n_params += 1
            pair = [v, o] if draw(st.booleans()) else [o, v]
            new = b.add(draw(st.sampled_from(BINARY)), pair)
        elif kind == "reduce":
            dims = tuple(sorted(draw(st.sets(st.integers(0, r - 1), min_size=1))))
            op = draw(st.sampled_from(["sum", "mean", "amax", "amin", "var"]))
            new = b.add(op, [v], {"dims": dims, "keepdim": draw(st.booleans())})
        elif kind == "softmax":
            new = b.add(draw(st.sampled_from(["softmax", "log_softmax"])), [v], {"dim": draw(st.integers(0, r - 1))})
        elif kind == "cumsum":
            new = b.add("cumsum", [v], {"dim": draw(st.integers(0, r - 1))})
        elif kind == "layer_norm":
            new = b.add("layer_norm", [v], {"normalized_rank": draw(st.integers(1, r))})
        elif kind == "permute":
            new = b.add("permute", [v], {"perm": tuple(draw(st.permutations(range(r))))})
        elif kind == "reshape":
            form = draw(st.sampled_from(["flat", "unsqueeze", "merge"]))
            if form == "flat":
                new_shape = (t.numel,)
            elif form == "unsqueeze":
                at = draw(st.integers(0, r))
                new_shape = t.shape[:at] + (1,) + t.shape[at:]
            else:
                at = draw(st.integers(0, max(r - 2, 0)))
                new_shape = t.shape[:at] + (math.prod(t.shape[at:at + 2]),) + t.shape[at + 2:]
            new = b.add("reshape", [v], {"shape": new_shape})
        elif kind == "slice":
            dim = draw(st.integers(0, r - 1))
            start = draw(st.integers(0, t.shape[dim] - 1))
            end = draw(st.integers(start + 1, t.shape[dim]))
            new = b.add("slice", [v], {"dim": dim, "start": start, "end": end, "step": draw(st.integers(1, 2))})
        elif kind == "pad":
            pads = tuple(draw(st.integers(0, 2)) for _ in range(2 * r))
            new = b.add("pad", [v], {"pads": pads, "value": draw(st.sampled_from([0.0, -1.0, 2]))})
        elif kind == "concat":
            new = b.add("concat", [v, v], {"dim": draw(st.integers(0, r - 1))})
        else:  # expand: grow size-1 dims, maybe add a leading dim
            shape2 = tuple(draw(st.integers(1, 3)) if s == 1 else s for s in t.shape)
            new = b.add("expand", [v], {"shape": (2,) * draw(st.integers(0, 1)) + shape2})
        if b.types[new].numel > 4096:  # keep the interpreter cheap
            break
        values.append(new)
    outputs = [values[-1]] + ([draw(st.sampled_from(values))] if draw(st.booleans()) else [])
    g = b.finish(outputs)
    tiers = {n.name: draw(st.sampled_from(["sram", "hbm", "ddr"])) for n in g.nodes if draw(st.booleans())}
    return with_tiers(g, tiers)


@pytest.mark.filterwarnings("ignore:var.*degrees of freedom:UserWarning")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=random_graphs())
def test_random_graphs_roundtrip_verify_and_run(g):
    text = print_graph(g)
    g2 = parse_graph(text)
    assert print_graph(g2) == text
    assert g2 == g
    verify(g2)
    out1, out2 = run_random(g), run_random(g2)
    for a, b in zip(out1, out2):
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


# ------------------------------------------------------------------- group plans

PLANNED = """graph @planned(%x: bf16[8,64], %w: bf16[32,64] param) -> (bf16[8,32]) {
  group 0 {anchor = "y", chip_ratio = 1.0234, chip_reads = [1.0, 4.0, 1], chip_tile = [8, 32, 64], kind = "contraction", ratio_smem = 1, ratio_vmem = 1.3, scheme = "output-stationary", tile_smem = [8, 32, 16], tile_vmem = [8, 16, 64]}
  group 1 {kind = "pointwise"}
  %y = linear(%x, %w) : bf16[8,32] group(0)
  %z = gelu(%y) {approximate = "none"} : bf16[8,32] group(1)
  return %z
}
"""


def test_group_plan_roundtrip_is_typed_and_byte_identical():
    from codesign.ir.graph import Group
    from codesign.ir.plan import GroupPlan, chip_rereads
    g = parse_graph(PLANNED)
    assert print_graph(g) == PLANNED
    plan = g.groups[0].plan
    assert (plan.kind, plan.anchor, plan.scheme) == ("contraction", "y", "output-stationary")
    assert dict(plan.tiles) == {"smem": (8, 32, 16), "vmem": (8, 16, 64)}
    assert dict(plan.ratios) == {"smem": 1, "vmem": 1.3} and isinstance(plan.ratios["smem"], int)  # kept as written
    assert plan.chip_tile == (8, 32, 64) and plan.chip_reads == (1.0, 4.0, 1) and plan.chip_ratio == 1.0234
    assert plan.fastest_tile(("vmem", "smem", "hbm")) == ("vmem", (8, 16, 64))
    assert plan.fastest_tile(("smem", "vmem")) == ("smem", (8, 32, 16))
    assert chip_rereads(g) == {"y": (1.0, 4.0, 1)}
    assert g.groups[1].plan == GroupPlan(kind="pointwise") and not g.groups[1].plan.tiles
    # the typed plan and the text form's pairs are one thing: either builds the same group
    assert Group(0, dict(plan.attrs)) == g.groups[0] == Group(0, plan)
    assert hash(Group(0, plan)) == hash(g.groups[0])
    rebuilt = replace(g, groups=(Group(0, plan.with_tile("l1", (4, 4, 4), ratio=2.5)), g.groups[1]))
    assert parse_graph(print_graph(rebuilt)) == rebuilt
    assert "ratio_l1 = 2.5" in print_graph(rebuilt) and "tile_l1 = [4, 4, 4]" in print_graph(rebuilt)


@pytest.mark.parametrize(("old", "new", "words", "col_of"), [
    ('kind = "pointwise"', 'kind = "pointwise", anchr = "z"',
     ["unknown group key 'anchr'", "did you mean 'anchor'", "tile_<tier>"], 'anchr'),
    ('kind = "pointwise"', 'kind = "pointwise", num_warps = 4', ["unknown group key 'num_warps'"], 'num_warps'),
    ("tile_smem = [8, 32, 16]", "tile_smem = [8, 0, 16]",
     ["group key 'tile_smem' must be a list of positive integers", "[8, 0, 16]"], "[8, 0"),
    ("ratio_smem = 1,", 'ratio_smem = "fast",', ["group key 'ratio_smem' must be a number"], '"fast"'),
    ("chip_reads = [1.0, 4.0, 1]", 'chip_reads = [1.0, "x"]', ["'chip_reads' must be a list of numbers"], '[1.0, "x"]'),
    ('kind = "pointwise"', "kind = 3", ["group key 'kind' must be a string, got 3"], "3}"),
    ('anchor = "y"', "anchor = none", ["group key 'anchor' must have a value"], "none"),
    ("tile_vmem = [8, 16, 64]", "tile_ = [8, 16, 64]", ["group key 'tile_' names no memory tier"], "tile_ ="),
])
def test_group_plan_errors_name_the_key(old, new, words, col_of):
    from codesign.ir import ParseError
    assert old in PLANNED
    text = PLANNED.replace(old, new, 1)
    with pytest.raises(ParseError) as info:
        parse_graph(text, "plan.csir")
    message = str(info.value)
    for w in words:
        assert w in message, message
    line = text.splitlines()[info.value.line - 1]
    assert info.value.filename == "plan.csir" and line.index(col_of) == info.value.col - 1, message


def test_group_plan_in_python_is_checked_too():
    from codesign.ir.graph import Group
    from codesign.ir.plan import GroupPlan, PlanError
    with pytest.raises(PlanError, match="unknown group key 'tiles'"):
        Group(0, {"tiles": (1, 2)})
    with pytest.raises(PlanError, match="'tile_smem' must be a list of positive integers"):
        GroupPlan(tiles={"smem": (1, True)})
    with pytest.raises(PlanError, match="names no memory tier"):
        GroupPlan(tiles={"2fast": (1,)})
    assert Group(3).plan == GroupPlan() and Group(3).attrs == {}
    with pytest.raises(TypeError):
        GroupPlan(tiles={"smem": (1,)}).tiles["l1"] = (2,)  # read-only


_TIERS = st.sampled_from(["smem", "sram", "vmem", "l1", "hbm", "tier_2"])
_RATIOS = st.one_of(st.integers(1, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=64))


@st.composite
def plans(draw):
    from codesign.ir.plan import GroupPlan
    ints = st.lists(st.integers(1, 4096), max_size=5).map(tuple)
    opt = lambda s: st.none() | s  # noqa: E731
    return GroupPlan(
        kind=draw(opt(st.sampled_from(["pointwise", "contraction", "layer", "attention"]))),
        anchor=draw(st.none() | st.just("a")),
        scheme=draw(opt(st.text("abcdef-\"\\ é", max_size=8))),
        tiles=draw(st.dictionaries(_TIERS, ints, max_size=3)),
        ratios=draw(st.dictionaries(_TIERS, _RATIOS, max_size=3)),
        chip_tile=draw(opt(ints)),
        chip_reads=draw(opt(st.lists(_RATIOS, max_size=4).map(tuple))),
        chip_ratio=draw(opt(_RATIOS)),
    )


@settings(max_examples=150, deadline=None)
@given(plan=plans())
def test_random_group_plans_roundtrip(plan):
    from codesign.ir.graph import Group
    g = Graph("g", (Input("x", T(4)),), (Node("a", "exp", ("x",), T(4), group=0),), ("a",), (Group(0, plan),))
    text = print_graph(g)
    g2 = parse_graph(text)
    assert print_graph(g2) == text and g2 == g and g2.groups[0].plan == plan
