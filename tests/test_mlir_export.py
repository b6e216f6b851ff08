"""MLIR export: every op family verifies, compiles with IREE (llvm-cpu) and matches run_graph.

The op-family graphs are shared with the C++ backend tests (tests/op_samples.py); each
groups several ops into one graph, because one IREE compile costs about a second. Inputs
are fresh random tensors (seeded per sample); floats must agree to a relative error
‖iree - ref‖ / ‖ref‖ <= 1e-5 in f32 (1e-2 in bf16 / f16), integers and booleans exactly.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("iree.compiler")
pytest.importorskip("iree.runtime")

from codesign.export import MlirExportError, compile_and_run, mlir_text, to_mlir  # noqa: E402
from codesign.ir import Graph, parse_graph  # noqa: E402
from helpers import EXAMPLES  # noqa: E402
from op_samples import MLP, MOE_ROUTED, OpSample, check_nans, check_sample, sample_params  # noqa: E402


def check(sample: OpSample) -> Graph:
    """Export, verify, compile and run `sample`; compare every output with the interpreter."""
    def run(graph, inputs, state):
        to_mlir(graph).module.operation.verify()
        return compile_and_run(graph, inputs, state)
    return check_sample(sample, run)


@pytest.mark.parametrize("sample", sample_params("mlir"))
def test_op_sample(sample: OpSample):
    """Every shared op-family graph (tests/op_samples.py) verifies, compiles and matches."""
    check(sample)


def test_nans_propagate_and_keep_their_sign_as_eager():
    check_nans(lambda graph, inputs, state: compile_and_run(graph, inputs, state))


def test_module_signature_and_deterministic_text():
    graph = parse_graph(MLP)
    module = to_mlir(graph)
    assert module.func_name == "mlp"
    assert [a.name for a in module.arguments] == [i.name for i in graph.inputs]
    text = mlir_text(graph)
    assert text == mlir_text(graph)
    assert "func.func @mlp(%arg0: tensor<4x32xf32>, %arg1: tensor<64x32xf32>" in text
    assert text.count("linalg.generic") >= 6  # three contractions, bias inits, gelu, relu
    assert "math.erf" in text


def test_every_registered_op_has_a_lowering_or_a_refusal():
    from codesign.export.mlir_lowerings import LOWERINGS
    from codesign.ir import OPS

    missing = sorted(set(OPS) - set(LOWERINGS))
    assert not missing, f"ops without an MLIR lowering: {missing}; add them to mlir_lowerings.LOWERINGS"


def test_moe_is_refused_with_the_node_named():
    graph = parse_graph(MOE_ROUTED)
    with pytest.raises(MlirExportError, match=r"%y = moe.*MoE export is not supported yet"):
        to_mlir(graph)


def test_unsupported_element_type_is_refused():
    graph = parse_graph("""graph @bytes(%x: u8[4]) -> (u8[4]) {
  %y = add(%x, %x) : u8[4]
  return %y
}
""")
    with pytest.raises(MlirExportError, match="u8"):
        to_mlir(graph)


@pytest.mark.parametrize("example", ["mlp.py:tiny", "cnn.py:tiny"])
def test_captured_examples_match_eager(example):
    frontend = pytest.importorskip("codesign.frontend")
    if not hasattr(frontend, "capture") or not hasattr(frontend, "load_factory"):
        pytest.skip("codesign.frontend.capture / load_factory are not available yet")
    model, inputs = frontend.load_factory(str(EXAMPLES / example))
    captured = frontend.capture(model, inputs)
    got = compile_and_run(captured.graph, list(inputs), captured.state)
    with torch.no_grad():
        want = model(*inputs)
    want = list(want) if isinstance(want, (tuple, list)) else [want]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        err = ((g.double() - w.double()).norm() / w.double().norm()).item()
        assert err <= 1e-5, f"{example}: relative error {err:.2e}"
