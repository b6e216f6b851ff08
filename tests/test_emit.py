"""`codesign compile MODEL --emit cpp|triton|mlir DIR` (issue 16): the generated code as files.

The C++ is built with CMake and run; two exported models link into one program (their
entry points are named after them); a folder holding the user's files is refused unless
`--overwrite`, which keeps them; the progress display goes to a terminal's stderr only and
changes nothing on stdout.
"""

from __future__ import annotations

import ast
import json
import os
import pty
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import codesign
from codesign.cli import main
from codesign.codegen.outdir import ExportError

MODEL = """
import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(16, 32)
        self.fc2 = torch.nn.Linear(32, 8)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def make_model():
    return Tiny().eval(), (torch.randn(4, 16),)
"""


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(MODEL)
    return path


def _lcg_input(shape: tuple[int, ...]) -> torch.Tensor:
    """The pseudo-random input the exported demo (`main.cpp`) feeds its model."""
    seed, values = 12345, []
    for _ in range(int(torch.Size(shape).numel())):
        seed = (seed * 1664525 + 1013904223) % (1 << 32)
        values.append((seed >> 8) / 16777216.0 - 0.5)
    return torch.tensor(values, dtype=torch.float32).reshape(shape)


def _cmake(source: Path, build: Path) -> None:
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True, timeout=300)


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_emit_cpp_builds_with_cmake_and_matches_eager(model_file, tmp_path, capsys) -> None:
    out = tmp_path / "cpp"
    assert main(["compile", f"{model_file}:make_model", "--target", "cpu-host", "--emit", "cpp", str(out)]) == 0
    captured = capsys.readouterr()
    assert "codesign report" in captured.out and f"to {out}" in captured.err
    assert {"Tiny.cpp", "Tiny.h", "main.cpp", "CMakeLists.txt", "Tiny.weights.bin"} <= {p.name for p in out.iterdir()}
    cmake = (out / "CMakeLists.txt").read_text()
    assert str(Path(sys.prefix)) not in cmake  # no folder of this machine baked in
    header = (out / "Tiny.h").read_text()
    assert "int Tiny_run(const void** inputs, void** outputs);" in header and "int run(" not in header
    _cmake(out, tmp_path / "build")
    run = subprocess.run([str(tmp_path / "build" / "Tiny_main"), str(out / "Tiny.weights.bin")],
                         capture_output=True, text=True, timeout=60, check=True)
    got = float(run.stdout.split("sum ")[1].split()[0])
    sys.path.insert(0, str(model_file.parent))
    try:
        model, _ = codesign.load_factory(f"{model_file}:make_model")
    finally:
        sys.path.remove(str(model_file.parent))
    with torch.no_grad():
        want = model(_lcg_input((4, 16))).double().sum().item()
    assert abs(got - want) <= 1e-4 * max(1.0, abs(want)), (got, want)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_two_exported_models_link_into_one_program(tmp_path) -> None:
    """Every symbol but the model-named entry points is static: both link, both run."""
    names = []
    for width in (8, 12):
        net = type(f"net{width}", (torch.nn.Sequential,), {})  # the graph is named after the class
        model = net(torch.nn.Linear(width, 4), torch.nn.ReLU()).eval()
        cm = codesign.compile(model, (torch.randn(2, width),), target="cpu-host")
        assert cm.graph.name == f"net{width}"
        cm.export_cpp(tmp_path / f"net{width}")
        names.append(f"net{width}")
    main_cpp = tmp_path / "both.cpp"
    main_cpp.write_text('#include <cstdio>\n#include "net8.h"\n#include "net12.h"\n'
                        "int main() {\n"
                        '  std::printf("%d %d %s\\n", net8_num_inputs(), net12_num_inputs(), net8_gemm());\n'
                        "  return NET8_NUM_OUTPUTS + NET12_NUM_OUTPUTS == 2 ? 0 : 1;\n}\n")
    exe = tmp_path / "both"
    sources = [str(tmp_path / n / f"{n}.cpp") for n in names]
    subprocess.run(["g++", "-std=c++17", "-O1", "-fopenmp", "-w", *[f"-I{tmp_path / n}" for n in names],
                    str(main_cpp), *sources, "-o", str(exe)], check=True, capture_output=True, timeout=300)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.split()[:2] == ["3", "3"], run.stdout + run.stderr


def test_emit_triton_and_mlir_write_source_without_a_gpu(model_file, tmp_path, capsys) -> None:
    tri = tmp_path / "tri"
    assert main(["compile", f"{model_file}:make_model", "--target", "h100", "--emit", "triton", str(tri),
                 "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    source = (tri / "Tiny.py").read_text()
    ast.parse(source)  # a Python module
    assert source.count("@triton.jit") >= 1 and "def run(inputs, state, externs):" in source
    assert plan["graph"] == "Tiny"
    mlir = tmp_path / "mlir"
    assert main(["compile", f"{model_file}:make_model", "--target", "cpu-host", "--emit", "mlir", str(mlir)]) == 0
    text = (mlir / "Tiny.mlir").read_text()
    assert "func.func" in text and "linalg." in text


def test_emit_refuses_a_users_folder_unless_overwrite(model_file, tmp_path, capsys) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (mine / "Tiny.csir").write_text("old")
    argv = ["compile", f"{model_file}:make_model", "--target", "cpu-host", "--emit", "ir", str(mine)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("codesign: error:") and "--overwrite" in err and "Traceback" not in err
    assert sorted(p.name for p in mine.iterdir()) == ["Tiny.csir", "notes.txt"]
    assert (mine / "Tiny.csir").read_text() == "old"
    assert main(argv + ["--overwrite"]) == 0
    assert (mine / "notes.txt").read_text() == "my notes"  # the user's other file stays
    assert (mine / "Tiny.csir").read_text().startswith("graph @Tiny(")
    assert main(argv) == 1  # still a folder with files codesign did not write


def test_emit_arguments_are_checked(model_file, capsys) -> None:
    assert main(["compile", f"{model_file}:make_model", "--target", "cpu-host", "--emit", "cpp"]) == 2
    assert "give a folder" in capsys.readouterr().err
    assert main(["compile", f"{model_file}:make_model", "--target", "cpu-host", "--emit", "wasm", "d"]) == 2
    assert "KIND one of cpp, triton, mlir, ir" in capsys.readouterr().err


def test_export_cpp_overwrite_keeps_other_files(tmp_path) -> None:
    model = torch.nn.Linear(4, 2).eval()
    cm = codesign.compile(model, (torch.randn(1, 4),), target="cpu-host")
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "README").write_text("mine")
    with pytest.raises(ExportError, match="overwrite"):
        cm.export_cpp(folder)
    cm.export_cpp(folder, overwrite=True)
    assert (folder / "README").read_text() == "mine" and (folder / "CMakeLists.txt").exists()


def test_progress_is_drawn_on_a_terminal_and_stdout_is_unchanged(model_file, tmp_path, capsys) -> None:
    """stderr a pty: the steps appear there; stdout (a pipe) holds exactly the --quiet JSON."""
    argv = ["compile", f"{model_file}:make_model", "--target", "cpu-host", "--json"]
    assert main(argv + ["--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == ""  # not a terminal here: nothing drawn either way
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", f"from codesign.cli import main; raise SystemExit(main({argv!r}))"],
                            stdout=subprocess.PIPE, stderr=slave, cwd=tmp_path,
                            env={**os.environ, "COLUMNS": "200", "TERM": "xterm"})
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the pty
            break
        if not chunk:
            break
        shown += chunk
    out, _ = proc.communicate(timeout=300)
    os.close(master)
    assert proc.returncode == 0
    assert json.loads(out) == json.loads(quiet.out)
    text = shown.decode(errors="replace")
    assert "capture Tiny" in text, text[-2000:]
    for name in ("canonicalize", "fuse", "tile", "place"):
        assert re.search(rf"pass \d+/\d+ {name}: ", text), (name, text[-2000:])
