"""Passes: each canonicalization pattern (fires, refuses, keeps numerics), DCE, the
registry, pipeline strings, and the pass manager's instrumentation."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch

from codesign.ir import Graph, Node, TensorType, parse_graph, print_graph, run_graph, verify
from codesign.passes import (DEFAULT_PIPELINE, PASSES, PATTERNS, Canonicalize,
                             DeadCodeElimination, Instrumentation, Ledger, Pass, PassContext,
                             PassError, PassManager, PassVerifyError, Pattern, PipelineError,
                             UnknownPassError, apply_patterns, format_pipeline, get_pass,
                             parse_dump_name, parse_pipeline, phase_of_dump, register_pass)
from codesign.passes.canonicalize import CanonicalizeError, _cse_key
from helpers import FOLDABLE


# -- helpers -------------------------------------------------------------------------------
def random_tensor(t: TensorType, gen: torch.Generator) -> torch.Tensor:
    if t.dtype.is_float:
        return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype.torch)
    if t.dtype.value == "i1":
        return torch.randint(0, 2, t.shape, generator=gen).bool()
    return torch.randint(-5, 6, t.shape, generator=gen).to(t.dtype.torch)


def assert_same_numerics(before: Graph, after: Graph, seed: int = 0) -> None:
    """Both graphs interpret to bit-identical outputs on the same random inputs."""
    gen = torch.Generator().manual_seed(seed)
    inputs = [random_tensor(i.type, gen) for i in before.runtime_inputs]
    state = {i.name: random_tensor(i.type, gen) for i in before.state_inputs}
    expected, got = run_graph(before, inputs, state), run_graph(after, inputs, state)
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=0, equal_nan=True)  # exact, NaN == NaN


def canonicalize(text: str, **options) -> tuple[Graph, Graph]:
    """(input, canonicalized) for IR text; checks numerics are unchanged."""
    graph = parse_graph(text)
    result = Canonicalize(**options).run(graph, PassContext())
    assert_same_numerics(graph, result)
    return graph, result


def body(graph: Graph) -> list[str]:
    """The printed lines inside the graph, stripped (FileCheck-style assertions)."""
    return [line.strip() for line in print_graph(graph).splitlines()[1:-1]]


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


# -- canonicalize: identity layout ops -------------------------------------------------------
@pytest.mark.parametrize("line", [
    '%y = reshape(%x) {shape = [2, 3]} : f32[2,3]',
    '%y = permute(%x) {perm = [0, 1]} : f32[2,3]',
    '%y = expand(%x) {shape = [2, 3]} : f32[2,3]',
    '%y = slice(%x) {dim = 1, start = 0, end = 3} : f32[2,3]',
    '%y = slice(%x) {dim = 0, start = 0, end = 2, step = 1} : f32[2,3]',
    '%y = concat(%x) {dim = 0} : f32[2,3]',
    '%y = cast(%x) {dtype = "f32"} : f32[2,3]',
])
def test_identity_layout_op_is_removed(line: str) -> None:
    _, result = canonicalize(f"""graph @g(%x: f32[2,3]) -> (f32[2,3]) {{
      {line}
      %z = relu(%y) : f32[2,3]
      return %z
    }}""")
    assert body(result) == ["%z = relu(%x) : f32[2,3]", "return %z"]


@pytest.mark.parametrize("line", [
    '%y = permute(%x) {perm = [1, 0]} : f32[3,3]',
    '%y = slice(%x) {dim = 1, start = 0, end = 3, step = 2} : f32[3,2]',
    '%y = slice(%x) {dim = 1, start = 1, end = 3} : f32[3,2]',
    '%y = cast(%x) {dtype = "f16"} : f16[3,3]',
    '%y = expand(%x) {shape = [2, 3, 3]} : f32[2,3,3]',
    '%y = concat(%x, %x) {dim = 0} : f32[6,3]',
])
def test_non_identity_layout_op_stays(line: str) -> None:
    result_type = line.rsplit(": ", 1)[1]
    graph, result = canonicalize(f"""graph @g(%x: f32[3,3]) -> ({result_type}) {{
      {line}
      return %y
    }}""")
    assert result == graph


def test_replaced_output_points_to_the_new_value_in_order() -> None:
    _, result = canonicalize("""graph @g(%x: f32[4], %w: f32[4]) -> (f32[4], f32[4], f32[4]) {
      %a = relu(%w) : f32[4]
      %y = reshape(%x) {shape = [4]} : f32[4]
      return %a, %y, %a
    }""")
    assert result.outputs == ("a", "x", "a")


# -- canonicalize: chains --------------------------------------------------------------------
def test_reshape_of_reshape_folds_to_one_reshape() -> None:
    _, result = canonicalize("""graph @g(%x: f32[2,3,4]) -> (f32[4,6]) {
      %a = reshape(%x) {shape = [24]} : f32[24]
      %b = reshape(%a) {shape = [4, 6]} : f32[4,6]
      return %b
    }""")
    assert "%b = reshape(%x) {shape = [4, 6]} : f32[4,6]" in body(result)


def test_reshape_round_trip_disappears_after_dce() -> None:
    graph = parse_graph("""graph @g(%x: f32[2,3]) -> (f32[2,3]) {
      %a = reshape(%x) {shape = [6]} : f32[6]
      %b = reshape(%a) {shape = [2, 3]} : f32[2,3]
      %c = neg(%b) : f32[2,3]
      return %c
    }""")
    result = PassManager("canonicalize,dce").run(graph)
    assert body(result) == ["%c = neg(%x) : f32[2,3]", "return %c"]
    assert_same_numerics(graph, result)


def test_permute_of_permute_composes() -> None:
    _, result = canonicalize("""graph @g(%x: f32[2,3,4]) -> (f32[3,2,4]) {
      %a = permute(%x) {perm = [2, 0, 1]} : f32[4,2,3]
      %b = permute(%a) {perm = [2, 1, 0]} : f32[3,2,4]
      return %b
    }""")
    assert "%b = permute(%x) {perm = [1, 0, 2]} : f32[3,2,4]" in body(result)


def test_inverse_permutes_cancel() -> None:
    _, result = canonicalize("""graph @g(%x: f32[2,3,4]) -> (f32[2,3,4]) {
      %a = permute(%x) {perm = [1, 2, 0]} : f32[3,4,2]
      %b = permute(%a) {perm = [2, 0, 1]} : f32[2,3,4]
      %c = exp(%b) : f32[2,3,4]
      return %c
    }""")
    assert "%c = exp(%x) : f32[2,3,4]" in body(result)


# -- canonicalize: neutral operands ----------------------------------------------------------
@pytest.mark.parametrize("expr", ["mul(%x, %k)", "mul(%k, %x)"])
def test_mul_by_one_folds(expr: str) -> None:
    _, result = canonicalize(f"""graph @g(%x: f32[2,3]) -> (f32[2,3]) {{
      %k = full() {{value = 1.0}} : f32[]
      %y = {expr} : f32[2,3]
      return %y
    }}""")
    assert result.outputs == ("x",)


@pytest.mark.parametrize("expr", ["add(%x, %k)", "add(%k, %x)"])
def test_add_of_zero_folds(expr: str) -> None:
    _, result = canonicalize(f"""graph @g(%x: i64[5]) -> (i64[5]) {{
      %k = full() {{value = 0}} : i64[5]
      %y = {expr} : i64[5]
      return %y
    }}""")
    assert result.outputs == ("x",)


@pytest.mark.parametrize("k_value, k_type, x_type, result_type", [
    ("2.0", "f32[]", "f32[3]", "f32[3]"),        # not the neutral element
    ("1.0", "f32[2,3]", "f32[3]", "f32[2,3]"),   # x broadcasts: dropping k changes the shape
    ("true", "i1[]", "i1[3]", "i1[3]"),          # booleans are left alone
])
def test_mul_by_constant_stays_when_not_neutral(k_value, k_type, x_type, result_type) -> None:
    graph, result = canonicalize(f"""graph @g(%x: {x_type}) -> ({result_type}) {{
      %k = full() {{value = {k_value}}} : {k_type}
      %y = mul(%x, %k) : {result_type}
      return %y
    }}""")
    assert result == graph


# -- canonicalize: scalar constant folding ---------------------------------------------------
def test_scalar_constants_fold_through_a_chain() -> None:
    _, result = canonicalize("""graph @g(%x: f32[3]) -> (f32[3]) {
      %a = full() {value = 1.5} : f32[]
      %b = full() {value = 2.25} : f32[]
      %c = add(%a, %b) : f32[]
      %d = neg(%c) : f32[]
      %y = mul(%x, %d) : f32[3]
      return %y
    }""")
    assert "%d = full() {value = -3.75} : f32[]" in body(result)
    assert "%y = mul(%x, %d) : f32[3]" in body(result)


@pytest.mark.parametrize("text, expected", [
    ("""%a = full() {value = 1.1} : bf16[]
        %b = full() {value = 3.3} : bf16[]
        %y = mul(%a, %b) : bf16[]""", "bf16"),
    ("""%a = full() {value = 7} : i32[]
        %b = full() {value = 2} : i32[]
        %y = remainder(%a, %b) : i32[]""", "value = 1"),
    ("""%a = full() {value = 1} : i64[]
        %b = full() {value = 2} : i64[]
        %y = lt(%a, %b) : i1[]""", "value = true"),
    ("""%a = full() {value = 0.0} : f32[]
        %b = full() {value = 0.0} : f32[]
        %y = div(%a, %b) : f32[]""", "nan} : f32[]"),  # x86's default NaN is -nan, ARM's nan
    ("""%a = full() {value = 2.5} : f32[]
        %y = cast(%a) {dtype = "i32"} : i32[]""", "value = 2"),
])
def test_scalar_fold_matches_the_interpreter_bit_for_bit(text: str, expected: str) -> None:
    result_type = text.rsplit(": ", 1)[1]
    graph, result = canonicalize(f"""graph @g(%x: f32[1]) -> ({result_type}) {{
      {text}
      return %y
    }}""")
    (y,) = [n for n in result.nodes if n.name == "y"]
    assert y.op == "full" and expected in print_graph(result)


def test_scalar_fold_keeps_the_sign_of_nan() -> None:
    """neg(nan) folds to -nan, which prints as such and is not merged with a +nan by CSE."""
    _, result = canonicalize("""graph @g(%x: f32[1]) -> (f32[], f32[]) {
      %n = full() {value = nan} : f32[]
      %m = neg(%n) : f32[]
      %p = full() {value = nan} : f32[]
      return %m, %p
    }""")
    assert result.outputs == ("m", "n")  # %p merged into the equal %n, but not %m
    values = {n.name: n.attrs["value"] for n in result.nodes}
    assert math.copysign(1.0, values["m"]) == -1.0 and math.copysign(1.0, values["n"]) == 1.0
    assert "%m = full() {value = -nan} : f32[]" in body(result)
    reparsed = parse_graph(print_graph(result))
    assert math.copysign(1.0, reparsed.node_map()["m"].attrs["value"]) == -1.0
    assert Canonicalize().run(reparsed, PassContext()).outputs == ("m", "n")


def test_non_scalar_constants_are_not_folded() -> None:
    graph, result = canonicalize("""graph @g(%x: f32[1]) -> (f32[4]) {
      %a = full() {value = 1.0} : f32[4]
      %b = full() {value = 2.0} : f32[4]
      %y = add(%a, %b) : f32[4]
      return %y
    }""")
    assert result == graph


# -- canonicalize: CSE -----------------------------------------------------------------------
def test_cse_merges_equal_nodes_and_constants() -> None:
    _, result = canonicalize("""graph @g(%x: f32[4]) -> (f32[4], f32[4]) {
      %k1 = full() {value = 2.0} : f32[]
      %a = mul(%x, %k1) : f32[4]
      %k2 = full() {value = 2.0} : f32[]
      %b = mul(%x, %k2) : f32[4]
      %c = relu(%a) : f32[4]
      %d = relu(%b) : f32[4]
      return %c, %d
    }""")
    assert body(result) == ["%k1 = full() {value = 2.0} : f32[]", "%a = mul(%x, %k1) : f32[4]",
                            "%c = relu(%a) : f32[4]", "return %c, %c"]


@pytest.mark.parametrize("a, b", [
    ("full() {value = 1.0} : f32[]", "full() {value = 1} : f32[]"),    # int vs float literal
    ("full() {value = 1.0} : f32[]", "full() {value = 1.0} : f64[]"),  # type differs
    ("gelu(%x) : f32[4]", 'gelu(%x) {approximate = "tanh"} : f32[4]'),  # attrs differ
])
def test_cse_keeps_nodes_that_differ(a: str, b: str) -> None:
    result_types = [s.rsplit(": ", 1)[1] for s in (a, b)]
    graph, result = canonicalize(f"""graph @g(%x: f32[4]) -> ({', '.join(result_types)}) {{
      %a = {a}
      %b = {b}
      return %a, %b
    }}""")
    assert result == graph


def test_cse_treats_default_attributes_as_given() -> None:
    _, result = canonicalize("""graph @g(%x: f32[4]) -> (f32[4], f32[4]) {
      %a = gelu(%x) : f32[4]
      %b = gelu(%x) {approximate = "none"} : f32[4]
      return %a, %b
    }""")
    assert result.outputs == ("a", "a")


def test_cse_never_merges_nodes_with_regions() -> None:
    region = parse_graph("graph @e(%t: f32[2]) -> (f32[2]) {\n %r = relu(%t) : f32[2]\n return %r\n}")
    node = Node("m", "moe", ("x", "w"), TensorType((2,), "f32"), {"num_experts": 1, "top_k": 1}, (region,))
    assert _cse_key(node) is None


# -- canonicalize: fusion groups ------------------------------------------------------------
def test_cse_merges_nodes_of_one_group_or_two_ungrouped_only() -> None:
    _, result = canonicalize("""graph @g(%x: f32[4]) -> (f32[4], f32[4], f32[4], f32[4], f32[4]) {
      group 0 {kind = "pointwise"}
      group 1 {kind = "pointwise"}
      %a = exp(%x) : f32[4] group(0)
      %b = exp(%x) : f32[4] group(0)
      %c = exp(%x) : f32[4] group(1)
      %d = exp(%x) : f32[4]
      %e = exp(%x) : f32[4]
      return %a, %b, %c, %d, %e
    }""")
    assert result.outputs == ("a", "a", "c", "d", "d")
    assert [g.id for g in verify(result).groups] == [0, 1]


def test_cse_moves_a_group_anchor_to_the_node_it_merges_into() -> None:
    _, result = canonicalize("""graph @g(%x: f32[4]) -> (f32[4]) {
      group 0 {anchor = "b", kind = "pointwise"}
      %a = exp(%x) : f32[4] group(0)
      %b = exp(%x) : f32[4] group(0)
      %c = add(%a, %b) : f32[4] group(0)
      return %c
    }""")
    assert "%c = add(%a, %a) : f32[4] group(0)" in body(result)
    assert verify(result).groups[0].plan.anchor == "a"


def test_folded_constants_leave_their_group_and_emptied_groups_go() -> None:
    _, result = canonicalize("""graph @g(%x: f32[4]) -> (f32[4]) {
      group 0 {kind = "pointwise"}
      group 1 {kind = "pointwise"}
      %k = full() {value = 2.0} : f32[]
      %m = neg(%k) : f32[] group(0)
      %n = mul(%k, %k) : f32[] group(1)
      %y = mul(%x, %n) : f32[4] group(1)
      %z = add(%y, %m) : f32[4]
      return %z
    }""")
    lines = body(result)
    assert "%m = full() {value = -2.0} : f32[]" in lines  # ungrouped, as `fuse` leaves constants
    assert "%n = full() {value = 4.0} : f32[]" in lines
    assert [g.id for g in verify(result).groups] == [1]  # group 0 lost its only node; ids stay


# -- canonicalize: sweeps --------------------------------------------------------------------
class RewriteOncePerSweep(Pattern):
    """Test-only: rewrites the first node it is tried on (its loc counts the sweeps) once in
    each of the first `sweeps` sweeps, so a fixpoint takes exactly `sweeps` rewriting sweeps."""

    name = "test-once-per-sweep"

    def __init__(self, sweeps: int):
        self.sweeps, self.seen = sweeps, []

    def match_and_rewrite(self, node: Node, rewriter) -> None:
        if len(self.seen) >= self.sweeps or any(r is rewriter for r in self.seen):
            return
        self.seen.append(rewriter)
        rewriter.replace_node(node, node.with_(loc=f"sweep {len(self.seen)}"))


def test_max_iterations_bounds_the_rewriting_sweeps_not_the_confirming_one() -> None:
    graph = parse_graph(FOLDABLE)
    assert apply_patterns(graph, [RewriteOncePerSweep(2)], max_sweeps=2).nodes[0].loc == "sweep 2"
    with pytest.raises(CanonicalizeError, match=r"did not reach a fixpoint over @g in 1 rewriting "
                                                r"sweep \(max_iterations=1\)"):
        apply_patterns(graph, [RewriteOncePerSweep(2)], max_sweeps=1)


def test_max_iterations_one_is_enough_for_a_graph_one_sweep_canonicalizes() -> None:
    _, result = canonicalize(FOLDABLE, max_iterations=1)
    assert result == Canonicalize().run(parse_graph(FOLDABLE), PassContext())
    assert ops(result) == ["reshape", "relu", "add"]  # the dead reshape is left for dce


def test_canonicalize_is_idempotent_and_deterministic() -> None:
    graph = parse_graph("""graph @g(%x: f32[2,3], %w: f32[3,2] param) -> (f32[3,2]) {
      %a = reshape(%x) {shape = [6]} : f32[6]
      %b = reshape(%a) {shape = [3, 2]} : f32[3,2]
      %one = full() {value = 1.0} : f32[]
      %e = mul(%b, %one) : f32[3,2]
      %f = add(%e, %w) : f32[3,2]
      %g = add(%b, %w) : f32[3,2]
      %h = sub(%f, %g) : f32[3,2]
      return %h
    }""")
    once = Canonicalize().run(graph, PassContext())
    assert Canonicalize().run(once, PassContext()) == once
    assert print_graph(Canonicalize().run(graph, PassContext())) == print_graph(once)
    assert "%h = sub(%f, %f) : f32[3,2]" in body(once)
    assert_same_numerics(graph, once)


def test_disabled_patterns_do_not_fire() -> None:
    text = """graph @g(%x: f32[4]) -> (f32[4], f32[4]) {
      %a = relu(%x) : f32[4]
      %b = relu(%x) : f32[4]
      return %a, %b
    }"""
    graph = parse_graph(text)
    assert Canonicalize(disable_patterns=("cse",)).run(graph, PassContext()) == graph
    with pytest.raises(ValueError, match="unknown pattern"):
        Canonicalize(disable_patterns=("nope",))


def test_pattern_names_are_unique() -> None:
    names = [p.name for p in PATTERNS]
    assert len(names) == len(set(names))


# -- DCE -------------------------------------------------------------------------------------
def test_dce_removes_dead_chains_and_keeps_inputs() -> None:
    graph = parse_graph("""graph @g(%x: f32[4], %unused: f32[4], %w: f32[4] param) -> (f32[4]) {
      %dead1 = exp(%x) : f32[4]
      %dead2 = add(%dead1, %w) : f32[4]
      %live = relu(%x) : f32[4]
      %out = add(%live, %w) : f32[4]
      return %out
    }""")
    result = DeadCodeElimination().run(graph, PassContext())
    assert ops(result) == ["relu", "add"]
    assert result.inputs == graph.inputs
    assert_same_numerics(graph, result)


def test_dce_keeps_everything_live() -> None:
    graph = parse_graph("""graph @g(%x: f32[4]) -> (f32[4], f32[4]) {
      %a = exp(%x) : f32[4]
      %b = relu(%a) : f32[4]
      return %b, %a
    }""")
    assert DeadCodeElimination().run(graph, PassContext()) == graph


def test_dce_drops_groups_it_empties_and_keeps_the_other_ids() -> None:
    graph = parse_graph("""graph @g(%x: f32[4]) -> (f32[4]) {
      group 0 {kind = "pointwise"}
      group 1 {kind = "pointwise"}
      group 2 {kind = "pointwise"}
      %a = exp(%x) : f32[4] group(0)
      %b = neg(%x) : f32[4] group(1)
      %c = relu(%b) : f32[4] group(1)
      %d = add(%a, %a) : f32[4] group(2)
      return %d
    }""")
    result = verify(DeadCodeElimination().run(graph, PassContext()))
    assert [g.id for g in result.groups] == [0, 2] and ops(result) == ["exp", "add"]


def test_dce_clears_an_anchor_it_removes_from_a_live_group() -> None:
    graph = parse_graph("""graph @g(%x: f32[4]) -> (f32[4]) {
      group 0 {anchor = "a", kind = "pointwise"}
      %a = exp(%x) : f32[4] group(0)
      %b = relu(%x) : f32[4] group(0)
      return %b
    }""")
    result = verify(DeadCodeElimination().run(graph, PassContext()))
    assert result.groups[0].plan.anchor is None and result.groups[0].plan.kind == "pointwise"


# -- registry --------------------------------------------------------------------------------
def test_each_registered_name_is_the_pass_name_and_has_a_summary() -> None:
    assert {"canonicalize", "dce"} <= set(PASSES)
    for name, cls in PASSES.items():
        assert cls.name == name
        assert isinstance(cls.summary, str) and cls.summary.strip()
        cls.options()  # every option type is supported
        assert cls().name == name or any(o.required for o in cls.options())


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        PASSES["x"] = Canonicalize  # type: ignore[index]


def test_default_pipeline_parses() -> None:
    assert [p.name for p in parse_pipeline(DEFAULT_PIPELINE)] == ["canonicalize", "dce"]


def test_get_pass_suggests_close_names() -> None:
    with pytest.raises(UnknownPassError, match="did you mean canonicalize"):
        get_pass("canonicalise")


def test_register_pass_rejects_malformed_passes() -> None:
    class NotADataclass(Pass):
        name = "not-a-dataclass"
        summary = "x"

    @dataclass(frozen=True)
    class NoName(Pass):
        summary: ClassVar[str] = "x"

    @dataclass(frozen=True)
    class Duplicate(Pass):
        name: ClassVar[str] = "dce"
        summary: ClassVar[str] = "x"

    @dataclass(frozen=True)
    class BadOption(Pass):
        name: ClassVar[str] = "bad-option"
        summary: ClassVar[str] = "x"
        table: dict = field(default_factory=dict)

    for cls, error in ((NotADataclass, TypeError), (NoName, TypeError),
                       (Duplicate, ValueError), (BadOption, TypeError)):
        with pytest.raises(error):
            register_pass(cls)
    assert PASSES["dce"] is DeadCodeElimination
    assert "bad-option" not in PASSES and "not-a-dataclass" not in PASSES


# -- pipeline strings ------------------------------------------------------------------------
@dataclass(frozen=True)
class TileForTest(Pass):
    """A test-only pass with one option of each supported type (never registered)."""

    name: ClassVar[str] = "tile"
    summary: ClassVar[str] = "test-only"
    sizes: tuple[int, ...] = ()
    level: str = "sram"
    factor: float = 1.0
    unroll: bool = False
    limit: int | None = None

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return graph


TEST_REGISTRY = {"tile": TileForTest, "dce": DeadCodeElimination}


def test_pipeline_options_parse_into_typed_fields() -> None:
    (tile, dce) = parse_pipeline("tile{sizes=4,4 level=hbm factor=0.5 unroll=true limit=8}, dce",
                                 TEST_REGISTRY)
    assert tile == TileForTest(sizes=(4, 4), level="hbm", factor=0.5, unroll=True, limit=8)
    assert dce == DeadCodeElimination()
    assert parse_pipeline("tile{sizes=[2,3] limit=none}", TEST_REGISTRY)[0] == TileForTest(sizes=(2, 3))
    assert parse_pipeline("tile{}", TEST_REGISTRY)[0] == TileForTest()
    assert parse_pipeline("", TEST_REGISTRY) == ()


def test_pipeline_prints_back_to_the_same_passes() -> None:
    passes = parse_pipeline("tile{sizes=4,4 unroll=true},dce,tile", TEST_REGISTRY)
    text = format_pipeline(passes)
    assert text == "tile{sizes=4,4 unroll=true},dce,tile"
    assert parse_pipeline(text, TEST_REGISTRY) == passes


def test_option_names_may_use_dashes() -> None:
    (canon,) = parse_pipeline("canonicalize{max-iterations=3 disable-patterns=cse}")
    assert canon == Canonicalize(max_iterations=3, disable_patterns=("cse",))


@pytest.mark.parametrize("text, message", [
    ("tile{size=4}", r"pass 'tile' has no option 'size'; did you mean 'sizes'\?.*sizes: tuple\[int, \.\.\.\]"),
    ("tile{sizes=4,x}", r"pass 'tile' option sizes='4,x': not an integer \(expected tuple\[int, \.\.\.\]\)"),
    ("tile{unroll=maybe}", r"option unroll='maybe': not a boolean"),
    ("tile{factor=fast}", r"option factor='fast': not a number"),
    ("tile{sizes}", r"option 'sizes' should be written key=value"),
    ("tile{level=a level=b}", r"option 'level' given twice"),
    ("tile{sizes=4", r"missing '}'"),
    ("tile}", r"unbalanced"),
    ("tile{sizes=4}x", r"text after the options"),
    ("tile,,dce", r"empty pass name"),
    ("tiel", r"unknown pass 'tiel'; did you mean tile\? \(registered: dce, tile\)"),
])
def test_pipeline_errors_name_the_pass_and_option(text: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        parse_pipeline(text, TEST_REGISTRY)


def test_pass_validation_errors_become_pipeline_errors() -> None:
    with pytest.raises(PipelineError, match="pass 'canonicalize': max_iterations must be at least 1"):
        parse_pipeline("canonicalize{max_iterations=0}")


# -- the pass manager ------------------------------------------------------------------------


def headers(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("// -----//")]


def run_with(pipeline: str, graph_text: str = FOLDABLE, **instrumentation) -> tuple[Graph, str, PassManager]:
    stream = io.StringIO()
    manager = PassManager(pipeline, Instrumentation(stream=stream, **instrumentation))
    result = manager.run(parse_graph(graph_text))
    return result, stream.getvalue(), manager


def test_print_ir_after_change_prints_only_changing_passes() -> None:
    # the first dce finds nothing dead; canonicalize changes the IR; the second dce cleans up
    _, out, _ = run_with("dce,canonicalize,dce,dce", print_ir_after_change=True)
    assert headers(out) == ["// -----// IR Dump After canonicalize //----- //",
                            "// -----// IR Dump After dce //----- //"]
    after_dce = out.split("IR Dump After dce //----- //\n", 1)[1]
    assert parse_graph(after_dce.strip()).outputs == ("e",)


def test_print_ir_after_change_restricts_explicit_selection() -> None:
    _, out, _ = run_with("dce,canonicalize", print_ir_after={"dce"}, print_ir_after_change=True)
    assert headers(out) == []
    _, out, _ = run_with("dce,canonicalize", print_ir_after={"dce"})
    assert headers(out) == ["// -----// IR Dump After dce //----- //"]


def test_print_ir_before_and_after_all() -> None:
    _, out, _ = run_with("canonicalize,dce", print_ir_before={"dce"}, print_ir_after_all=True)
    assert headers(out) == ["// -----// IR Dump After canonicalize //----- //",
                            "// -----// IR Dump Before dce //----- //",
                            "// -----// IR Dump After dce //----- //"]


def test_printed_ir_parses_back() -> None:
    _, out, _ = run_with("canonicalize", print_ir_after_all=True)
    printed = out.split("//----- //\n", 1)[1]
    assert print_graph(parse_graph(printed)) == printed.rstrip("\n") + "\n"


def test_unknown_pass_in_print_flags_is_an_error() -> None:
    with pytest.raises(PipelineError, match="print_ir_after: unknown pass 'dec'"):
        PassManager("dce", Instrumentation(print_ir_after={"dec"}))


def test_dump_dir_writes_numbered_files_that_parse_back(tmp_path) -> None:
    mine = tmp_path / "notes.csir"
    mine.write_text("my own file")
    result, _, _ = run_with("canonicalize,dce", dump_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["00-input.csir", "01-canonicalize.csir", "02-dce.csir", "notes.csir"]
    assert mine.read_text() == "my own file"
    assert parse_graph((tmp_path / "00-input.csir").read_text()) == parse_graph(FOLDABLE)
    assert parse_graph((tmp_path / "02-dce.csir").read_text()) == result
    assert [parse_dump_name(tmp_path / n) for n in names[:3]] == [(0, "input"), (1, "canonicalize"), (2, "dce")]


def test_dump_dir_is_created(tmp_path) -> None:
    run_with("dce", dump_dir=tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / "01-dce.csir").exists()


def test_phase_of_dump() -> None:
    assert phase_of_dump("out/02-dce.csir") == "dce"
    assert phase_of_dump("00-input.csir") == "input"
    assert phase_of_dump("graph.csir") is None
    assert phase_of_dump("02-dce.txt") is None


def test_resume_from_a_dump_gives_the_same_result(tmp_path) -> None:
    pipeline = "canonicalize,dce"
    full, _, _ = run_with(pipeline, dump_dir=tmp_path)
    manager = PassManager(pipeline)
    for dump in ("00-input.csir", "01-canonicalize.csir", "02-dce.csir"):
        path = tmp_path / dump
        resumed = manager.run(parse_graph(path.read_text()), start_after=manager.resume_position(path))
        assert resumed == full
    assert manager.run(parse_graph((tmp_path / "01-canonicalize.csir").read_text()),
                       start_after="canonicalize") == full


def test_resume_checks_the_dump_matches_the_pipeline(tmp_path) -> None:
    manager = PassManager("canonicalize,dce")
    with pytest.raises(PipelineError, match="written after 'dce', but pass #1 of the pipeline is 'canonicalize'"):
        manager.resume_position(tmp_path / "01-dce.csir")
    with pytest.raises(PipelineError, match="not a numbered dump"):
        manager.resume_position(tmp_path / "graph.csir")
    with pytest.raises(PipelineError, match="runs 2 times"):
        PassManager("dce,dce").run(parse_graph(FOLDABLE), start_after="dce")


def test_resumed_dumps_continue_the_numbering(tmp_path) -> None:
    manager = PassManager("canonicalize,dce", Instrumentation(dump_dir=tmp_path))
    manager.run(parse_graph(FOLDABLE), start_after=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["02-dce.csir"]


@dataclass(frozen=True)
class BreakTypes(Pass):
    """Test-only: declares a wrong type on the last node, as a buggy pass might."""

    name: ClassVar[str] = "break-types"
    summary: ClassVar[str] = "test-only"

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        last = graph.nodes[-1]
        broken = last.with_(type=last.type.with_shape((99,)))
        return graph.with_nodes(graph.nodes[:-1] + (broken,))


def test_verify_each_names_the_pass_that_broke_the_ir() -> None:
    graph = parse_graph(FOLDABLE)
    manager = PassManager([Canonicalize(), BreakTypes(), DeadCodeElimination()])
    with pytest.raises(PassVerifyError, match=r"pass 'break-types' \(#2 of the pipeline\) produced invalid IR") as err:
        manager.run(graph)
    assert err.value.pass_name == "break-types" and err.value.diagnostics
    unchecked = PassManager([BreakTypes()], Instrumentation(verify_each=False)).run(graph)
    assert unchecked.nodes[-1].type.shape == (99,)


def test_verify_each_rejects_invalid_input() -> None:
    graph = parse_graph("graph @g(%x: f32[2]) -> (f32[2]) {\n %a = relu(%y) : f32[2]\n return %a\n}")
    with pytest.raises(PassVerifyError, match="the input IR is invalid before any pass runs"):
        PassManager("dce").run(graph)


def test_a_failing_pass_is_named_in_the_traceback() -> None:
    @dataclass(frozen=True)
    class Crash(Pass):
        name: ClassVar[str] = "crash"
        summary: ClassVar[str] = "test-only"

        def run(self, graph: Graph, ctx: PassContext) -> Graph:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom") as err:
        PassManager([Crash()]).run(parse_graph(FOLDABLE))
    assert any("crash" in note for note in getattr(err.value, "__notes__", ["crash"]))


def test_a_pass_error_names_the_failing_pass() -> None:
    @dataclass(frozen=True)
    class Refuse(Pass):
        name: ClassVar[str] = "refuse"
        summary: ClassVar[str] = "test-only"

        def run(self, graph: Graph, ctx: PassContext) -> Graph:
            raise PassError("cannot do that here")

    with pytest.raises(PassError, match=r"^pass 'refuse' \(#2 of the pipeline\) failed: "
                                        r"cannot do that here$") as err:
        PassManager([DeadCodeElimination(), Refuse()]).run(parse_graph(FOLDABLE))
    assert (err.value.pass_text, err.value.index) == ("refuse", 2)


def test_timing_table_lists_each_pass() -> None:
    _, out, manager = run_with("canonicalize,dce", timing=True)
    assert [t.name for t in manager.timings] == ["canonicalize", "dce"]
    assert manager.timings[0].nodes_before == 5 and manager.timings[-1].nodes_after == 2
    assert "pass timing" in out
    for word in ("canonicalize", "dce", "total", "nodes before", "nodes after", "%"):
        assert word in out


def test_compile_to_stops_after_the_named_pass() -> None:
    result, _, manager = run_with("canonicalize,dce", compile_to="canonicalize")
    assert [t.name for t in manager.timings] == ["canonicalize"]
    assert "a" in [n.name for n in result.nodes]  # dce did not run
    with pytest.raises(PipelineError, match="compile_to: pass 'tile' is not in the pipeline"):
        PassManager("canonicalize,dce", Instrumentation(compile_to="tile"))


@pytest.mark.parametrize("compile_to", [3, "3"])
def test_compile_to_takes_a_pass_number(compile_to) -> None:
    """A pass that runs twice is named by its number, as an int or (the CLI) a string."""
    with pytest.raises(PipelineError, match="runs 2 times in the pipeline .* give its number instead"):
        PassManager("dce,canonicalize,dce", Instrumentation(compile_to="dce"))
    _, _, manager = run_with("dce,canonicalize,dce,canonicalize", compile_to=compile_to)
    assert [(t.index, t.name) for t in manager.timings] == [(1, "dce"), (2, "canonicalize"), (3, "dce")]
    with pytest.raises(PipelineError, match=r"compile_to: pass #5 is outside the pipeline"):
        PassManager("canonicalize,dce", Instrumentation(compile_to=5 if compile_to == 3 else "5"))


def test_passes_never_mutate_their_input() -> None:
    graph = parse_graph(FOLDABLE)
    before = print_graph(graph)
    PassManager("canonicalize,dce").run(graph)
    assert print_graph(graph) == before


def test_context_is_explicit_and_read_only() -> None:
    ledger = Ledger()
    ctx = PassContext(target=None, options={"k": 1}, ledger=ledger)
    with pytest.raises(TypeError):
        ctx.options["k"] = 2  # type: ignore[index]
    ledger.record("fuse", "%a+%b", "refused", "reduction in between")
    assert [d.choice for d in ctx.ledger] == ["refused"] and len(ctx.ledger.by_pass("fuse")) == 1
    assert PassContext().ledger is not PassContext().ledger  # no shared state between contexts


def test_default_pipeline_preserves_numerics_on_a_mixed_graph() -> None:
    graph = parse_graph("""graph @g(%x: f32[2,3], %w: f32[3,2] param) -> (f32[3,2], f32[2,3]) {
      %a = reshape(%x) {shape = [6]} : f32[6]
      %b = reshape(%a) {shape = [3, 2]} : f32[3,2]
      %c = permute(%b) {perm = [1, 0]} : f32[2,3]
      %d = permute(%c) {perm = [1, 0]} : f32[3,2]
      %one = full() {value = 1.0} : f32[]
      %two = full() {value = 2.0} : f32[]
      %three = add(%one, %two) : f32[]
      %one2 = full() {value = 1.0} : f32[]
      %e = mul(%d, %one2) : f32[3,2]
      %f = add(%e, %w) : f32[3,2]
      %g = add(%e, %w) : f32[3,2]
      %h = mul(%g, %three) : f32[3,2]
      %i = cast(%x) {dtype = "f32"} : f32[2,3]
      return %h, %i
    }""")
    result = PassManager(DEFAULT_PIPELINE).run(graph)
    assert body(result) == ["%b = reshape(%x) {shape = [3, 2]} : f32[3,2]",
                            "%three = full() {value = 3.0} : f32[]",
                            "%f = add(%b, %w) : f32[3,2]",
                            "%h = mul(%f, %three) : f32[3,2]",
                            "return %h, %x"]
    assert_same_numerics(graph, result)


def test_passes_clean_up_inside_regions() -> None:
    graph = parse_graph("""graph @g(%x: f32[4,8], %router: f32[2,8] param, %w: f32[2,8,8] param) -> (f32[4,8]) {
      %m = moe(%x, %router, %w) {num_experts = 2, top_k = 1} : f32[4,8] ({
        graph @expert(%t: f32[4,8], %we: f32[8,8]) -> (f32[4,8]) {
          %r = reshape(%t) {shape = [4, 8]} : f32[4,8]
          %dead = exp(%t) : f32[4,8]
          %y = linear(%r, %we) : f32[4,8]
          return %y
        }
      })
      return %m
    }""")
    result = PassManager(DEFAULT_PIPELINE).run(graph)
    (expert,) = result.nodes[0].regions
    assert body(expert) == ["%y = linear(%t, %we) : f32[4,8]", "return %y"]
    assert_same_numerics(graph, result)


# -- partition: a backend's own regrouping, on the IR and in the ledger -------------------------------
CONV_GROUP = """
graph @conv_relu(%x: f32[1,3,8,8], %w: f32[4,3,3,3], %v: f32[4,8,8]) -> (f32[1,4,8,8], f32[4,64]) {
  group 3 {anchor = "c", kind = "convolution"}
  group 5 {kind = "pointwise"}
  %c = conv(%x, %w) {dilation = [1, 1], groups = 1, padding = [1, 1], stride = [1, 1]} : f32[1,4,8,8] group(3)
  %r = relu(%c) : f32[1,4,8,8] group(3)
  %e = exp(%r) : f32[1,4,8,8] group(3)
  %p = reshape(%v) {shape = [4, 64]} : f32[4,64] group(5)
  %n = neg(%p) : f32[4,64] group(5)
  return %e, %n
}
"""


def test_partition_is_the_identity_for_a_backend_without_rules() -> None:
    graph = parse_graph(CONV_GROUP)
    ctx = PassContext()
    for backend in ("cpp", "interpreter"):
        assert PassManager(f"partition{{backend={backend}}}").run(graph, ctx) is graph
    assert not ctx.ledger.by_pass("partition")


def test_partition_splits_a_group_the_backend_has_no_template_for() -> None:
    graph = parse_graph(CONV_GROUP)
    ctx = PassContext()
    out = PassManager("partition{backend=triton}").run(graph, ctx)
    groups = {n.name: n.group for n in out.nodes}
    assert groups["c"] is None and groups["r"] == groups["e"] not in (None, 3)  # conv alone, its epilogue fused
    assert groups["p"] == groups["n"] == 5  # a runnable group keeps its id and plan
    decisions = ctx.ledger.by_pass("partition")
    split = next(d for d in decisions if d.subject == "group 3")
    assert split.choice == "split" and split.data["rule"] == "no-template"
    assert "conv has no triton template" in split.reason
    assert [p["nodes"] for p in split.data["parts"]] == [["c"], ["r", "e"]]
    assert any(d.choice == "formed" and d.data["nodes"] == ["r", "e"] for d in decisions)
    assert_same_numerics(graph, out)


def test_partition_needs_a_known_backend_or_a_target() -> None:
    with pytest.raises(PipelineError, match="did you mean 'triton'"):
        parse_pipeline("partition{backend=trition}")
    with pytest.raises(PipelineError, match="target's host_backend"):
        PassManager("partition").run(parse_graph(CONV_GROUP), PassContext())
    from codesign.targets import load_target
    graph = parse_graph(CONV_GROUP)  # auto: the target's host backend (cpp on cpu-host: the identity)
    assert PassManager("partition").run(graph, PassContext(target=load_target("cpu-host"))) is graph
