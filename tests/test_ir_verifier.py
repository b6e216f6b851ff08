"""Verifier: each rule yields an error naming the node (`%name`) and the problem; all errors
of a graph are reported together; correct graphs verify; bad attributes never crash it."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codesign.ir import (OPS, AffineMap, Const, Dim, DType, Graph, Input, Node, TensorType,
                         VerifyError, diagnose, parse_graph, verify)
from codesign.ir.ops import IterDim, Structure
from codesign.ir.verifier import check_node

HEADER = "graph @g(%x: f32[4,8], %w: f32[16,8] param, %i: i64[3]) -> ({results}) {{\n"


def graph(body: str, results: str = "f32[4,8]") -> Graph:
    return parse_graph(HEADER.format(results=results) + body + "\n}\n")


def only_error(g: Graph):
    diags = diagnose(g)
    assert len(diags) == 1, [str(d) for d in diags]
    with pytest.raises(VerifyError) as info:
        verify(g)
    assert info.value.diagnostics == diags
    assert str(diags[0]) in str(info.value) and "1 error)" in str(info.value)
    return diags[0]


def test_correct_graph_verifies():
    g = graph("""  %l = linear(%x, %w) : f32[4,16] loc("fc1")
  %c = full() {value = 0.5} : f32[]
  %m = mul(%l, %c) : f32[4,16]
  %r = gelu(%m) {approximate = "tanh"} : f32[4,16]@sram
  %e = embedding(%w, %i) : f32[3,8]
  return %r, %e""", "f32[4,16]@sram, f32[3,8]")
    assert verify(g) is g and diagnose(g) == []


@pytest.mark.parametrize("body,node,fragments", [
    ("  %y = relu(%z) : f32[4,8]\n  %z = relu(%x) : f32[4,8]\n  return %z",
     "%y", ["uses %z before any definition"]),
    ("  %y = relu(%x) : f32[4,8]\n  %y = neg(%x) : f32[4,8]\n  return %y",
     "%y", ["%y is already defined"]),
    ("  %x = relu(%x) : f32[4,8]\n  return %x",
     "%x", ["%x is already defined"]),
    ("  %y = rellu(%x) : f32[4,8]\n  return %y",
     "%y", ["unknown op 'rellu'", "did you mean relu"]),
    ("  %y = add(%x) : f32[4,8]\n  return %y",
     "%y", ["takes 2..2 operands, got 1"]),
    ("  %y = linear(%x, %w, %w, %w) : f32[4,16]\n  return %x",
     "%y", ["takes 2..3 operands, got 4"]),
    ("  %y = full(%x) {value = 1} : f32[4,8]\n  return %y",
     "%y", ["takes 0..0 operands, got 1"]),
    ("  %y = relu(%x) {alpha = 0.1} : f32[4,8]\n  return %y",
     "%y", ["unknown attribute 'alpha'", "known: none"]),
    ("  %y = gelu(%x) {approx = \"tanh\"} : f32[4,8]\n  return %y",
     "%y", ["unknown attribute 'approx'", "known: approximate"]),
    ("  %y = sum(%x) : f32[]\n  return %x",
     "%y", ["missing required attribute 'dims'"]),
    ("  %y = sum(%x) {dims = 1} : f32[8]\n  return %x",
     "%y", ["attribute dims=1 should be tuple"]),
    ("  %y = tril(%x) {diagonal = true} : f32[4,8]\n  return %y",
     "%y", ["attribute diagonal=True should be int"]),
    ("  %y = attention(%x, %x, %x) {scale = 1} : f32[4,8]\n  return %y",
     "%y", ["attribute scale=1 should be float"]),
    ("  %y = clamp(%x) {min = \"0\"} : f32[4,8]\n  return %y",
     "%y", ["attribute min='0' should be int or float or none"]),
    ("  %y = relu(%x) : f32[4,9]\n  return %x",
     "%y", ["declared type f32[4,9] but operands give f32[4,8]"]),
    ("  %y = relu(%x) : f16[4,8]\n  return %x",
     "%y", ["declared type f16[4,8] but operands give f32[4,8]"]),
    ("  %y = eq(%x, %x) : f32[4,8]\n  return %x",
     "%y", ["declared type f32[4,8] but operands give i1[4,8]"]),
    ("  %y = add(%x, %w) : f32[4,8]\n  return %y",
     "%y", ["shapes [4, 8] and [16, 8] do not broadcast"]),
    ("  %h = cast(%x) {dtype = \"f16\"} : f16[4,8]\n  %y = add(%x, %h) : f32[4,8]\n  return %y",
     "%y", ["add needs operands of one element type, got f16, f32"]),
    ("  %y = matmul(%x, %w) : f32[4,8]\n  return %y",
     "%y", ["matmul contraction sizes differ: [4, 8] @ [16, 8]"]),
    ("  %y = reshape(%x) {shape = [5, 6]} : f32[5,6]\n  return %x",
     "%y", ["reshape of [4, 8] (32 elements) to [5, 6] (30 elements)"]),
    ("  %y = permute(%x) {perm = [1, 1]} : f32[8,8]\n  return %x",
     "%y", ["[1, 1] is not a permutation of 2 dims"]),
    ("  %y = slice(%x) {dim = 1, end = 9, start = 0} : f32[4,9]\n  return %x",
     "%y", ["slice dim=1 [0:9:1] is out of range for [4, 8]"]),
    ("  %y = slice(%x) {dim = 2, end = 1, start = 0} : f32[4,8]\n  return %x",
     "%y", ["out of range for [4, 8]"]),
    ("  %y = moe(%x, %w) {num_experts = 16, top_k = 2} : f32[4,8]\n  return %y",
     "%y", ["has 0 regions, expected 1"]),
    ("  %y = relu(%x) : f32[4,8] ({\n    graph @r(%a: f32[1]) -> (f32[1]) {\n      return %a\n    }\n  })\n"
     "  return %y", "%y", ["has 1 regions, expected 0"]),
    ("  %y = pixel_shuffle(%x) {factor = 0} : f32[4,8]\n  return %y",
     "%y", ["pixel_shuffle"]),
    ("  %y = permute(%x) {perm = [[0], 1]} : f32[4,8]\n  return %y",
     "%y", ["permute"]),
])
def test_each_rule_names_the_node_and_the_problem(body, node, fragments):
    d = only_error(graph(body))
    assert f"{node} (" in d.where and d.where.startswith("@g ")
    for fragment in fragments:
        assert fragment in d.message, d.message


def test_where_includes_op_and_loc():
    d = only_error(graph('  %y = relu(%x) : f32[4,9] loc("model.act")\n  return %x'))
    assert d.where == "@g %y (relu from model.act)"
    assert str(d) == "@g %y (relu from model.act): declared type f32[4,9] but operands give f32[4,8]"


def test_returning_an_undefined_value():
    d = only_error(graph("  %y = relu(%x) : f32[4,8]\n  return %nope"))
    assert d.where == "@g return" and "returns %nope, which is never defined" in d.message


def test_graph_without_results_and_duplicate_inputs():
    t = TensorType((2,), DType.f32)
    g = Graph("e", (Input("a", t), Input("a", t)), (), ())
    messages = [str(d) for d in diagnose(g)]
    assert messages == ["@e input %a: defined twice", "@e return: a graph must return at least one value"]


def test_use_before_definition_lists_every_missing_operand():
    d = only_error(graph("  %y = add(%p, %q) : f32[4,8]\n  return %x"))
    assert d.message == "uses %p, %q before any definition"


MOE = """graph @g(%x: f32[6,8], %r: f32[4,8] param, %w1: f32[4,16,8] param, %w2: f32[4,8,16] param) -> (f32[6,8]) {{
  %m = moe(%x, %r, %w1, %w2) {{num_experts = 4, top_k = 2}} : f32[6,8] ({{
    graph @expert(%t: f32[6,8], %a: f32[16,8], %b: f32[8,16]) -> (f32[6,8]) {{
{body}
    }}
  }})
  return %m
}}
"""


def test_moe_region_verifies_when_correct():
    g = parse_graph(MOE.format(body="      %h = linear(%t, %a) : f32[6,16]\n      %o = linear(%h, %b) : f32[6,8]\n"
                                    "      return %o"))
    assert verify(g) is g


def test_errors_inside_a_moe_region_name_the_region_node():
    g = parse_graph(MOE.format(body="      %h = linear(%t, %b) : f32[6,16]\n      %s = sillu(%h) : f32[6,16]\n"
                                    "      %o = linear(%h, %zz) : f32[6,8]\n      return %o"))
    diags = diagnose(g)
    assert [d.where for d in diags] == ["@expert %h (linear)", "@expert %s (sillu)", "@expert %o (linear)"]
    assert "does not match weight [8, 16]" in diags[0].message
    assert "did you mean silu" in diags[1].message
    assert "uses %zz before any definition" in diags[2].message
    with pytest.raises(VerifyError, match=r"graph @g failed verification \(3 errors\)"):
        verify(g)


def test_region_does_not_see_outer_values():
    g = parse_graph(MOE.format(body="      %o = add(%t, %x) : f32[6,8]\n      return %o"))
    (d,) = diagnose(g)
    assert d.where == "@expert %o (add)" and "uses %x before any definition" in d.message


def test_moe_operand_errors():
    g = parse_graph(MOE.format(body="      return %t").replace("top_k = 2", "top_k = 5"))
    (d,) = diagnose(g)
    assert d.where == "@g %m (moe)" and "top_k=5 must be in 1..4" in d.message


def test_multiple_errors_are_all_reported_in_order():
    g = graph("""  %a = relu(%nope) : f32[4,8]
  %b = rellu(%x) : f32[4,8]
  %c = add(%x, %w) : f32[4,8]
  %d = relu(%x) {bad = 1} : f32[4,8]
  %e = sum(%x) : f32[]
  %f = relu(%x) : f32[2,2]
  %f = neg(%x) : f32[4,8]
  return %zzz""")
    diags = diagnose(g)
    assert [d.where.split(" (")[0] for d in diags] == ["@g %a", "@g %b", "@g %c", "@g %d", "@g %e", "@g %f",
                                                        "@g %f", "@g return"]
    with pytest.raises(VerifyError) as info:
        verify(g)
    text = str(info.value)
    assert text.startswith("graph @g failed verification (8 errors):")
    for d in diags:
        assert f"  {d}" in text
    assert len(info.value.diagnostics) == 8


def test_one_node_with_several_attribute_problems_reports_each():
    d = diagnose(graph("  %y = sum(%x) {keepdim = 1, foo = 2} : f32[]\n  return %x"))
    messages = [x.message for x in d]
    assert any("unknown attribute 'foo'" in m for m in messages)
    assert any("keepdim=1 should be bool" in m for m in messages)
    assert any("missing required attribute 'dims'" in m for m in messages)
    assert all(x.where == "@g %y (sum)" for x in d)


# ---------------------------------------------------------- indexing-map bound rules
def _fake_layout(monkeypatch, maps):
    """Register (for one test) a layout op `fake` whose structure has the given maps."""
    base = OPS["relu"]
    fake = dataclasses.replace(base, name="fake", structure=lambda ops, res, at: Structure(
        tuple(IterDim(s) for s in res.shape), tuple(maps(res)), AffineMap.identity(res.rank), "fake"))
    monkeypatch.setitem(OPS, "fake", fake)


def test_map_reading_out_of_bounds_is_reported(monkeypatch):
    _fake_layout(monkeypatch, lambda res: [AffineMap.of(2, [Dim(0), Dim(1) + 1])])
    d = only_error(graph("  %y = fake(%x) : f32[4,8]\n  return %y"))
    assert d.where == "@g %y (fake)"
    assert "indexing map (d0, d1) -> (d0, d1 + 1) of operand 0 reads dim 1 at [1, 8], outside its size 8" \
        in d.message


def test_map_with_wrong_arity_is_reported(monkeypatch):
    _fake_layout(monkeypatch, lambda res: [AffineMap.of(2, [Dim(0)])])
    d = only_error(graph("  %y = fake(%x) : f32[4,8]\n  return %y"))
    assert "indexing map of operand 0 has 1 results for rank 2" in d.message


def test_map_bounds_skip_empty_domains(monkeypatch):
    _fake_layout(monkeypatch, lambda res: [AffineMap.of(2, [Dim(0), Const(99)])])
    g = parse_graph("graph @g(%x: f32[0,8]) -> (f32[0,8]) {\n  %y = fake(%x) : f32[0,8]\n  return %y\n}")
    assert diagnose(g) == []


# ------------------------------------------------------------ robustness: never crash
ATTR_JUNK = st.one_of(st.integers(-3, 4), st.booleans(), st.none(), st.floats(-2, 2), st.sampled_from(["a", "f32"]),
                      st.lists(st.one_of(st.integers(-2, 4), st.sampled_from(["a", (1,)])), max_size=5).map(tuple))
TYPES = st.builds(lambda shape, dtype: TensorType(tuple(shape), dtype),
                  st.lists(st.integers(0, 4), max_size=5), st.sampled_from([DType.f32, DType.i64, DType.i1]))


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(sorted(OPS)), data=st.data())
def test_verifier_reports_instead_of_crashing(op, data):
    opdef = OPS[op]
    hi = opdef.max_operands if opdef.max_operands is not None else opdef.min_operands + 3
    operands = data.draw(st.lists(TYPES, min_size=max(opdef.min_operands - 1, 0), max_size=hi + 1))
    keys = list(opdef.attrs) + ["bogus"]
    attrs = data.draw(st.dictionaries(st.sampled_from(keys), ATTR_JUNK, max_size=len(keys)))
    node = Node("n", op, tuple(f"a{i}" for i in range(len(operands))), data.draw(TYPES), attrs)
    problems = check_node(node, operands)  # must not raise
    assert all(isinstance(p, str) and p for p in problems)
    g = Graph("g", tuple(Input(f"a{i}", t) for i, t in enumerate(operands)), (node,), ("n",))
    for d in diagnose(g):
        assert d.where == f"@g %n ({op})"


def test_group_anchor_must_be_a_member():
    from codesign.ir import VerifyError, parse_graph, verify
    graph = parse_graph("""graph @g(%x: f32[4]) -> (f32[4]) {
  group 0 {anchor = "b", kind = "pointwise"}
  %a = exp(%x) : f32[4] group(0)
  %b = exp(%a) : f32[4]
  return %b
}""")
    with pytest.raises(VerifyError, match="anchor %b is not a node of this group"):
        verify(graph)


def test_nodes_checked_once_per_description_keep_their_own_errors():
    """diagnose() answers a node equal to one already checked (op, attributes, types) by
    lookup: two equal bad nodes are both reported, each by name, and an attribute that
    equals a checked one but for its type (True for 1) is still refused."""
    g = graph("""  %a = slice(%x) {dim = 1, start = 0, end = 4, step = 1} : f32[4,4]
  %b = slice(%x) {dim = true, start = 0, end = 4, step = 1} : f32[4,4]
  %c = slice(%x) {dim = 1, start = 0, end = 4, step = 1} : f32[4,5]
  %d = slice(%x) {dim = 1, start = 0, end = 4, step = 1} : f32[4,5]
  return %x""")
    diags = [str(d) for d in diagnose(g)]
    assert len(diags) == 3, diags
    assert "%b" in diags[0] and "dim=True should be int" in diags[0]
    assert "%c" in diags[1] and "%d" in diags[2] and diags[1].split(": ", 1)[1] == diags[2].split(": ", 1)[1]
