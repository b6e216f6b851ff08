"""compile(): the CompiledModule runs, reports, saves, and is deterministic."""

from __future__ import annotations

import json

import pytest
import torch

import codesign
from codesign.compiler import SaveError
from codesign.frontend import load_factory
from codesign.ir import parse_graph, print_graph
from helpers import EXAMPLES, fresh_like, rel_err


@pytest.fixture(scope="module")
def cnn():
    model, inputs = load_factory(str(EXAMPLES / "cnn.py:tiny"))
    return model, inputs, codesign.compile(model, inputs, target="h100")


def test_compiled_module_runs_and_matches_eager(cnn):
    model, inputs, cm = cnn
    fresh = fresh_like(inputs, 7)
    with torch.no_grad():
        assert rel_err(cm(*fresh), model(*fresh)) <= 1e-5


def test_repr_is_a_short_summary_without_tensors(cnn):
    """repr(cm) names the model, target, backend, kernel count and input shapes in one line;
    it prints no tensor and no IR (the dataclass default printed every weight)."""
    model, inputs, cm = cnn
    fresh = codesign.compile(model, inputs, target="h100")
    text = repr(fresh)
    assert "\n" not in text and "tensor(" not in text and "Parameter" not in text and "graph @" not in text
    kernels = len({n.group if n.group is not None else n.name for n in fresh.graph.nodes})
    shape = ",".join(str(s) for s in inputs[0].shape)
    assert text.startswith(f"CompiledModule(@{fresh.graph.name}, target=h100, backend=auto (host: ")
    assert f"kernels={kernels}," in text and f"f32[{shape}]" in text and "built=" not in text
    fresh(*inputs)
    assert "built=[cpp]" in repr(fresh)
    assert len(repr(fresh)) < 300


def test_report_lists_ops_flops_and_bytes(cnn):
    model, inputs, cm = cnn
    text = cm.report()
    assert "target 'h100'" in text and "conv" in text and "FLOPs" in text
    params = sum(p.numel() for p in model.parameters())
    assert f"{params:,}" in text
    summary = cm.summary()
    assert summary["parameters"] == params
    counts = summary["op_counts"]  # a GPU target runs the block's convs on NHWC data (channels-last)
    assert counts.get("conv", 0) + counts.get("conv_nhwc", 0) == 3 and counts["conv_nhwc"] == 2
    # conv FLOPs dominate and equal 2·N·F·OH·OW·C·KH·KW summed over the convs
    assert summary["flops_by_kind"]["contraction"] > 0.9 * summary["flops"]


def test_save_writes_reparsable_ir_and_plan(tmp_path, cnn):
    _, _, cm = cnn
    out = cm.save(tmp_path / "out")
    graph = parse_graph((out / "graph.csir").read_text())
    assert print_graph(graph) == print_graph(cm.graph)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["target"] == "h100" and plan["nodes"] == len(cm.graph.nodes)
    cm.save(out)  # saving again into codesign's own folder is fine


def test_save_never_overwrites_a_users_folder(tmp_path, cnn):
    _, _, cm = cnn
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SaveError, match="did not write"):
        cm.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_compile_is_deterministic():
    model, inputs = load_factory(str(EXAMPLES / "llama.py:tiny"))
    a = codesign.compile(model, inputs, target="sn40l")
    b = codesign.compile(model, inputs, target="sn40l")
    assert print_graph(a.graph) == print_graph(b.graph)
    assert a.report() == b.report()
    assert json.dumps(a.summary(), sort_keys=True) == json.dumps(b.summary(), sort_keys=True)


def test_target_from_a_yaml_path(tmp_path):
    from codesign.targets.loader import bundled_target_path
    path = tmp_path / "chip.yaml"
    path.write_text(bundled_target_path("sn40l").read_text().replace("name: sn40l", "name: mychip"))
    model, inputs = load_factory(str(EXAMPLES / "mlp.py:tiny"))
    cm = codesign.compile(model, inputs, target=str(path))
    assert cm.target.name == "mychip"


def test_meta_models_plan_but_refuse_to_run():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.fc(x)

    with torch.device("meta"):
        model = Tiny()
        x = torch.empty(2, 8)
    cm = codesign.compile(model, (x,), target="sn40l")
    assert cm.summary()["parameters"] == 72
    with pytest.raises(RuntimeError, match="meta device"):
        cm(x)


def assert_runs_through_cpp(model, inputs, cm, seed: int, marker: str) -> None:
    """Fresh CPU inputs pick the C++ backend, whose source holds ``marker``, and match eager."""
    fresh = fresh_like(inputs, seed)
    assert cm.backend_for(fresh) == "cpp"
    out = cm(*fresh)
    assert cm._programs["cpp"] is not None and marker in cm.program("cpp").source
    with torch.no_grad():
        assert rel_err(out, model(*fresh)) <= 1e-5


def test_cpu_inputs_run_through_the_generated_cpp(cnn):
    assert_runs_through_cpp(*cnn, seed=9, marker="conv")


def test_a_backend_that_cannot_compile_falls_back_to_the_interpreter(monkeypatch):
    """When the C++ generator refuses a graph (here it is made to), compile()'s module warns
    with the reason and runs the reference interpreter instead."""
    import codesign.codegen.cpp.module as cpp_module
    from codesign.codegen import CodegenError

    def refuse(graph, *_, **__):
        raise CodegenError("%y = mystery(...): not supported by the C++ backend yet")
    monkeypatch.setattr(cpp_module, "generate", refuse)
    model, inputs = load_factory(str(EXAMPLES / "mlp.py:tiny"))
    cm = codesign.compile(model, inputs, target="cpu-host")
    with pytest.warns(UserWarning, match="mystery.*running the reference interpreter"):
        out = cm(*inputs)
    with torch.no_grad():
        assert rel_err(out, model(*inputs)) <= 1e-5


def test_mixtral_runs_through_the_cpp_backend_on_cpu():
    """compile() on CPU inputs picks C++ for the MoE model too: routing, experts as regions."""
    model, inputs = load_factory(str(EXAMPLES / "mixtral_moe.py:tiny"))
    cm = codesign.compile(model, inputs, target="cpu-host")
    assert_runs_through_cpp(model, inputs, cm, seed=11, marker="m0_run")


def test_unknown_backend_is_refused():
    model, inputs = load_factory(str(EXAMPLES / "mlp.py:tiny"))
    with pytest.raises(ValueError, match="backend 'cuda'"):
        codesign.compile(model, inputs, target="h100", backend="cuda")


def test_moe_experts_that_overflow_the_fast_tier_get_a_switching_schedule(tmp_path):
    """Tiny Mixtral on an H100 whose HBM holds the other weights and two of its eight
    experts: compile() schedules expert switching, never slower than the best baseline."""
    from codesign.targets.loader import bundled_target_path
    model, inputs = load_factory(str(EXAMPLES / "mixtral_moe.py:tiny_model"))
    captured = codesign.capture(model, inputs)
    stats = codesign.compile(captured, target="h100").stats()
    expert = stats.expert_bytes // 8
    hbm = stats.param_bytes - stats.expert_bytes + 2 * expert + 1024
    path = tmp_path / "small-hbm.yaml"
    path.write_text(bundled_target_path("h100").read_text().replace("capacity: 80 GB", f"capacity: {hbm}"))
    cm = codesign.compile(captured, target=str(path))
    assert cm.experts is not None
    summary = cm.summary()["experts"]
    best = min(b["total_s"] for b in summary["baselines"].values())
    assert summary["plan"]["total_s"] <= best + 1e-12
    assert "expert switching" in cm.report()
