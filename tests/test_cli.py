"""The `codesign` command line, driven through `main(argv)`."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from codesign.cli import main, pipeline_of_dump
from codesign.ir import parse_graph
from helpers import FOLDABLE


EXPECTED = """graph @g(%x: f32[2,3]) -> (f32[2,3]) {
  %c = relu(%x) : f32[2,3]
  %e = add(%c, %c) : f32[2,3]
  return %e
}
"""


@pytest.fixture
def graph_file(tmp_path: Path) -> Path:
    path = tmp_path / "graph.csir"
    path.write_text(FOLDABLE)
    return path


def test_opt_runs_the_default_pipeline(graph_file, capsys) -> None:
    assert main(["opt", str(graph_file)]) == 0
    out, err = capsys.readouterr()
    assert out == EXPECTED and err == ""


def test_opt_prints_after_change_and_dumps(graph_file, tmp_path, capsys) -> None:
    dumps = tmp_path / "dumps"
    assert main(["opt", str(graph_file), "--passes", "dce,canonicalize,dce",
                 "--print-ir-after-change", "--dump-dir", str(dumps)]) == 0
    out, err = capsys.readouterr()
    assert out == EXPECTED
    assert [l for l in err.splitlines() if l.startswith("// -----//")] == [
        "// -----// IR Dump After canonicalize //----- //", "// -----// IR Dump After dce //----- //"]
    names = sorted(p.name for p in dumps.iterdir())
    assert names == ["00-input.csir", "01-dce.csir", "02-canonicalize.csir", "03-dce.csir"]
    for name in names:
        parse_graph((dumps / name).read_text())
    assert pipeline_of_dump((dumps / "02-canonicalize.csir").read_text()) == "dce,canonicalize,dce"


def test_opt_resumes_from_a_dump(graph_file, tmp_path, capsys) -> None:
    dumps = tmp_path / "dumps"
    assert main(["opt", str(graph_file), "--dump-dir", str(dumps)]) == 0
    full = capsys.readouterr().out
    assert main(["opt", str(dumps / "01-canonicalize.csir"), "--resume", "--print-ir-after-all"]) == 0
    out, err = capsys.readouterr()
    assert out == full
    assert [l for l in err.splitlines() if l.startswith("// -----//")] == ["// -----// IR Dump After dce //----- //"]


def test_opt_resume_needs_a_numbered_dump(graph_file, capsys) -> None:
    assert main(["opt", str(graph_file), "--resume"]) == 1
    assert "not a numbered dump" in capsys.readouterr().err


def test_opt_compile_to_and_output_file(graph_file, tmp_path, capsys) -> None:
    out_path = tmp_path / "out" / "result.csir"
    assert main(["opt", str(graph_file), "--compile-to", "canonicalize", "-o", str(out_path)]) == 0
    assert capsys.readouterr().out == ""
    result = parse_graph(out_path.read_text())
    assert [n.op for n in result.nodes] == ["reshape", "relu", "add"]  # dce did not run


def test_opt_empty_pipeline_round_trips(graph_file, capsys) -> None:
    assert main(["opt", str(graph_file), "--passes", ""]) == 0
    assert capsys.readouterr().out == FOLDABLE


def test_opt_timing(graph_file, capsys) -> None:
    assert main(["opt", str(graph_file), "--timing"]) == 0
    err = capsys.readouterr().err
    assert "pass timing" in err and "canonicalize" in err and "dce" in err


def test_opt_parse_error_shows_line_and_column(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.csir"
    bad.write_text("graph @g(%x: f32[2]) -> (f32[2]) {\n  %a = relu(%x) : f33[2]\n  return %a\n}\n")
    assert main(["opt", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:19: error: unknown element type 'f33'" in err
    assert "Traceback" not in err


def test_opt_verify_error_is_one_message(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.csir"
    bad.write_text("graph @g(%x: f32[2]) -> (f32[2]) {\n  %a = relu(%y) : f32[2]\n  return %a\n}\n")
    assert main(["opt", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("codesign: error: the input IR is invalid") and "%y before any definition" in err


@pytest.mark.parametrize("argv, message", [
    (["--passes", "canonicalise"], "unknown pass 'canonicalise'; did you mean canonicalize?"),
    (["--passes", "canonicalize{iterations=2}"], "pass 'canonicalize' has no option 'iterations'"),
    (["--print-ir-after", "dec"], "unknown pass 'dec'"),
    (["--compile-to", "tile"], "pass 'tile' is not in the pipeline"),
])
def test_opt_bad_pipeline_is_one_message(graph_file, capsys, argv, message) -> None:
    assert main(["opt", str(graph_file), *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_opt_pass_error_is_one_message(graph_file, capsys, monkeypatch) -> None:
    """A pass that cannot do what its options ask (canonicalize not reaching a fixpoint in
    max_iterations sweeps) is a `codesign: error:` line naming the pass, not a traceback."""
    canonicalize = importlib.import_module("codesign.passes.canonicalize")

    class Restless(canonicalize.Pattern):  # rewrites one node in every sweep, forever
        name = "restless"

        def __init__(self) -> None:
            self.last = None

        def match_and_rewrite(self, node, rewriter) -> None:
            if rewriter is not self.last:
                self.last = rewriter
                rewriter.replace_node(node, node.with_(loc=str(id(rewriter))))

    monkeypatch.setattr(canonicalize, "PATTERNS", (Restless(),))
    assert main(["opt", str(graph_file), "--passes", "canonicalize{max_iterations=2}"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("codesign: error: pass 'canonicalize{max_iterations=2}' (#1 of the pipeline) "
                          "failed: canonicalize did not reach a fixpoint over @g in 2 rewriting sweeps")
    assert err.count("\n") == 1 and "Traceback" not in err and out == ""


def test_opt_compile_to_a_pass_number(graph_file, capsys) -> None:
    assert main(["opt", str(graph_file), "--passes", "dce,canonicalize,dce", "--compile-to", "2"]) == 0
    out = capsys.readouterr().out
    assert "%a = reshape(%x)" in out and "relu" in out  # the last dce did not run: dead %a stays


def test_opt_missing_file(tmp_path, capsys) -> None:
    assert main(["opt", str(tmp_path / "nope.csir")]) == 1
    assert "no such IR file" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys) -> None:
    assert main([]) == 2
    assert main(["opt"]) == 2
    assert main(["frobnicate"]) == 2
    assert main(["--help"]) == 0


def test_passes_lists_registered_passes(capsys) -> None:
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    assert "canonicalize" in out and "dce" in out
    assert "max_iterations: int (default 10)" in out


def test_targets_list() -> None:
    pytest.importorskip("codesign.targets.cli")
    assert main(["targets", "list"]) == 0


def test_targets_unknown_target(capsys) -> None:
    pytest.importorskip("codesign.targets.cli")
    assert main(["targets", "show", "no-such-chip"]) != 0


def test_opt_unknown_target_is_one_message(graph_file, capsys) -> None:
    pytest.importorskip("codesign.targets")
    assert main(["opt", str(graph_file), "--target", "no-such-chip"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("codesign: error:") and "Traceback" not in err


# -- capture / compile (need the frontend and codesign.compile) ------------------------------
MODEL = """
import torch


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def make_model():
    return MLP(), (torch.randn(2, 8),)
"""


def _require(module: str, attr: str) -> None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        pytest.skip(f"{module} is not importable yet")
    if not hasattr(mod, attr):
        pytest.skip(f"{module}.{attr} does not exist yet")


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.py"
    path.write_text(MODEL)
    return path


def test_capture_prints_parsable_ir(model_file, tmp_path, capsys) -> None:
    _require("codesign.frontend", "capture")
    _require("codesign.frontend", "load_factory")
    assert main(["capture", f"{model_file}:make_model"]) == 0
    graph = parse_graph(capsys.readouterr().out)
    assert graph.outputs
    out_path = tmp_path / "mlp.csir"
    assert main(["capture", f"{model_file}:make_model", "-o", str(out_path)]) == 0
    assert parse_graph(out_path.read_text()) == graph


@pytest.mark.parametrize("spec, message", [
    ("no-such-file", "does not exist"),
    ("missing.py:make", "does not exist"),
])
def test_capture_bad_model_spec_is_one_message(spec, message, capsys) -> None:
    _require("codesign.frontend", "capture")
    assert main(["capture", spec]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_capture_unknown_factory_is_one_message(model_file, capsys) -> None:
    _require("codesign.frontend", "capture")
    assert main(["capture", f"{model_file}:no_such_factory"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("codesign: error:") and "no_such_factory" in err and "Traceback" not in err


def test_compile_prints_the_report(model_file, capsys) -> None:
    _require("codesign", "compile")
    _require("codesign.frontend", "load_factory")
    assert main(["compile", f"{model_file}:make_model", "--target", "h100"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["compile", f"{model_file}:make_model", "--target", "h100", "--emit", "ir"]) == 0
    parse_graph(capsys.readouterr().out)


def test_compile_unknown_target_is_one_message(model_file, capsys) -> None:
    _require("codesign", "compile")
    _require("codesign.frontend", "load_factory")
    assert main(["compile", f"{model_file}:make_model", "--target", "no-such-chip"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("codesign: error:") and "Traceback" not in err


# -- user errors: one `codesign: error:` message, never a traceback ---------------------------
def _user_error_samples():
    """One instance of every user-facing error type (as the code raises it), by name."""
    from codesign.codegen import CodegenError
    from codesign.experts import InfeasibleError, TraceError
    from codesign.frontend import CaptureError
    from codesign.frontend.aten import ConversionError
    from codesign.ir import ParseError, VerifyError
    from codesign.ir.verifier import Diagnostic
    from codesign.passes import PassError, PipelineError
    from codesign.placement import PlacementError
    from codesign.targets import TargetError
    return {
        "PlacementError": PlacementError("placement of @g does not fit target 'h100': tier 'hbm' overflows",
                                         "hbm", 0, 1e9),
        "ParseError": ParseError("unknown element type 'f33'", 1, 14, "graph @g(%x: f33[2])", "g.csir"),
        "VerifyError": VerifyError("g", [Diagnostic("@g %a (relu)", "uses %y before any definition")]),
        "PipelineError": PipelineError("unknown pass 'canonicalise'"),
        "TargetError": TargetError("chip.yaml: invalid target (1 problem)"),
        "CaptureError": CaptureError("torch.export failed on MLP"),
        "ConversionError": ConversionError("aten.foo has no converter"),
        "InfeasibleError": InfeasibleError("slot 0/0 needs 704000000 bytes"),
        "TraceError": TraceError("t.jsonl:2: expected step 0 layer 0"),
        "PassError": PassError("pass 'place' (#5 of the pipeline) failed: no room"),
        "CodegenError": CodegenError("cpp backend cannot compile %m (moe)"),
    }


@pytest.mark.parametrize("name", sorted(_user_error_samples()))
def test_every_user_error_type_is_one_message(name, capsys, monkeypatch) -> None:
    """The CLI maps every user-facing error type in one place (`_user_errors`): exit 1, the
    message, no traceback; with --traceback the exception propagates."""
    import codesign.cli as cli
    error = _user_error_samples()[name]

    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_cmd_passes", fail)
    assert main(["passes"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err and out == ""
    first = err.splitlines()[0]
    assert first.startswith("codesign: error: ") or first.startswith("g.csir:1:14: error: "), err
    with pytest.raises(type(error)):
        main(["passes", "--traceback"])


def test_a_bug_still_shows_its_traceback(capsys, monkeypatch) -> None:
    import codesign.cli as cli

    def fail(args):
        raise ZeroDivisionError("a bug in codesign")

    monkeypatch.setattr(cli, "_cmd_passes", fail)
    with pytest.raises(ZeroDivisionError):
        main(["passes"])


def test_opt_placement_error_is_one_message(tmp_path, capsys) -> None:
    """A graph that fits no tier of the target: PlacementError's message (what overflows,
    what would fit) and the pass it came from, not a traceback."""
    path = tmp_path / "big.csir"
    path.write_text("graph @g(%x: f32[1000000000000]) -> (f32[1000000000000]) {\n"
                    "  %y = relu(%x) : f32[1000000000000]\n  return %y\n}\n")
    assert main(["opt", str(path), "--target", "h100", "--passes", "place{time_limit=1}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("codesign: error: placement of @g does not fit target 'h100'")
    assert "what would fit" in err and "while running pass 'place" in err and "Traceback" not in err


def test_opt_non_utf8_file_names_the_byte(tmp_path, capsys) -> None:
    path = tmp_path / "bad.csir"
    path.write_bytes(b"graph @g(%x: f32[2,3]) -> (f32[2,3]) {\n  %y = relu(%x) : f32[2,\xff3]\n  return %y\n}\n")
    assert main(["opt", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:2:25: error: invalid UTF-8 byte 0xff at byte offset 63")
    assert "Traceback" not in err


def test_opt_huge_shape_is_refused_without_allocating(tmp_path, capsys) -> None:
    path = tmp_path / "huge.csir"
    huge = "f32[99999999999999,99999999999]"
    path.write_text(f"graph @g(%x: {huge}) -> ({huge}) {{\n  %y = relu(%x) : {huge}\n  return %y\n}}\n")
    assert main(["opt", str(path), "--target", "h100", "--passes", "canonicalize,dce,fuse,tile,place"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:1:14: error: tensor type {huge} is too large") and "2**50 bytes" in err
    assert "Traceback" not in err


def test_verifier_refuses_a_huge_type_built_in_memory() -> None:
    """A graph built without the parser (a capture on the meta device) is checked too."""
    from codesign.ir import DType, Graph, Input, InputKind, Node, TensorType, VerifyError, verify
    huge = TensorType((1 << 40, 1 << 20), DType.f32)
    graph = Graph("g", (Input("x", huge, InputKind.input, "x"),), (Node("y", "relu", ("x",), huge),), ("y",))
    with pytest.raises(VerifyError, match=r"%x.*is too large.*2\*\*50 bytes"):
        verify(graph)


# -- compile and export_cpp: user-facing API ---------------------------------------------------
class _Tiny(__import__("torch").nn.Module):
    def __init__(self, i: int = 4, o: int = 3):
        import torch
        super().__init__()
        self.fc = torch.nn.Linear(i, o)

    def forward(self, x):
        import torch
        return torch.relu(self.fc(x)).sum(-1, keepdim=True) * 2


@pytest.mark.parametrize("shape, i", [((0, 4), 4), ((2, 0), 0)], ids=["no-rows", "no-features"])
def test_compile_handles_a_zero_size_input(shape, i, recwarn) -> None:
    """A 0 dim once raised ZeroDivisionError in the tile pass; now a zero-size kernel gets unit
    tiles and no traffic, and the module runs generated code (no interpreter fallback)."""
    import torch
    import codesign
    torch.manual_seed(0)
    model, x = _Tiny(i), torch.randn(*shape)
    module = codesign.compile(model, (x,), target="cpu-host")
    from codesign.ir.ops import OpKind, get_op
    computed = [n for n in module.graph.nodes if get_op(n.op).kind is not OpKind.source]
    # a graph whose every value is empty may fold to constants; what remains is tiled as zero-size
    assert not computed or "zero-size" in module.explain()
    module.report()
    out = module(x)
    assert out.shape == model(x).shape and torch.allclose(out, model(x))
    assert not [w for w in recwarn if "interpreter" in str(w.message)]


class _WithBatchNorm(__import__("torch").nn.Module):
    def __init__(self):
        import torch
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


@pytest.fixture(scope="module")
def bn_module():
    import torch
    import codesign
    return codesign.compile(_WithBatchNorm().eval(), (torch.randn(1, 3, 8, 8),), target="cpu-host")


def test_export_cpp_writes_a_0d_buffer(bn_module, tmp_path) -> None:
    """BatchNorm's `num_batches_tracked` is a 0-d int64 buffer: it is exported as 8 bytes."""
    out = bn_module.export_cpp(tmp_path / "bn")
    names = sorted(p.name for p in out.iterdir())
    assert {"main.cpp", "CMakeLists.txt", ".codesign-export", "_WithBatchNorm.cpp"} <= set(names)
    table = (out / "_WithBatchNorm_weights.h").read_text()
    assert "num_batches_tracked: i64[]" in table and ", 8}," in table
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_export_cpp_refuses_a_users_folder(bn_module, tmp_path) -> None:
    from codesign.codegen.outdir import ExportError
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "main.cpp").write_text("int main() { return 42; }  // mine\n")
    with pytest.raises(ExportError, match="not empty and holds no previous codesign C.. export"):
        bn_module.export_cpp(mine)
    assert [p.name for p in mine.iterdir()] == ["main.cpp"]
    assert (mine / "main.cpp").read_text().endswith("// mine\n")


def test_export_cpp_replaces_its_own_previous_export(bn_module, tmp_path) -> None:
    from codesign.codegen.outdir import ExportError
    out = bn_module.export_cpp(tmp_path / "bn")
    (out / "build").mkdir()
    (out / "build" / "CMakeCache.txt").write_text("kept\n")
    (out / "main.cpp").write_text("stale\n")
    bn_module.export_cpp(out)  # a previous export (marker) with its build folder: replaced
    assert (out / "main.cpp").read_text() != "stale\n"
    assert (out / "build" / "CMakeCache.txt").read_text() == "kept\n"
    (out / "notes.txt").write_text("the user's\n")
    with pytest.raises(ExportError, match=r"also files it did not write \(notes.txt\)"):
        bn_module.export_cpp(out)
    assert (out / "notes.txt").read_text() == "the user's\n"


def test_export_cpp_never_follows_symlinks(bn_module, tmp_path) -> None:
    from codesign.codegen.outdir import ExportError
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "link").symlink_to(victim, target_is_directory=True)
    with pytest.raises(ExportError, match="is a symbolic link"):
        bn_module.export_cpp(tmp_path / "link")
    out = bn_module.export_cpp(tmp_path / "bn")
    secret = tmp_path / "secret.txt"
    secret.write_text("untouched\n")
    (out / "main.cpp").unlink()
    (out / "main.cpp").symlink_to(secret)  # a planted link where the export writes main.cpp
    with pytest.raises(ExportError, match=r"main.cpp"):
        bn_module.export_cpp(out)
    assert secret.read_text() == "untouched\n"


def test_export_cpp_failure_leaves_no_partial_export(bn_module, tmp_path) -> None:
    from codesign.codegen import CodegenError
    from codesign.codegen.cpp import export_cpp
    state = dict(bn_module.state)
    state.pop("bn.running_var")
    with pytest.raises(CodegenError, match="no value for buffer %bn.running_var"):
        export_cpp(bn_module.graph, state, tmp_path / "bn")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("pipeline, message", [
    ("place{time_limit=-1}", "time_limit must be more than 0 and at most 86400 seconds, got -1.0"),
    ("place{time_limit=nan}", "time_limit must be more than 0"),
    ("place{workers=0}", "workers must be in 1..256, got 0"),
    ("place{gap=1}", "gap must be in [0, 1), got 1.0"),
    ("place{split=0}", "split must be at least 1"),
    ("place{stage=2}", "stage must be in [0, 1), got 2.0"),
    ("fuse{min_saving=inf}", "min_saving must be seconds in [-1, 1], got inf"),
    ("canonicalize{max_iterations=0}", "max_iterations must be at least 1, got 0"),
])
def test_pass_numeric_options_are_range_checked(graph_file, capsys, pipeline, message) -> None:
    assert main(["opt", str(graph_file), "--target", "h100", "--passes", pipeline]) == 1
    err = capsys.readouterr().err
    assert err.startswith("codesign: error: pass ") and message in err and "Traceback" not in err


def test_version_and_json_outputs(capsys) -> None:
    import json

    import codesign
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"codesign {codesign.__version__}"
    assert main(["targets", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in listed] == codesign.targets.list_targets()
    assert main(["targets", "show", "h200", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["memory"][1]["bandwidth"] == pytest.approx(4.8e12) and shown["calibration"]["source"] == "measured"
    root = Path(__file__).resolve().parents[1]
    assert main(["compile", f"{root}/examples/mlp.py:tiny", "--target", "cpu-host", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["target"] == "cpu-host" and plan["fusion"]["fused_kernels"] >= 1
