"""Triton backend under TRITON_INTERPRET=1: every kernel template at small shapes against
the reference interpreter, kernel counts of grouped graphs, externs, the disk cache, and
the example models end to end against eager."""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

import codesign  # noqa: E402
from codesign.codegen.triton import TritonModule, fuse_all_pointwise, fuse_simple, generate  # noqa: E402
from codesign.ir import Graph, parse_graph, run_graph  # noqa: E402
from helpers import EXAMPLES, fresh_like, rel_err  # noqa: E402
from op_samples import check_nans  # noqa: E402

BF16_TOL, F32_TOL = 1e-2, 1e-5


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "codesign-cache"))


def random_inputs(graph: Graph, seed: int = 0) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)

    def make(t):
        if t.dtype.is_float:
            return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype.torch)
        if t.dtype.value == "i1":
            return torch.randint(0, 2, t.shape, generator=gen).bool()
        return torch.randint(0, 8, t.shape, generator=gen).to(t.dtype.torch)
    return ([make(i.type) for i in graph.runtime_inputs], {i.name: make(i.type) for i in graph.state_inputs})


def check(text: str, tol: float = F32_TOL, kernels: int | None = None, seed: int = 0) -> TritonModule:
    """Compile IR text, run it on random inputs, compare every output with `run_graph`."""
    graph = parse_graph(text)
    inputs, state = random_inputs(graph, seed)
    mod = TritonModule(graph, state, "test")
    got = mod(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    for g, want in zip(got, run_graph(graph, inputs, state)):
        assert g.shape == want.shape and g.dtype == want.dtype
        if want.dtype.is_floating_point:
            assert rel_err(g, want) <= tol, (rel_err(g, want), mod.source)
        else:
            assert torch.equal(g, want), mod.source
    if kernels is not None:
        assert jit_count(mod.source) == kernels, mod.report()
    return mod


def jit_count(source: str) -> int:
    return source.count("@triton.jit")


# -- pointwise groups: broadcasting and layout folded into the index arithmetic ----------------
POINTWISE_GROUP = """
graph @chain(%x: {dt}[2,3,8], %b: {dt}[8], %s: {dt}[2,1,1]) -> ({dt}[3,2,8], {dt}[2,3,16], {dt}[4,6,8]) {{
  group 0 {{kind = "pointwise"}}
  %c2 = full() {{value = 2.0}} : {dt}[] group(0)
  %mul = mul(%x, %c2) : {dt}[2,3,8] group(0)
  %add = add(%mul, %b) : {dt}[2,3,8] group(0)
  %sub = sub(%add, %s) : {dt}[2,3,8] group(0)
  %t = tanh(%sub) : {dt}[2,3,8] group(0)
  %g = gelu(%t) {{approximate = "tanh"}} : {dt}[2,3,8] group(0)
  %p = permute(%g) {{perm = [1, 0, 2]}} : {dt}[3,2,8] group(0)
  %lt = lt(%x, %c2) : i1[2,3,8] group(0)
  %w = where(%lt, %add, %sub) : {dt}[2,3,8] group(0)
  %sl = slice(%w) {{dim = 2, end = 8, start = 1, step = 2}} : {dt}[2,3,4] group(0)
  %n = neg(%sl) : {dt}[2,3,4] group(0)
  %cat = concat(%n, %w, %sl) {{dim = 2}} : {dt}[2,3,16] group(0)
  %r = reshape(%g) {{shape = [6, 8]}} : {dt}[6,8] group(0)
  %e = exp(%r) : {dt}[6,8] group(0)
  %r3 = reshape(%e) {{shape = [1, 6, 8]}} : {dt}[1,6,8] group(0)
  %ex = expand(%r3) {{shape = [4, 6, 8]}} : {dt}[4,6,8] group(0)
  return %p, %cat, %ex
}}
"""


@pytest.mark.parametrize("dt,tol", [("f32", F32_TOL), ("bf16", BF16_TOL)])
def test_pointwise_group_is_one_kernel(dt, tol):
    mod = check(POINTWISE_GROUP.format(dt=dt), tol, kernels=1)
    assert "mul_add_sub_tanh_etc_kernel" in mod.source or "kernel" in mod.meta["kernels"][0]["name"]


def test_layout_maps_floordiv_mod_and_pad():
    check("""
graph @layout(%x: f32[1,8,3,5], %y: f32[2,3,4,4]) -> (f32[1,2,6,10], f32[1,8,6,10], f32[2,3,6,7], f32[2,48,1]) {
  %ps = pixel_shuffle(%x) {factor = 2} : f32[1,2,6,10]
  %up = upsample_nearest(%x) {scales = [2, 2]} : f32[1,8,6,10]
  %pad = pad(%y) {pads = [0, 0, 0, 0, 1, 1, 2, 1], value = -1.5} : f32[2,3,6,7]
  %pu = pixel_unshuffle(%y) {factor = 2} : f32[2,12,2,2]
  %r = reshape(%pu) {shape = [2, 48, 1]} : f32[2,48,1]
  return %ps, %up, %pad, %r
}
""")


def test_integer_and_bool_ops():
    check("""
graph @ints(%a: i64[4,5], %b: i64[4,5], %f: f32[4,5]) -> (i64[4,5], i64[4,5], i1[4,5], f32[4,5], i64[5]) {
  %one = full() {value = 1} : i64[]
  %b1 = add(%b, %one) : i64[4,5]
  %r = remainder(%a, %b1) : i64[4,5]
  %d = div(%a, %b1) {rounding_mode = "floor"} : i64[4,5]
  %gt = gt(%a, %b) : i1[4,5]
  %nt = logical_not(%gt) : i1[4,5]
  %c = cast(%a) {dtype = "f32"} : f32[4,5]
  %m = maximum(%c, %f) : f32[4,5]
  %io = iota() {start = 3, step = 2} : i64[5]
  return %r, %d, %nt, %m, %io
}
""")


# -- reductions and norms ------------------------------------------------------------------------
REDUCTIONS = """
graph @red(%x: f32[3,5,40], %w: f32[40], %b: f32[40]) -> (f32[5,40], f32[3,5,1], f32[3,5], f32[3,5], i1[3,5], f32[3,5,40], f32[3,5,40], f32[3,5,40], f32[3,5,40], f32[3,5,40]) {
  %s0 = sum(%x) {dims = [0]} : f32[5,40]
  %m = mean(%x) {dims = [2], keepdim = true} : f32[3,5,1]
  %mx = amax(%x) {dims = [2]} : f32[3,5]
  %v = var(%x) {dims = [2]} : f32[3,5]
  %z = full() {value = 1.5} : f32[]
  %gt = gt(%x, %z) : i1[3,5,40]
  %an = any(%gt) {dims = [2]} : i1[3,5]
  %sm = softmax(%x) {dim = 2} : f32[3,5,40]
  %ls = log_softmax(%x) {dim = 2} : f32[3,5,40]
  %ln = layer_norm(%x, %w, %b) {normalized_rank = 1} : f32[3,5,40]
  %rn = rms_norm(%x, %w) {eps = 1e-06, normalized_rank = 1} : f32[3,5,40]
  %sm1 = softmax(%x) {dim = 1} : f32[3,5,40]
  return %s0, %m, %mx, %v, %an, %sm, %ls, %ln, %rn, %sm1
}
"""


def test_reductions_and_norms():
    mod = check(REDUCTIONS)
    kinds = {k["kind"] for k in mod.meta["kernels"]}
    assert "reduction" in kinds


def test_decomposed_rms_norm_group_is_one_row_kernel():
    mod = check("""
graph @rms(%x: bf16[4,6,64], %w: bf16[64]) -> (bf16[4,6,64]) {
  group 0 {kind = "reduction", anchor = "mean"}
  %two = full() {value = 2.0} : bf16[] group(0)
  %p = pow(%x, %two) : bf16[4,6,64] group(0)
  %mean = mean(%p) {dims = [2], keepdim = true} : bf16[4,6,1] group(0)
  %eps = full() {value = 1e-06} : bf16[] group(0)
  %a = add(%mean, %eps) : bf16[4,6,1] group(0)
  %r = rsqrt(%a) : bf16[4,6,1] group(0)
  %y = mul(%x, %r) : bf16[4,6,64] group(0)
  %z = mul(%w, %y) : bf16[4,6,64] group(0)
  return %z
}
""", BF16_TOL, kernels=1)
    assert "mean_pow_add_rsqrt_etc_kernel" in mod.source


def test_add_layer_norm_group_two_outputs():
    check("""
graph @addln(%x: f32[8,96], %y: f32[8,96], %w: f32[96], %b: f32[96]) -> (f32[8,96], f32[8,96]) {
  group 0 {kind = "reduction", anchor = "ln"}
  %a = add(%x, %y) : f32[8,96] group(0)
  %ln = layer_norm(%a, %w, %b) {normalized_rank = 1} : f32[8,96] group(0)
  %g = gelu(%ln) : f32[8,96] group(0)
  return %a, %g
}
""", kernels=1)


def test_nans_propagate_and_keep_their_sign_as_eager():
    """amax / amin of a row holding a NaN is NaN (`tl.max` alone drops it); a `-nan`
    literal is `-float("nan")`."""
    check_nans(lambda graph, inputs, state: TritonModule(graph, state, "test")(*inputs))


# -- matmul with prologue and epilogue ------------------------------------------------------------
@pytest.mark.parametrize("dt,tol", [("f32", F32_TOL), ("bf16", BF16_TOL), ("f16", BF16_TOL)])
def test_linear_gelu_residual_group(dt, tol):
    mod = check(f"""
graph @mlp(%x: {dt}[2,24,48], %w: {dt}[40,48], %b: {dt}[40], %res: {dt}[48,40]) -> ({dt}[48,40]) {{
  group 0 {{kind = "contraction", anchor = "fc", tile_smem = [1, 16, 16, 16]}}
  %fc = linear(%x, %w, %b) : {dt}[2,24,40] group(0)
  %g = gelu(%fc) : {dt}[2,24,40] group(0)
  %r = reshape(%g) {{shape = [48, 40]}} : {dt}[48,40] group(0)
  %o = add(%r, %res) : {dt}[48,40] group(0)
  return %o
}}
""", tol, kernels=1)
    assert "linear_gelu_add_kernel" in mod.source
    assert "BLOCK_M=16, BLOCK_N=16, BLOCK_K=16" in mod.source  # from tile_smem


def test_bmm_with_permute_prologue_and_batch_broadcast():
    check("""
graph @bmm(%a: f32[3,20,2,24], %b: f32[24,36], %c: f32[1,2,36,20]) -> (f32[3,2,20,36], f32[3,2,36,36]) {
  group 0 {kind = "contraction", anchor = "mm"}
  %p = permute(%a) {perm = [0, 2, 1, 3]} : f32[3,2,20,24] group(0)
  %s = sigmoid(%p) : f32[3,2,20,24] group(0)
  %mm = matmul(%s, %b) : f32[3,2,20,36] group(0)
  %mm2 = matmul(%c, %mm) : f32[3,2,36,36]
  return %mm, %mm2
}
""", kernels=2)


# -- flash attention -----------------------------------------------------------------------------
@pytest.mark.parametrize("dt,tol", [("f32", F32_TOL), ("f16", BF16_TOL), ("bf16", BF16_TOL)])
@pytest.mark.parametrize("causal", [False, True])
def test_attention(dt, tol, causal):
    mod = check(f"""
graph @attn(%q: {dt}[2,4,40,16], %k: {dt}[2,2,40,16], %v: {dt}[2,2,40,24]) -> ({dt}[2,4,40,24]) {{
  %o = attention(%q, %k, %v) {{causal = {str(causal).lower()}, scale = 0.25}} : {dt}[2,4,40,24]
  return %o
}}
""", tol, kernels=1)
    assert "attention_kernel" in mod.source and "tl.exp2" in mod.source


def test_attention_mask_cross_lengths_and_epilogue():
    check("""
graph @attn(%q: f32[2,24,16], %k: f32[2,40,16], %v: f32[2,40,16], %m: i1[24,40]) -> (f32[2,16,24]) {
  group 0 {kind = "attention", anchor = "o"}
  %o = attention(%q, %k, %v, %m) {scale = 0.3} : f32[2,24,16] group(0)
  %t = permute(%o) {perm = [0, 2, 1]} : f32[2,16,24] group(0)
  return %t
}
""", kernels=1)
    check("""
graph @causal_q_short(%q: f32[1,2,8,16], %k: f32[1,2,40,16], %v: f32[1,2,40,16]) -> (f32[1,2,8,16]) {
  %o = attention(%q, %k, %v) {causal = true, scale = 0.25} : f32[1,2,8,16]
  return %o
}
""")


# -- ops with no Triton code of their own: rendered from their scalar bodies and combiners -------
def test_bodies_and_combiners_from_the_ir():
    mod = check("""
graph @bodies(%x: f32[4,33], %y: f32[4,33], %i: i32[4,33]) -> (f32[4,33], f32[4,33], f32[4], f32[4,33], f32[4,33], i32[4], i32[4]) {
  %h = hardswish(%x) : f32[4,33]
  %l = logaddexp(%x, %y) : f32[4,33]
  %p = prod(%x) {dims = [1]} : f32[4]
  %e = exp(%y) : f32[4,33]
  %pw = pow(%e, %x) : f32[4,33]
  %r = remainder(%x, %e) : f32[4,33]
  %si = sum(%i) {dims = [1]} : i32[4]
  %mi = amin(%i) {dims = [1]} : i32[4]
  return %h, %l, %p, %pw, %r, %si, %mi
}
""")
    assert not mod.meta["externs"] and "tl.cumprod" in mod.source


# -- gathers, externs ----------------------------------------------------------------------------
def test_gathers():
    check("""
graph @gather(%table: f32[50,12], %ids: i64[3,7], %x: f32[6,9], %sel: i64[4]) -> (f32[3,7,12], f32[6,4], f32[4,9]) {
  %e = embedding(%table, %ids) : f32[3,7,12]
  %s = index_select(%x, %sel) {dim = 1} : f32[6,4]
  %i = index(%x, %sel) {dim = 0} : f32[4,9]
  return %e, %s, %i
}
""")


def test_conv_runs_as_a_named_extern():
    mod = check("""
graph @conv(%x: f32[1,3,10,10], %w: f32[4,3,3,3], %b: f32[4]) -> (f32[1,4,5,5]) {
  %c = conv(%x, %w, %b) {dilation = [1, 1], padding = [1, 1], stride = [2, 2]} : f32[1,4,5,5]
  %r = relu(%c) : f32[1,4,5,5]
  %p = max_pool(%r) {kernel = [2, 2], padding = [0, 0], stride = [1, 1]} : f32[1,4,4,4]
  %u = upsample_nearest(%p) {scales = [2, 2]} : f32[1,4,8,8]
  %s = slice(%u) {dim = 2, end = 5, start = 0, step = 1} : f32[1,4,5,8]
  %t = slice(%s) {dim = 3, end = 5, start = 0, step = 1} : f32[1,4,5,5]
  %o = add(%t, %c) : f32[1,4,5,5]
  return %o
}
""")
    assert "torch.nn.functional.conv2d" in mod.source
    assert {e["op"] for e in mod.meta["externs"]} == {"conv", "max_pool"}
    assert "extern %c (conv)" in mod.report()


# -- cache and grouping helpers --------------------------------------------------------------------
def test_disk_cache_is_keyed_by_ir_and_target(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path))
    graph = parse_graph(POINTWISE_GROUP.format(dt="f32"))
    first = TritonModule(graph, {}, "h100")
    again = TritonModule(graph, {}, "h100")
    other = TritonModule(graph, {}, "a100")
    assert not first.cache_hit and again.cache_hit and not other.cache_hit
    assert first.key == again.key != other.key
    assert first.path.parent.parent == tmp_path / "triton" and first.path.read_text() == again.source


def test_fuse_all_pointwise_makes_one_kernel_of_a_chain():
    graph = parse_graph("""
graph @chain(%x: f32[1000]) -> (f32[1000]) {
  %a = sin(%x) : f32[1000]
  %b = mul(%a, %x) : f32[1000]
  %c = exp(%b) : f32[1000]
  %d = add(%c, %a) : f32[1000]
  return %d
}
""")
    fused = fuse_all_pointwise(graph)
    assert len(fused.groups) == 1 and len(generate(fused).kernels) == 1
    assert len(generate(graph).kernels) == 4


# -- examples end to end -----------------------------------------------------------------------------
@pytest.mark.parametrize("spec,fuse", [("mlp.py:tiny", False), ("mlp.py:tiny", True),
                                       ("gpt2.py:tiny", True), ("llama.py:tiny", True)])
def test_examples_match_eager(spec, fuse):
    model, inputs = codesign.load_factory(str(EXAMPLES / spec))
    captured = codesign.capture(model, inputs)
    graph = partitioned(fuse_simple(captured.graph)) if fuse else captured.graph
    mod = TritonModule(graph, captured.state, "h100")
    fresh = fresh_like(inputs, seed=1)
    with torch.no_grad():
        want = model(*fresh)
    assert rel_err(mod(*fresh), want) <= F32_TOL, mod.report()
    if fuse and spec.startswith("mlp"):
        assert jit_count(mod.source) == 3  # linear+gelu, linear+relu, linear


def test_gpt2_with_the_fusion_pass_matches_eager():
    from codesign.passes import PassContext, PassManager
    from codesign.targets import load_target
    model, inputs = codesign.load_factory(str(EXAMPLES / "gpt2.py:tiny"))
    captured = codesign.capture(model, inputs)
    ctx = PassContext(target=load_target("h100"))
    graph = PassManager("canonicalize,dce,fuse,partition{backend=triton}").run(captured.graph, ctx)
    mod = TritonModule(graph, captured.state, load_target("h100"))
    fresh = fresh_like(inputs, seed=2)
    with torch.no_grad():
        want = model(*fresh)
    assert rel_err(mod(*fresh), want) <= F32_TOL
    assert mod.kernel_count < len(graph.nodes) // 2
    # the norm fused into each projection is its own kernel: split by the pass, in the ledger
    splits = [d for d in ctx.ledger.by_pass("partition") if d.choice == "split"]
    assert splits and all(d.data["rule"] == "one-anchor" for d in splits)
    assert any(d.choice == "moved" and d.data["rule"] == "sink-layout" for d in ctx.ledger.by_pass("partition"))


# -- the partition pass: the backend's regrouping, in the IR and the ledger ----------------------------
def partitioned(graph: Graph, ctx=None) -> Graph:
    from codesign.passes import PassContext, PassManager
    return PassManager("partition{backend=triton}").run(graph, ctx or PassContext())


NORM_INTO_LINEAR = """
graph @ln_linear(%x: f32[8,32], %g: f32[32], %b: f32[32], %w: f32[16,32]) -> (f32[8,16]) {
  group 0 {anchor = "y", kind = "norm_contraction"}
  %n = layer_norm(%x, %g, %b) {normalized_rank = 1} : f32[8,32] group(0)
  %y = linear(%n, %w) : f32[8,16] group(0)
  %t = tanh(%y) : f32[8,16] group(0)
  return %t
}
"""


def test_partition_splits_a_two_anchor_group_and_the_ledger_says_why():
    from codesign.passes import PassContext
    graph = parse_graph(NORM_INTO_LINEAR)
    ctx = PassContext()
    split = partitioned(graph, ctx)
    (decision,) = [d for d in ctx.ledger.by_pass("partition") if d.subject == "group 0"]
    assert decision.choice == "split" and decision.data["rule"] == "one-anchor"
    assert "%n, %y" in decision.reason and decision.data["backend"] == "triton"
    groups = {n.name: n.group for n in split.nodes}
    assert groups["n"] != groups["y"] == groups["t"]
    inputs, state = random_inputs(split)
    mod = TritonModule(split, state, "test")
    assert rel_err(mod(*inputs), run_graph(graph, inputs, state)[0]) <= F32_TOL
    assert jit_count(mod.source) == len(split.groups) == 2  # the groups the IR says, no more
    assert partitioned(split) is split  # runnable groups stay as they are


def test_statistics_of_the_same_rows_share_one_row_kernel():
    """A mean and a variance of the same rows (and what combines them) are one kernel: it
    loops over the rows once per statistic (here two operands of one shape, one read through
    a permute); a sum over other rows in the group makes it split as before."""
    graph = parse_graph("""
graph @stats(%x: f32[6,40], %u: f32[40,6]) -> (f32[6,1], f32[6,1]) {
  group 0 {anchor = "m", kind = "reduction"}
  %m = mean(%x) {dims = [1], keepdim = true} : f32[6,1] group(0)
  %v = var(%x) {correction = 0, dims = [1], keepdim = true} : f32[6,1] group(0)
  %s = add(%m, %v) : f32[6,1] group(0)
  %p = permute(%u) {perm = [1, 0]} : f32[6,40] group(0)
  %q = amax(%p) {dims = [1], keepdim = true} : f32[6,1] group(0)
  %r = add(%s, %q) : f32[6,1] group(0)
  return %m, %r
}
""")
    split = partitioned(graph)
    assert split is graph
    inputs, state = random_inputs(split)
    mod = TritonModule(split, state, "test")
    assert jit_count(mod.source) == len(split.groups) == 1
    other = parse_graph(str(graph).replace("return %m, %r", "%w = sum(%u) {dims = [0], keepdim = false} : "
                                           "f32[6] group(0)\n  return %m, %r").replace(
        "-> (f32[6,1], f32[6,1])", "-> (f32[6,1], f32[6,1])"))
    assert len({n.group for n in partitioned(other).nodes}) > 1
    for got, want in zip(mod(*inputs), run_graph(graph, inputs, state)):
        assert rel_err(got, want) <= F32_TOL


def test_a_producer_a_split_leaves_alone_joins_its_reader():
    """exp fused after an extern conv: the split leaves it alone; it joins the group that
    reads it (one kernel less, no intermediate written), and the ledger says so."""
    from codesign.passes import PassContext
    graph = parse_graph("""
graph @lone(%x: f32[1,4,6,6], %w: f32[4,4,3,3], %s: f32[1,4,6,6]) -> (f32[1,4,6,6]) {
  group 0 {anchor = "c", kind = "contraction"}
  group 1 {kind = "pointwise"}
  %c = conv(%x, %w) {dilation = [1, 1], groups = 1, padding = [1, 1], stride = [1, 1]} : f32[1,4,6,6] group(0)
  %e = exp(%c) : f32[1,4,6,6] group(0)
  %m = mul(%e, %s) : f32[1,4,6,6] group(1)
  %t = tanh(%m) : f32[1,4,6,6] group(1)
  return %t
}
""")
    ctx = PassContext()
    split = partitioned(graph, ctx)
    groups = {n.name: n.group for n in split.nodes}
    assert groups["e"] == groups["m"] == 1 and groups["c"] is None
    (moved,) = [d for d in ctx.ledger.by_pass("partition") if d.data.get("rule") == "lone-producer"]
    assert moved.subject == "%e" and moved.choice == "moved"
    inputs, state = random_inputs(split)
    mod = TritonModule(split, state, "test")
    assert jit_count(mod.source) == 1
    assert rel_err(mod(*inputs), run_graph(graph, inputs, state)[0]) <= F32_TOL


def test_a_group_of_cheap_nodes_read_by_one_group_joins_it():
    """A weight's cast and reshape, grouped alone, read only by the normalisation: one kernel."""
    from codesign.passes import PassContext
    graph = parse_graph("""
graph @param(%x: f32[2,8,5], %w: f16[8]) -> (f32[2,8,5]) {
  group 0 {kind = "pointwise"}
  group 1 {kind = "pointwise"}
  %c = cast(%w) {dtype = "f32"} : f32[8] group(0)
  %r = reshape(%c) {shape = [8, 1]} : f32[8,1] group(0)
  %m = mul(%x, %r) : f32[2,8,5] group(1)
  %t = tanh(%m) : f32[2,8,5] group(1)
  return %t
}
""")
    ctx = PassContext()
    split = partitioned(graph, ctx)
    assert {n.group for n in split.nodes} == {1} and [g.id for g in split.groups] == [1]
    moved = [d.subject for d in ctx.ledger.by_pass("partition") if d.data.get("rule") == "lone-producer"]
    assert "%c" in moved  # (the reshape moves there first: sink-layout)
    inputs, state = random_inputs(split)
    mod = TritonModule(split, state, "test")
    assert jit_count(mod.source) == 1
    assert rel_err(mod(*inputs), run_graph(graph, inputs, state)[0]) <= F32_TOL


def test_an_extern_convs_bias_is_added_by_its_readers():
    """The conv runs without its bias (cuDNN's bias is another pass over the output); both
    kernels reading it add it as they load; the result is unchanged. A conv returned by the
    graph keeps its bias."""
    from codesign.passes import PassContext
    text = """
graph @bias(%x: f32[1,4,6,6], %w: f32[8,4,3,3], %b: f32[8]) -> (f32[1,8,6,6], f32[1,8,6,6]) {
  group 0 {kind = "pointwise"}
  group 1 {kind = "pointwise"}
  %c = conv(%x, %w, %b) {dilation = [1, 1], groups = 1, padding = [1, 1], stride = [1, 1]} : f32[1,8,6,6]
  %e = exp(%c) : f32[1,8,6,6] group(0)
  %t = tanh(%c) : f32[1,8,6,6] group(1)
  %u = mul(%t, %t) : f32[1,8,6,6] group(1)
  return %e, %u
}
"""
    graph = parse_graph(text)
    ctx = PassContext()
    split = partitioned(graph, ctx)
    nodes = split.node_map()
    assert nodes["c"].operands == ("x", "w")
    adds = [n for n in split.nodes if n.op == "add"]
    assert sorted(n.group for n in adds) == [0, 1] and all(n.operands[0] == "c" for n in adds)
    (moved,) = [d for d in ctx.ledger.by_pass("partition") if d.data.get("rule") == "bias-epilogue"]
    assert moved.subject == "%c" and moved.data["groups"] == [0, 1]
    inputs, state = random_inputs(split)
    mod = TritonModule(split, state, "test")
    for got, want in zip(mod(*inputs), run_graph(graph, inputs, state)):
        assert rel_err(got, want) <= F32_TOL
    returned = parse_graph(text.replace("-> (f32[1,8,6,6], f32[1,8,6,6])", "-> (f32[1,8,6,6], f32[1,8,6,6], f32[1,8,6,6])")
                           .replace("return %e, %u", "return %e, %u, %c"))
    assert partitioned(returned).node_map()["c"].operands == ("x", "w", "b")


def test_a_hand_written_plan_after_partition_is_what_runs():
    graph = parse_graph("""
graph @plan(%x: f32[8,32], %w: f32[16,32], %v: f32[16,16]) -> (f32[8,16]) {
  group 4 {anchor = "y", kind = "contraction"}
  group 7 {anchor = "z", kind = "contraction"}
  %e = exp(%x) : f32[8,32] group(4)
  %y = linear(%e, %w) : f32[8,16] group(4)
  %z = linear(%y, %v) : f32[8,16] group(7)
  %t = tanh(%z) : f32[8,16] group(7)
  return %t
}
""")
    assert partitioned(graph) is graph
    inputs, state = random_inputs(graph)
    mod = TritonModule(graph, state, "test")
    assert jit_count(mod.source) == len(graph.groups) == 2
    assert rel_err(mod(*inputs), run_graph(graph, inputs, state)[0]) <= F32_TOL


def test_an_unrunnable_group_is_a_codegen_error_naming_it():
    from codesign.codegen import CodegenError
    graph = parse_graph(NORM_INTO_LINEAR)
    with pytest.raises(CodegenError, match=r"group 0 \(.*%n, %y, %t\) cannot run as one Triton kernel: "
                                           r"2 heavy anchors.*partition\{backend=triton\}"):
        TritonModule(graph, {}, "test")


def test_the_compiler_partitions_for_triton_and_falls_back_on_an_unrunnable_plan(monkeypatch):
    import dataclasses

    from codesign.compiler import CompiledModule
    from codesign.targets import load_target
    graph = parse_graph(NORM_INTO_LINEAR)
    inputs, state = random_inputs(graph)
    want = run_graph(graph, inputs, state)[0]
    cm = CompiledModule(graph, load_target("h200"), state, graph, "canonicalize", backend="triton")
    assert rel_err(cm(*inputs), want) <= F32_TOL  # partition{backend=triton} ran before code generation
    assert [d.data["rule"] for d in cm.ledger if d.choice == "split"] == ["one-anchor"]
    assert jit_count(cm.program("triton").source) == len(cm.graph_for("triton").groups) == 2
    # a pipeline that ended with partition: the plan runs as written, and this one cannot
    edited = dataclasses.replace(cm, pipeline="partition{backend=triton}", ledger=(), _programs={}, _graphs={},
                                 backend="auto")
    monkeypatch.setattr(edited, "backend_for", lambda inputs: "triton")
    with pytest.warns(UserWarning, match=r"triton backend cannot compile @ln_linear \(group 0 .*interpreter"):
        got = edited(*inputs)
    assert rel_err(got, want) <= F32_TOL and edited.graph_for("triton") is graph


# -- identical kernels defined once; CUDA graphs ------------------------------------------------------
TWO_LAYERS = """
graph @two(%x: f32[4,16], %w1: f32[16,16] param, %w2: f32[16,16] param) -> (f32[4,16]) {
  group 0 {kind = "gemm"}
  group 1 {kind = "gemm"}
  %h = linear(%x, %w1) : f32[4,16] group(0)
  %g = gelu(%h) {approximate = "none"} : f32[4,16] group(0)
  %r = add(%g, %x) : f32[4,16] group(0)
  %h2 = linear(%r, %w2) : f32[4,16] group(1)
  %g2 = gelu(%h2) {approximate = "none"} : f32[4,16] group(1)
  %r2 = add(%g2, %r) : f32[4,16] group(1)
  return %r2
}
"""


def test_a_layer_repeated_is_one_kernel_defined_once():
    """Two layers computing the same function on other buffers share one @triton.jit kernel
    (Triton compiles it once); the second kernel is bound to the first by name, and both run."""
    mod = check(TWO_LAYERS, kernels=1)
    assert len(mod.meta["kernels"]) == 2
    second = mod.meta["kernels"][1]["name"]
    assert f"{second} = {mod.meta['kernels'][0]['name']}" in mod.source


def test_kernels_that_differ_are_not_shared():
    """A changed constant (gelu's approximation) keeps the kernels apart."""
    check(TWO_LAYERS.replace('%g2 = gelu(%h2) {approximate = "none"}', '%g2 = gelu(%h2) {approximate = "tanh"}'),
          kernels=2)


def test_cuda_graphs_are_off_for_host_routed_externs_and_on_request():
    from codesign.codegen.triton.module import _why_no_graphs
    assert _why_no_graphs({"externs": []}, True) is None
    assert _why_no_graphs({"externs": []}, False) == "cuda_graphs=False"
    assert "routes on the host" in _why_no_graphs({"externs": [{"node": "m", "op": "moe"}]}, True)
    mod = check(TWO_LAYERS)
    assert "CUDA graphs: captured per input signature" in mod.report()
    assert not mod.graphs.usable([torch.zeros(1)])  # CPU tensors run under the interpreter


CUDA_GRAPH_CHECK = """
import torch
from codesign.codegen.triton import TritonModule
from codesign.ir import parse_graph, run_graph
graph = parse_graph(TEXT)
g = torch.Generator().manual_seed(0)
state = {i.name: torch.randn(i.type.shape, generator=g).cuda() for i in graph.state_inputs}
mod = TritonModule(graph, state, "h200")
xs = [torch.randn(4, 16, device="cuda") for _ in range(3)]
outs = [mod(x) for x in xs]
assert len(mod.graphs.captured) == 1 and mod.graphs.why_not is None, mod.graphs.why_not


def err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


for x, y in zip(xs, outs):  # each output kept its own values after later replays
    assert err(y, run_graph(graph, [x], state)[0]) <= 1e-2
state["w1"].mul_(2)  # in place: the replay reads the same memory
assert err(mod(xs[0]), run_graph(graph, [xs[0]], state)[0]) <= 1e-2
print("ok")
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replays_match_eager_and_outputs_are_not_overwritten(tmp_path):
    """On the GPU (a process without TRITON_INTERPRET, which this module sets): captured once,
    replayed for new inputs, each returned output its own, in-place weight updates seen."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = CUDA_GRAPH_CHECK.replace("TEXT", repr(TWO_LAYERS))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_measured_choices_are_keyed_recorded_and_read_back(tmp_path):
    """A choice is data in the verified cache: read back as written, keyed by shapes and
    launch, and anything but a known implementation is not a choice."""
    from codesign.codegen.triton import choice as choices
    a, b = torch.zeros(4, 8), torch.zeros(8, 4)
    key = choices.choice_key("d" * 64, (1, 1), [a, b], {"num_warps": 4})
    assert key != choices.choice_key("d" * 64, (1, 1), [a, torch.zeros(8, 5)], {"num_warps": 4})
    assert key != choices.choice_key("d" * 64, (1, 1), [a, b], {"num_warps": 8})
    assert key != choices.choice_key("e" * 64, (1, 1), [a, b], {"num_warps": 4})
    assert choices.load(key, tmp_path) is None
    made = choices.Choice("library", 1.39, 0.7)
    choices.store(key, made, tmp_path)
    assert choices.load(key, tmp_path) == made
    bad = choices.choice_key("f" * 64, (1, 1), [a], {})
    choices.store(bad, choices.Choice("rm -rf", 1.0, 2.0), tmp_path)
    assert choices.load(bad, tmp_path) is None
    assert "library (1.39 ms generated, 0.7 ms library form)" in made.line("k")
    from codesign.codegen.triton.kernels import Launch
    wide = choices.Choice("generated", 0.9, 1.2, Launch((4, 2), (("BLOCK_M", 128), ("BLOCK_N", 256)), 8, 3))
    assert choices.choice_key("d" * 64, (1, 1), [a, b], {"num_warps": 4}, [wide.launch]) != key
    assert choices.choice_key("d" * 64, (1, 1), [a, b], {"num_warps": 4}, graphed=True) != key
    choices.store(key, wide, tmp_path)
    assert choices.load(key, tmp_path) == wide and "at 128x256 w8 s3" in wide.line("k")


def test_gemm_and_attention_kernels_are_marked_for_measurement():
    mod = check(TWO_LAYERS)
    kinds = {k["kind"] for k in mod.meta["kernels"]}
    assert kinds == {"matmul"} and all(k["digest"] for k in mod.meta["kernels"])
    assert len({k["digest"] for k in mod.meta["kernels"]}) == 1  # the two layers: one kernel
    assert all(g.digest is not None for g in mod.guards.values())
    assert all(g.choice is None for g in mod.guards.values())  # nothing measured off the GPU


CHOICE_CHECK = """
import torch
from codesign.codegen.triton import TritonModule
from codesign.ir import parse_graph, run_graph
graph = parse_graph(TEXT)
g = torch.Generator().manual_seed(0)
state = {i.name: torch.randn(i.type.shape, generator=g).cuda() for i in graph.state_inputs}
x = torch.randn(4, 16, device="cuda")
first = TritonModule(graph, state, "h200", cuda_graphs=False)
y = first(x)
chosen = {n: g.choice for n, g in first.guards.items()}
assert all(c is not None for c in chosen.values()), chosen
second = TritonModule(graph, state, "h200", cuda_graphs=False)
import codesign.codegen.triton.choice as choices
choices.median_ms = None  # a second module reads the recorded choices: it measures nothing
y2 = second(x)
assert {n: g.choice for n, g in second.guards.items()} == chosen
want = run_graph(graph, [x], state)[0]
for out in (y, y2):
    assert ((out - want).norm() / want.norm()).item() <= 1e-2
print("ok", first.report())
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="measuring kernels needs a GPU")
def test_choices_measured_on_the_gpu_and_reused_by_the_next_module(tmp_path):
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CODESIGN_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", CHOICE_CHECK.replace("TEXT", repr(TWO_LAYERS))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
    assert "measured " in done.stdout


BF16_GEMM = """
graph @gemm(%x: bf16[M,64], %w: bf16[N,64] param, %r: bf16[M,N]) -> (bf16[M,N]) {
  group 0 {kind = "gemm"}
  %h = linear(%x, %w) : bf16[M,N] group(0)
  %s = silu(%h) : bf16[M,N] group(0)
  %o = add(%s, %r) : bf16[M,N] group(0)
  return %o
}
"""


F16_MATMUL = """
graph @gemm(%x: f16[M,64], %w: f16[64,N] param, %r: f16[M,N]) -> (f16[M,N]) {
  group 0 {kind = "gemm"}
  %h = matmul(%x, %w) : f16[M,N] group(0)
  %o = add(%h, %r) : f16[M,N] group(0)
  return %o
}
"""


@pytest.mark.parametrize("text,m,n", [(BF16_GEMM, 256, 512), (BF16_GEMM, 200, 320),
                                      (BF16_GEMM.replace("bf16", "f16"), 200, 320), (F16_MATMUL, 200, 320)])
def test_one_gemm_source_serves_every_candidate_launch(text, m, n):
    """The generated GEMM does not bake its block sizes in: launched at each candidate tile
    the measurement may keep (128x256 as well as the plan's), with its epilogue, under the
    interpreter, every launch gives the reference's values (a ragged M / N: masked tiles).
    In f16 the operands also load through tensor descriptors at one launch (`USE_TMA`; the
    interpreter's bf16 dot is wrong, so bf16 keeps pointer loads there): a linear's [N, K]
    weight transposed, a matmul's [K, N] as it is, the ragged edge zero-filled."""
    from codesign.codegen.triton.choice import Choice
    text = text.replace("M", str(m)).replace("N", str(n))
    mod = check(text, tol=2e-2)
    (kernel,) = mod.meta["kernels"]
    guard = mod.guards[kernel["name"]]
    tiles = {(u.options()["BLOCK_M"], u.options()["BLOCK_N"]) for u in guard.launches}
    assert (128, 256) in tiles or kernel["constexprs"]["BLOCK_N"] == 256, (kernel, tiles)
    f16 = "bf16" not in text
    assert any(u.options().get("USE_TMA") for u in guard.launches) == f16, guard.launches
    assert ("make_tensor_descriptor" in mod.source) == f16
    graph = parse_graph(text)
    for launch in guard.launches:
        inputs, _ = random_inputs(graph, seed=launch.grid[0])  # fresh inputs; the module's weights
        guard.choice = Choice("generated", 1.0, 2.0, launch)
        got = mod(*inputs)
        assert rel_err(got, run_graph(graph, inputs, mod.state)[0]) <= 2e-2, launch


def test_gemm_candidates_keep_the_masks_the_source_was_generated_with():
    """A dim the plan's block divides has no bounds mask in the source, so a candidate whose
    block does not divide it is no candidate (N = 384: 128 divides it, 256 does not)."""
    from codesign.codegen.triton.kernels import _gemm_launches
    tiles = [dict(u.constexprs) for u in _gemm_launches((4096, 384, 2048, 1), (128, 128, 64), True)]
    assert all(384 % t["BLOCK_N"] == 0 for t in tiles) and len(tiles) == 1
    ragged = [dict(u.constexprs) for u in _gemm_launches((4000, 5000, 2048, 1), (128, 128, 64), True)]
    assert {(t["BLOCK_M"], t["BLOCK_N"]) for t in ragged} == {(128, 128), (128, 256)}
    assert _gemm_launches((4096, 4096, 4096, 1), (64, 64, 32), False)[1:] == []  # f32: the plan's only


def test_measure_keeps_the_fastest_launch_and_skips_one_that_fails(monkeypatch):
    from codesign.codegen.triton import choice as choices
    from codesign.codegen.triton.kernels import Launch
    wide = Launch((16, 1), (("BLOCK_M", 128), ("BLOCK_N", 256), ("BLOCK_K", 64)), 8, 3)
    huge = Launch((4, 1), (("BLOCK_M", 256), ("BLOCK_N", 256), ("BLOCK_K", 128)), 8, 3)
    times = {"plan": 1.0, "wide": 0.8, "library": 0.79}

    def fake(run, repeats=5, graphed=False):
        return times[run()]

    def fails():
        raise RuntimeError("OutOfResources")
    monkeypatch.setattr(choices, "median_ms", fake)
    made = choices.measure({None: lambda: "plan", wide: lambda: "wide", huge: fails}, lambda: "library")
    assert made == choices.Choice("generated", 0.8, 0.79, wide)  # the library is not 3% faster
    times["library"] = 0.7
    assert choices.measure({None: lambda: "plan", wide: lambda: "wide"}, lambda: "library").implementation \
        == "library"
    with pytest.raises(RuntimeError):
        choices.measure({huge: fails}, lambda: "library")


@pytest.mark.parametrize("bias", [False, True])
def test_a_linear_with_unaligned_rows_is_padded_to_the_same_values(bias):
    """cuBLAS's fast kernels need 16-byte leading dims: a 50257-row bf16 weight (GPT-2's LM
    head) is padded with zero rows for the product and the extra columns dropped — the
    same values as the unpadded linear, in the same shape."""
    import torch.nn.functional as F
    from codesign.codegen.triton.fallback import _aligned_linear, _misaligned
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 24, generator=g, dtype=torch.float64)
    w = torch.randn(37, 24, generator=g, dtype=torch.float64)
    b = torch.randn(37, generator=g, dtype=torch.float64)
    operands = [x, w, b] if bias else [x, w]
    got = _aligned_linear(operands)
    assert got.shape == (2, 5, 37) and torch.allclose(got, F.linear(*operands), atol=1e-12)
    assert not _misaligned(operands)  # CPU tensors: nothing to pad for


SHARED_EPSILON = """
graph @norms(%x: f32[8,16], %w1: f32[16,16] param, %w2: f32[16,16] param, %g1: f32[16] param, %g2: f32[16] param, %w3: f32[16,16] param, %w4: f32[16,16] param) -> (f32[8,16], f32[8,16], f32[8,16]) {
  %eps = full() {value = 1e-06} : f32[]
  %two = full() {value = 2.0} : f32[]
  %p1 = pow(%x, %two) : f32[8,16]
  %m1 = mean(%p1) {dims = [-1], keepdim = true} : f32[8,1]
  %a1 = add(%m1, %eps) : f32[8,1]
  %r1 = rsqrt(%a1) : f32[8,1]
  %n1 = mul(%x, %r1) : f32[8,16]
  %s1 = mul(%n1, %g1) : f32[8,16]
  %h1 = linear(%s1, %w1) : f32[8,16]
  %h3 = linear(%s1, %w3) : f32[8,16]
  %p2 = pow(%h1, %two) : f32[8,16]
  %m2 = mean(%p2) {dims = [-1], keepdim = true} : f32[8,1]
  %a2 = add(%m2, %eps) : f32[8,1]
  %r2 = rsqrt(%a2) : f32[8,1]
  %n2 = mul(%h1, %r2) : f32[8,16]
  %s2 = mul(%n2, %g2) : f32[8,16]
  %h2 = linear(%s2, %w2) : f32[8,16]
  %h4 = linear(%s2, %w4) : f32[8,16]
  return %h2, %h3, %h4
}
"""


def test_norms_sharing_one_epsilon_are_grouped_each_on_its_own():
    """The regrouping after a split (`fuse_simple` on the ungrouped graph) joins cheap nodes
    of one stage only: two RMSNorms reading one epsilon literal are not one group across the
    model — which closed a cycle through the matmuls between them and left every node of a
    4-layer Llama a kernel of its own (98 kernels on the H200; 57 with this)."""
    graph = parse_graph(SHARED_EPSILON)  # each norm read by two matmuls: a group of its own
    grouped = fuse_simple(graph)
    owner = {n.name: n.group for n in grouped.nodes}
    assert owner["h1"] is not None and owner["h2"] is not None, grouped  # the regrouping was not given up
    assert owner["n1"] == owner["s1"] and owner["n2"] == owner["s2"]
    assert owner["n1"] is not None and owner["n1"] != owner["n2"]
    check(SHARED_EPSILON)


def test_a_descriptor_launch_is_not_used_on_a_buffer_off_its_16_byte_boundary():
    """A tensor descriptor's base must be 16-byte aligned (the copy engine faults otherwise):
    given a view at an odd offset, a kernel whose chosen launch loads through descriptors
    runs its pointer-load launch, with the same values."""
    from codesign.codegen.triton.choice import Choice
    from codesign.codegen.triton.fallback import _aligned
    text = BF16_GEMM.replace("bf16", "f16").replace("M", "200").replace("N", "320")
    mod = check(text, tol=2e-2)
    (kernel,) = mod.meta["kernels"]
    guard = mod.guards[kernel["name"]]
    (tma,) = [u for u in guard.launches if u.options().get("USE_TMA")]
    guard.choice = Choice("generated", 1.0, 2.0, tma)
    graph = parse_graph(text)
    inputs, _ = random_inputs(graph, seed=5)
    odd = torch.empty(inputs[0].numel() + 1, dtype=inputs[0].dtype)[1:].view(inputs[0].shape)
    odd.copy_(inputs[0])
    assert not _aligned([odd]) and _aligned(inputs)
    launched = []
    real = guard.kernel

    class Spy:
        def __getitem__(self, grid):
            def run(*args, **options):
                launched.append(options.get("USE_TMA"))
                return real[grid](*args, **options)
            return run
    guard.kernel = Spy()
    got = mod(odd, inputs[1])
    assert launched == [0], launched  # the pointer loads, not the chosen descriptor launch
    assert rel_err(got, run_graph(graph, [odd, inputs[1]], mod.state)[0]) <= 2e-2
