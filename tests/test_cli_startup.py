"""The command line starts without torch for commands that do not need it (issue 16).

Each check runs the command in a fresh interpreter and looks at `sys.modules` afterwards:
what was imported, not how long it took (the timing is `benchmarks/cli_startup.py`).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "ortools.sat.python.cp_model", "pandas", "scipy", "matplotlib", "pydantic")
"""Modules none of the light commands may import (pydantic only where no target is read)."""


def _imported_by(argv: list[str], tmp_path) -> tuple[int, set[str], str]:
    """(exit code, heavy modules imported, stdout) of `codesign ARGV` in a fresh interpreter."""
    script = ("import contextlib, io, json, sys\n"
              "from codesign.cli import main\n"
              "out = io.StringIO()\n"
              "with contextlib.redirect_stdout(out):\n"
              f"    rc = main({argv!r})\n"
              f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
              "print(json.dumps([rc, heavy, out.getvalue()]))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    rc, heavy, out = json.loads(run.stdout.splitlines()[-1])
    return rc, set(heavy), out


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["experts", "--help"], ["passes", "--help"]],
                         ids=" ".join)
def test_parser_commands_import_nothing_heavy(argv, tmp_path) -> None:
    rc, heavy, _ = _imported_by(argv, tmp_path)
    assert rc == 0 and heavy == set()


@pytest.mark.parametrize("argv", [["targets", "list"], ["targets", "show", "h200", "--json"], ["targets", "schema"]],
                         ids=" ".join)
def test_target_commands_do_not_import_torch(argv, tmp_path) -> None:
    rc, heavy, out = _imported_by(argv, tmp_path)
    assert rc == 0 and out.strip()
    assert heavy <= {"pydantic"}, heavy  # the schema is pydantic; torch and the solvers stay out


def test_experts_simulate_on_a_trace_imports_no_torch_and_no_cp_sat(tmp_path) -> None:
    trace = tmp_path / "t.jsonl"
    rc, heavy, _ = _imported_by(["experts", "generate", "--experts", "8", "--steps", "50", "-o", str(trace)],
                                tmp_path)
    assert rc == 0 and trace.exists() and heavy == set()
    rc, heavy, out = _imported_by(["experts", "simulate", "--trace", str(trace), "--target", "h100",
                                   "--expert-bytes", "4GB"], tmp_path)
    assert rc == 0 and "lru" in out
    assert heavy <= {"pydantic"}, heavy


BLOCK_IR = """graph @block(%x: f32[8,64], %w1: f32[128,64] param, %w2: f32[64,128] param) -> (f32[8,64]) {
  %h = linear(%x, %w1) : f32[8,128]
  %one = full() {value = 1.0} : f32[]
  %hs = mul(%h, %one) : f32[8,128]
  %g = gelu(%hs) {approximate = "none"} : f32[8,128]
  %dead = relu(%g) : f32[8,128]
  %y = linear(%g, %w2) : f32[8,64]
  return %y
}
"""


def test_opt_on_ir_text_imports_no_torch(tmp_path) -> None:
    """`codesign opt x.csir --passes canonicalize,dce`: parse, verify, rewrite and print
    without torch (op definitions name their torch references lazily, `codesign.lazy`)."""
    (tmp_path / "x.csir").write_text(BLOCK_IR)
    rc, heavy, out = _imported_by(["opt", "x.csir", "--passes", "canonicalize,dce"], tmp_path)
    assert rc == 0 and "torch" not in heavy, heavy
    assert "%dead" not in out and "%hs" not in out and "gelu(%h)" in out  # dce and the x*1 fold ran


@pytest.mark.parametrize("target", ["sn40l", "h100"])
def test_the_planning_passes_on_ir_text_import_no_torch(target, tmp_path) -> None:
    """compile()'s pipeline up to placement (fuse, tile, the dataflow map, the placement
    ILP) on IR text needs the target and the solvers, not torch."""
    (tmp_path / "x.csir").write_text(BLOCK_IR)
    argv = ["opt", "x.csir", "--target", target, "--passes",
            "canonicalize,subpixel-conv,dce,fuse,tile,map,place{time_limit=2 deterministic=true}"]
    rc, heavy, out = _imported_by(argv, tmp_path)
    assert rc == 0 and "torch" not in heavy, heavy
    assert "group 0 {" in out and "group(0)" in out


def test_import_codesign_is_lazy_and_its_names_still_resolve(tmp_path) -> None:
    script = ("import sys, codesign\n"
              "before = 'torch' in sys.modules\n"
              "compile_, target = codesign.compile, codesign.Target\n"
              "from codesign.compiler import compile as real\n"
              "from codesign.experts import schedule, IlpOptions\n"
              "print(before, compile_ is real, callable(schedule), IlpOptions.__name__, 'compile' in dir(codesign))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True", "True", "IlpOptions", "True"]


def test_an_unknown_public_name_is_an_attribute_error() -> None:
    import codesign
    with pytest.raises(AttributeError, match="has no attribute 'compiel'"):
        codesign.compiel  # noqa: B018


def test_a_bad_target_file_is_one_error_line_without_torch(tmp_path) -> None:
    bad = tmp_path / "chip.yaml"
    bad.write_text("name: chip\nkind: gpu\n")
    script = ("import sys\nfrom codesign.cli import main\n"
              f"rc = main(['targets', 'validate', {str(bad)!r}])\n"
              "print(rc, 'torch' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.stdout.split() == ["1", "False"], run.stderr
    assert run.stderr.startswith("codesign: error:") and "Traceback" not in run.stderr
