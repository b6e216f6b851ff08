"""C++ backend: every op family, grouped kernels, example models, the cache, export + CMake.

The op-family graphs are shared with the MLIR export tests (tests/op_samples.py). Each one
holds several ops (a compile costs about a second on 2 cores) and every output is compared
with the interpreter on fresh random inputs: floats to a relative error of 1e-5 in f32 (1e-2
in bf16 / f16), integers and booleans exactly.
Example models are compiled once per session (module-scoped fixtures).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch

from codesign.codegen import CodegenError
from codesign.codegen.cpp import CppModule, export_cpp, generate
from codesign.ir import parse_graph, run_graph
from helpers import EXAMPLES, rel_err
from op_samples import MOE_ROUTED, OpSample, check_nans, check_sample, sample_params


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    """Build into a per-session cache unless the caller chose one (keeps ~/.cache clean)."""
    if "CODESIGN_CACHE_DIR" in os.environ:
        yield
        return
    os.environ["CODESIGN_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "cpp-cache")
    yield
    os.environ.pop("CODESIGN_CACHE_DIR", None)


def check_cpp(sample: OpSample) -> CppModule:
    """Compile `sample` to C++, run it, and compare every output with the interpreter."""
    built: list[CppModule] = []

    def run(graph, inputs, state):
        built.append(CppModule(graph, state))
        return built[-1].run(inputs)
    check_sample(sample, run)
    return built[-1]


@pytest.mark.parametrize("sample", sample_params("cpp"))
def test_op_sample(sample: OpSample):
    """Every shared op-family graph (tests/op_samples.py) matches the interpreter."""
    check_cpp(sample)


def test_nans_propagate_and_keep_their_sign_as_eager():
    """amax / amin of a row holding a NaN is NaN; a `-nan` literal is `(-NAN)`, not `NAN`."""
    check_nans(lambda graph, inputs, state: CppModule(graph, state).run(inputs))


# -- grouped kernels: a pointwise chain is one loop nest, intermediates stay in registers -------
CHAIN = """graph @chain(%x: f32[4,64], %y: f32[64], %b: bf16[4,64]) -> (f32[4,64], f32[4,64], bf16[4,64]) {
  group 0 {anchor = "out", kind = "pointwise"}
  group 1 {anchor = "hb", kind = "pointwise", tile_l1 = [2, 16]}
  %c = full() {value = 0.5} : f32[] group(0)
  %t0 = mul(%x, %c) : f32[4,64] group(0)
  %t1 = add(%t0, %y) : f32[4,64] group(0)
  %t2 = tanh(%t1) : f32[4,64] group(0)
  %out = mul(%t2, %x) : f32[4,64] group(0)
  %side = exp(%t1) : f32[4,64] group(0)
  %perm = permute(%out) {perm = [0, 1]} : f32[4,64]
  %hb0 = cast(%side) {dtype = "bf16"} : bf16[4,64] group(1)
  %hb1 = mul(%hb0, %b) : bf16[4,64] group(1)
  %hb = silu(%hb1) : bf16[4,64] group(1)
  return %out, %perm, %hb
}
"""


def test_pointwise_group_is_one_loop_nest_without_intermediate_stores():
    module = check_cpp(OpSample("chain", CHAIN, seed=20, tol=1e-2))
    src = module.source
    plan = module.code.plan
    # t0, t1, t2 and the constant never get memory; out and side leave the group
    assert not {"t0", "t1", "t2", "c", "hb0", "hb1"} & plan.materialized
    assert {"out", "side", "hb"} <= plan.materialized
    fn = next(f for f in module.code.kernel_functions if f.endswith("_mul_add_tanh_exp"))
    body = src[src.index(f"static void {fn}("):]
    body = body[:body.index("\n}\n")]
    assert body.count("#pragma omp parallel") == 1, body  # one loop nest for the whole chain
    assert body.count("] = ") == 2  # two stores: %out and %side
    assert "cs_tanh" in body and "cs_exp" in body
    # the tiled bf16 group follows its plan
    assert "tiled by the group's plan: [2, 16]" in src
    assert module.code.kernel_count == 3 and len(module.code.kernel_functions) == 3


def test_reduction_group_inlines_its_prologue():
    module = check_cpp(OpSample("rms", """graph @rms(%x: f32[8,32], %w: f32[32] param) -> (f32[8,32]) {
  group 0 {anchor = "ms", kind = "reduction"}
  %sq = mul(%x, %x) : f32[8,32] group(0)
  %ms = mean(%sq) {dims = [1], keepdim = true} : f32[8,1] group(0)
  %e = full() {value = 1e-06} : f32[] group(0)
  %d = add(%ms, %e) : f32[8,1] group(0)
  %r = rsqrt(%d) : f32[8,1] group(0)
  %y = mul(%x, %r) : f32[8,32] group(0)
  %out = mul(%y, %w) : f32[8,32] group(0)
  return %out
}
""", seed=21))
    plan = module.code.plan
    assert "sq" not in plan.materialized and "ms" in plan.materialized
    assert len(module.code.kernel_functions) == 1


def test_identical_layers_share_one_function_and_reshape_is_a_view():
    module = check_cpp(OpSample("two", """graph @two(%x: f32[4,8], %w1: f32[8,8] param, %w2: f32[8,8] param) -> (f32[32]) {
  %a = linear(%x, %w1) : f32[4,8]
  %b = relu(%a) : f32[4,8]
  %c = linear(%b, %w2) : f32[4,8]
  %d = relu(%c) : f32[4,8]
  %flat = reshape(%d) {shape = [32]} : f32[32]
  return %flat
}
""", seed=22))
    assert len(module.code.kernel_functions) == 2  # linear and relu, each written once
    assert module.code.plan.aliases == {"flat": "d"}
    # %a and %c have disjoint lifetimes: the arena reuses memory
    assert module.code.plan.arena_bytes < 3 * 4 * 8 * 4 + 64 * 3


def test_routed_moe_matches_the_interpreter_for_fresh_weights():
    """Routing in C++ (softmax, top-k, scatter) and the expert region as its own program:
    the same outputs as the reference, for several random routers (different routings)."""
    graph = parse_graph(MOE_ROUTED)
    code = generate(graph)
    assert "static int m0_run(" in code.source and "m0_run(region_inputs" in code.source
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        x, router, w = (torch.randn(s, generator=gen) for s in ((4, 8), (2, 8), (2, 8, 8)))
        got = CppModule(graph, {"router": router, "w": w})(x)
        want = run_graph(graph, (x,), {"router": router, "w": w})[0]
        assert rel_err(got, want) <= 1e-6, seed


def test_moe_runs_routed_rows_in_blocks_and_matches_eager():
    """160 tokens: the expert body is row-wise, so it is compiled for 32-row blocks and runs
    on the routed rows only (packed), not on every token per expert."""
    from codesign.frontend import capture, load_factory
    model, inputs = load_factory(str(EXAMPLES / "mixtral_moe.py:tiny"))
    x = torch.randn(4, 40, inputs[0].shape[-1], generator=torch.Generator().manual_seed(2))
    captured = capture(model, (x,))
    module = CppModule(captured.graph, captured.state)
    assert "for 32 rows a call" in module.source and "packed" in module.source
    fresh = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(fresh)
    assert rel_err(module(fresh), want) <= 1e-5


MOE_MIXING = """graph @mixing(%x: f32[40,8], %router: f32[2,8] param, %w: f32[2,8,8] param) -> (f32[40,8]) {
  %y = moe(%x, %router, %w) {num_experts = 2, top_k = 1} : f32[40,8] ({
    graph @expert(%t: f32[40,8], %we: f32[8,8]) -> (f32[40,8]) {
      %s = softmax(%t) {dim = 0} : f32[40,8]
      %o = linear(%s, %we) : f32[40,8]
      return %o
    }
  })
  return %y
}
"""


def test_moe_whose_body_mixes_tokens_runs_on_all_rows():
    """A body that mixes tokens (softmax over them) is not row-wise: no row blocks, the
    body runs on every token as the reference does, and the outputs agree."""
    from codesign.codegen.cpp.regions import row_block
    graph = parse_graph(MOE_MIXING)
    assert row_block(graph.nodes[0].regions[0], 32) is None
    assert row_block(parse_graph(MOE_MIXING.replace("{dim = 0}", "{dim = 1}")).nodes[0].regions[0], 32) is not None
    gen = torch.Generator().manual_seed(4)
    x, router, w = (torch.randn(s, generator=gen) for s in ((40, 8), (2, 8), (2, 8, 8)))
    module = CppModule(graph, {"router": router, "w": w})
    assert "for 40 rows a call" in module.source
    assert rel_err(module(x), run_graph(graph, (x,), {"router": router, "w": w})[0]) <= 1e-6


def test_every_registered_op_has_an_emitter_or_a_scalar_body():
    """Every op reaches C++ through its template's emitter or its scalar body, and every
    scalar primitive has a C++ rendering."""
    from codesign.codegen.cpp.exprs import is_expression_op
    from codesign.codegen.cpp.kernels import EMITTERS
    from codesign.codegen.cpp.scalar import BINARY, UNARY
    from codesign.ir import OPS
    from codesign.ir.scalar import Prim
    missing = [n for n, op in OPS.items() if op.template not in EMITTERS and not is_expression_op(n)]
    assert not missing, f"ops the C++ backend cannot generate: {missing}"
    assert set(Prim) <= set(UNARY) | set(BINARY) | {Prim.cast, Prim.select}


# -- the cache ---------------------------------------------------------------------------------------
def test_second_build_hits_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(tmp_path / "cache"))
    graph = parse_graph("""graph @cached(%x: f32[16]) -> (f32[16]) {
  %y = exp(%x) : f32[16]
  return %y
}
""")
    first = CppModule(graph)
    assert not first.built.cached and first.built.seconds > 0
    second = CppModule(graph)
    assert second.built.cached and second.built.library == first.built.library
    assert str(first.built.library).startswith(str(tmp_path / "cache"))
    x = torch.randn(16)
    assert torch.allclose(second(x), torch.exp(x), rtol=1e-6)


# -- example models through the C++ backend, each compiled once -----------------------------------
@pytest.fixture(scope="module", params=["mlp.py:tiny", "cnn.py:tiny", "gpt2.py:tiny", "llama.py:tiny",
                                        "vae_decoder.py:tiny", "mixtral_moe.py:tiny", "mixtral_moe.py:tiny_model"])
def example(request):
    from codesign.frontend import capture, load_factory
    model, inputs = load_factory(str(EXAMPLES / request.param))
    captured = capture(model, inputs)
    return request.param, model, inputs, captured, CppModule(captured.graph, captured.state)


def test_example_matches_eager_on_fresh_inputs(example):
    name, model, inputs, captured, module = example
    gen = torch.Generator().manual_seed(5)
    fresh = tuple(torch.randn(x.shape, generator=gen, dtype=x.dtype) if x.dtype.is_floating_point
                  else torch.randint(0, 64, x.shape, generator=gen, dtype=x.dtype) for x in inputs)
    with torch.no_grad():
        want = model(*fresh)
    got = module(*fresh)
    assert rel_err(got, want) <= 1e-5, f"{name}: relative error {rel_err(got, want):.2e}"


# -- export: sources, weights, CMake, on a clean build tree ----------------------------------------
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_export_cpp_builds_with_cmake_and_runs(tmp_path):
    graph = parse_graph(MLP_SMALL)
    torch.manual_seed(3)
    state = {i.name: torch.randn(i.type.shape) for i in graph.state_inputs}
    out = export_cpp(graph, state, tmp_path / "mlp")
    names = {p.name for p in out.iterdir()}
    assert {"mlp.cpp", "mlp.h", "mlp.weights.bin", "mlp_weights.h", "main.cpp", "CMakeLists.txt"} <= names
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(out), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True, timeout=60)
    subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True, timeout=120)
    run = subprocess.run([str(build / "mlp_main"), str(out / "mlp.weights.bin")], capture_output=True,
                         text=True, timeout=60, check=True)
    assert "output 0 %y f32[4,10]: sum" in run.stdout
    # the demo's checksum equals the interpreter's on the same pseudo-random input
    seed, values = 12345, []
    for _ in range(4 * 32):
        seed = (seed * 1664525 + 1013904223) % (1 << 32)
        values.append((seed >> 8) / 16777216.0 - 0.5)
    x = torch.tensor(values, dtype=torch.float32).reshape(4, 32)
    want = run_graph(graph, [x], state)[0].double().sum().item()
    got = float(run.stdout.split("sum ")[1].split()[0])
    assert abs(got - want) <= 1e-4 * max(1.0, abs(want))


MLP_SMALL = """graph @mlp(%x: f32[4,32], %fc1.weight: f32[64,32] param, %fc1.bias: f32[64] param, %fc2.weight: f32[10,64] param, %fc2.bias: f32[10] param) -> (f32[4,10]) {
  %h1 = linear(%x, %fc1.weight, %fc1.bias) : f32[4,64]
  %a1 = gelu(%h1) : f32[4,64]
  %y = linear(%a1, %fc2.weight, %fc2.bias) : f32[4,10]
  return %y
}
"""


ERF_GRID = """graph @erf(%x: f32[N]) -> (f32[N], f32[N]) {
  %e = erf(%x) : f32[N]
  %g = gelu(%x) {approximate = "none"} : f32[N]
  return %e, %g
}
"""


def test_erf_is_within_three_ulp_of_the_exact_value():
    """The runtime's own erf (so GCC vectorises the GELU epilogue): on a dense grid over
    [-6, 6] and at ±0, ±inf and NaN, within 3 ulp of erf in float64 rounded to f32, and the
    exact GELU built on it as close to torch's as torch's float32 is to float64."""
    import math
    grid = torch.linspace(-6, 6, 200_001, dtype=torch.float32)
    special = torch.tensor([0.0, -0.0, 1.0, -1.0, 4.0, -4.0, math.inf, -math.inf, math.nan, 1e-30, -3.9999])
    x = torch.cat([grid, special])
    graph = parse_graph(ERF_GRID.replace("N", str(x.numel())))
    module = CppModule(graph, {})
    assert "= cs_erf(" in module.source or "(cs_erf(" in module.source  # the kernels call it, not std::erf
    erf, gelu = module(x)
    exact = torch.erf(x.double())
    ulp = (erf.double() - exact).abs() / torch.finfo(torch.float32).eps / exact.abs().clamp_min(2 ** -126)
    finite = x.isfinite()
    assert ulp[finite].max() <= 3, (ulp[finite].max(), x[finite][ulp[finite].argmax()])
    assert torch.equal(erf[~finite & ~x.isnan()], exact[~finite & ~x.isnan()].float())
    zero = grid.numel()
    assert erf[x.isnan()].isnan().all() and erf[zero] == 0 and not torch.signbit(erf[zero])
    assert erf[zero + 1] == 0 and torch.signbit(erf[zero + 1])  # erf(-0) = -0
    want = torch.nn.functional.gelu(x.double())
    torch_err = (torch.nn.functional.gelu(x) - want)[finite].abs().max()
    assert (gelu - want)[finite].abs().max() <= 4 * torch_err, ((gelu - want)[finite].abs().max(), torch_err)
