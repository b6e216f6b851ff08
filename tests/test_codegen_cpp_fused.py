"""C++ backend on fused graphs: every group kind the fusion pass produces, GEMM via BLAS.

Models are captured once (module fixture) and compiled through `codesign.compile` for each
target ("cpu-host", "h100", "sn40l": different group kinds, e.g. sn40l's `layer` groups),
then run on CPU inputs through the C++ backend (pinned, so a failure is not hidden by the
interpreter fallback) and compared with eager PyTorch: fp32 relative error <= 1e-5. Hand-
written IR checks the fused GEMM epilogue (bias, gelu, residual on each tile) against the
interpreter, with OpenBLAS (scipy-openblas32) and with the hand GEMM fallback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import codesign
from codesign.codegen.cpp import CppModule, export_cpp
from codesign.codegen.cpp.build import BLAS_NAME, blas_fits_cpu, find_blas
from codesign.ir import parse_graph, run_graph

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HAVE_BLAS = find_blas() is not None
HAND_WITH_BLAS = "packed hand GEMM (BLAS linked, off)"


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    if "CODESIGN_CACHE_DIR" in os.environ:
        yield
        return
    os.environ["CODESIGN_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "cpp-cache-fused")
    yield
    os.environ.pop("CODESIGN_CACHE_DIR", None)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)).item()


_CAPTURED: dict[str, tuple] = {}


def captured(name: str):
    if name not in _CAPTURED:
        model, inputs = codesign.load_factory(str(EXAMPLES / name))
        _CAPTURED[name] = (model, inputs, codesign.capture(model, inputs))
    return _CAPTURED[name]


_COMPILED: dict[tuple[str, str], codesign.CompiledModule] = {}


def compiled(name: str, target: str):
    if (name, target) not in _COMPILED:
        _COMPILED[name, target] = codesign.compile(captured(name)[2], target=target, backend="cpp")
    return _COMPILED[name, target]


@pytest.mark.parametrize("target", ["cpu-host", "h100", "sn40l"])
@pytest.mark.parametrize("name", ["gpt2.py:tiny", "llama.py:tiny", "cnn.py:tiny", "vae_decoder.py:tiny"])
def test_compiled_model_matches_eager(name, target):
    model, inputs, cap = captured(name)
    cm = compiled(name, target)
    kinds = {g.attrs.get("kind") for g in cm.graph.groups}
    assert cm.graph.groups, f"{name} on {target}: the fusion pass made no groups"
    got = cm(*inputs)
    with torch.no_grad():
        want = model(*inputs)
    err = rel_err(got, want)
    assert err <= 1e-5, f"{name} on {target} (groups {sorted(map(str, kinds))}): relative error {err:.2e}"
    program = cm.program("cpp")
    assert isinstance(program, CppModule)
    if HAVE_BLAS:
        assert program.blas == BLAS_NAME  # linked; run where its kernels fit the CPU (blas=None)
        assert program.gemm == (BLAS_NAME if blas_fits_cpu(program.blas_kernels) else HAND_WITH_BLAS)


def test_fusion_pass_group_kinds_are_covered():
    """The kinds above include contraction, norm_contraction, attention, gather, layer, reduction."""
    seen = set()
    for name in ("gpt2.py:tiny", "llama.py:tiny", "cnn.py:tiny", "vae_decoder.py:tiny"):
        for target in ("cpu-host", "sn40l"):
            seen |= {g.attrs.get("kind") for g in compiled(name, target).graph.groups}
    assert {"contraction", "norm_contraction", "attention", "gather", "layer"} <= seen


def test_gpt2_contraction_groups_fuse_their_epilogue():
    cm = compiled("gpt2.py:tiny", "cpu-host")
    source = cm.program("cpp").source
    assert source.count("fused epilogue on each tile") >= 4  # bias (+ residual) after each projection
    assert "GEMM: OpenBLAS (scipy-openblas32)" in source


EPILOGUE = """graph @epi(%x: {t}[2,24,40], %r: {t}[2,24,72], %w: {t}[72,40] param, %b: {t}[72] param) -> ({t}[2,24,72], {t}[48,72]) {{
  group 0 {{anchor = "h", kind = "contraction"}}
  %h = linear(%x, %w, %b) : {t}[2,24,72] group(0)
  %g = gelu(%h) {{approximate = "tanh"}} : {t}[2,24,72] group(0)
  %y = add(%g, %r) : {t}[2,24,72] group(0)
  %z = reshape(%y) {{shape = [48, 72]}} : {t}[48,72] group(0)
  %s = mul(%z, %z) : {t}[48,72] group(0)
  return %y, %s
}}
"""

BATCHED = """graph @bmm(%a: f32[3,20,33], %b: f32[1,33,70], %c: f32[70]) -> (f32[3,20,70], f32[3,20,70]) {
  group 0 {anchor = "m", kind = "contraction"}
  %m = matmul(%a, %b) : f32[3,20,70] group(0)
  %p = add(%m, %c) : f32[3,20,70] group(0)
  %q = relu(%p) : f32[3,20,70] group(0)
  %t = permute(%p) {perm = [0, 2, 1]} : f32[3,70,20] group(0)
  %u = permute(%t) {perm = [0, 2, 1]} : f32[3,20,70] group(0)
  return %q, %u
}
"""


def check(text: str, blas: bool, tol: float, seed: int = 0) -> CppModule:
    torch.manual_seed(seed)
    graph = parse_graph(text)
    inputs = [torch.randn(i.type.shape).to(i.type.dtype.torch) for i in graph.runtime_inputs]
    state = {i.name: torch.randn(i.type.shape).to(i.type.dtype.torch) for i in graph.state_inputs}
    module = CppModule(graph, state, blas=blas)
    for g, w in zip(module.run(inputs), run_graph(graph, inputs, state)):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert rel_err(g, w) <= tol, f"relative error {rel_err(g, w):.2e}"
    return module


@pytest.mark.parametrize("blas", [pytest.param(True, marks=pytest.mark.skipif(not HAVE_BLAS, reason="no scipy-openblas32")),
                                  False])
def test_linear_epilogue_bias_gelu_residual(blas):
    module = check(EPILOGUE.format(t="f32"), blas, 1e-5)
    src = module.source
    assert "fused epilogue on each tile, in cache: %r1, %r2" in src  # y and the squared reshape (g is inlined)
    assert module.gemm == (BLAS_NAME if blas else "packed hand GEMM (no BLAS)")
    assert (module.blas == BLAS_NAME) if blas else module.blas is None


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_half_linear_epilogue(dtype):
    check(EPILOGUE.format(t=dtype), None, 1e-2)


@pytest.mark.parametrize("blas", [pytest.param(True, marks=pytest.mark.skipif(not HAVE_BLAS, reason="no scipy-openblas32")),
                                  False])
def test_batched_matmul_epilogue_and_non_pointwise_consumers(blas):
    module = check(BATCHED, blas, 1e-5, seed=1)
    line = next(ln for ln in module.source.splitlines() if "fused epilogue on each tile" in ln)
    assert re.search(r"%r\d", line) and line.count("%") == 1  # relu fused; the permutes are not


def test_blas_threads_do_not_oversubscribe():
    if not HAVE_BLAS:
        pytest.skip("no scipy-openblas32")
    graph = parse_graph(EPILOGUE.format(t="f32"))
    src = CppModule(graph, {i.name: torch.randn(i.type.shape) for i in graph.state_inputs}).source
    assert "CODESIGN_BLAS_SET_THREADS(1)" in src and "cs_gemm_init();" in src


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_export_cmake_finds_blas_or_falls_back(tmp_path):
    graph = parse_graph(EPILOGUE.format(t="f32"))
    torch.manual_seed(2)
    state = {i.name: torch.randn(i.type.shape) for i in graph.state_inputs}
    out = export_cpp(graph, state, tmp_path / "epi")
    assert "CODESIGN_USE_BLAS" in (out / "CMakeLists.txt").read_text()
    for use, want in (("ON", BLAS_NAME if HAVE_BLAS else "packed hand GEMM"), ("OFF", "packed hand GEMM")):
        build = tmp_path / f"build-{use}"
        # the CMake project asks this Python where its scipy-openblas32 wheel is (no path is baked in)
        subprocess.run(["cmake", "-S", str(out), "-B", str(build), f"-DCODESIGN_USE_BLAS={use}",
                        f"-DPython3_EXECUTABLE={sys.executable}"],
                       check=True, capture_output=True, timeout=60)
        subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True, timeout=120)
        run = subprocess.run([str(build / "epi_main"), str(out / "epi.weights.bin")], capture_output=True,
                             text=True, timeout=60, check=True)
        assert f"GEMM: {want}" in run.stdout
        sums = [float(ln.split("sum ")[1].split()[0]) for ln in run.stdout.splitlines() if ln.startswith("output")]
        if use == "ON":
            first = sums
        else:
            assert all(abs(a - b) <= 1e-4 * max(1.0, abs(a)) for a, b in zip(first, sums))
