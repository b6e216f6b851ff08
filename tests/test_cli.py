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
