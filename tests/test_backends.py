"""The backend registry: built-in backends, lookup errors, a toy backend added from outside
compiler.py, the target's host_backend, the device override, and the interpreter fallback.

Where a model runs, its outputs are checked against eager PyTorch on fresh random inputs.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import dataclass
from typing import get_args

import pytest
import torch

import codesign
from codesign.codegen import CodegenError
from codesign.codegen.registry import (FALLBACK, Backend, InterpreterProgram, UnknownBackendError,
                                       available_backends, build_program, choose_backend, device_of,
                                       get_backend, register_backend, unregister_backend)
from codesign.frontend import load_factory
from codesign.targets import Target
from codesign.targets.loader import bundled_target_path
from helpers import EXAMPLES, ROOT, fresh_like, rel_err

BUILTIN = {"cpp", "triton", "iree", "interpreter"}


@pytest.fixture(scope="module")
def mlp():
    model, inputs = load_factory(str(EXAMPLES / "mlp.py:tiny"))
    return model, inputs, codesign.capture(model, inputs)


def target_with_host_backend(tmp_path, host_backend: str) -> str:
    """cpu-host as a YAML file whose host_backend is `host_backend`."""
    text = bundled_target_path("cpu-host").read_text()
    assert "host_backend: cpp\n" in text
    path = tmp_path / f"cpu-{host_backend}.yaml"
    path.write_text(text.replace("name: cpu-host", f"name: cpu-{host_backend}")
                    .replace("host_backend: cpp\n", f"host_backend: {host_backend}\n"))
    return str(path)


def check_matches_eager(model, cm, inputs, seed: int, tol: float = 1e-5):
    fresh = fresh_like(inputs, seed)
    out = cm(*fresh)
    with torch.no_grad():
        assert rel_err(out, model(*fresh)) <= tol


# -- the registry ------------------------------------------------------------------------------
def test_registry_lists_the_four_builtin_backends():
    assert set(available_backends()) == BUILTIN
    assert available_backends() == tuple(sorted(available_backends()))
    for name in BUILTIN:
        backend = get_backend(name)
        assert backend.name == name and backend.summary and backend.devices
    assert get_backend("triton").devices == ("cuda",) and "cpu" in get_backend("cpp").devices
    assert get_backend(FALLBACK).name == "interpreter"


def test_every_codegen_subpackage_is_imported_on_the_first_lookup():
    """A new backend is one subpackage of codesign/codegen: nothing lists it by hand."""
    from codesign.codegen.registry import builtin_modules
    modules = builtin_modules()
    assert {"codesign.codegen.cpp", "codesign.codegen.triton", "codesign.export"} <= set(modules)
    assert all(m.startswith("codesign.codegen.") or m == "codesign.export" for m in modules)


def test_every_host_backend_the_schema_allows_is_registered():
    allowed = set(get_args(Target.model_fields["host_backend"].annotation))
    assert allowed == BUILTIN


def test_unknown_backend_names_the_closest_ones():
    with pytest.raises(UnknownBackendError, match=r"unknown backend 'tritn'; did you mean 'triton'\?"):
        get_backend("tritn")
    with pytest.raises(UnknownBackendError, match=r"available: auto, cpp, interpreter, iree, triton"):
        get_backend("cuda")
    with pytest.raises(ValueError, match=r"unknown backend 'interpeter'; did you mean 'interpreter'"):
        codesign.compile(torch.nn.ReLU(), (torch.randn(2),), target="cpu-host", backend="interpeter")


def test_registering_imports_neither_triton_nor_iree():
    """The CLI and the registry start without the heavy tools: they load when a backend builds."""
    code = ("import sys, codesign, codesign.cli\n"
            "from codesign.codegen.registry import available_backends, get_backend\n"
            "names = available_backends()\n"
            "[get_backend(n) for n in names]\n"
            "heavy = [m for m in sys.modules if m == 'triton' or m.startswith(('triton.', 'iree.'))]\n"
            "assert not heavy, heavy\n"
            "print(','.join(names))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.strip().split(",")) == BUILTIN


TINY_GRAPH = """graph @tiny(%x: f32[4,8]) -> (f32[4,8]) {
  %y = relu(%x) : f32[4,8]
  return %y
}"""


def run_script(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_missing_triton_is_one_codegen_error_saying_what_to_install(tmp_path):
    """Without triton (a `sys.modules` shim makes it unimportable), the pinned backend and
    `TritonModule` itself both raise one CodegenError naming the extra and the alternative,
    not a bare ModuleNotFoundError."""
    import os
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch\n"
            "from codesign.codegen import CodegenError\n"
            "from codesign.codegen.registry import build_program, get_backend\n"
            "from codesign.ir import parse_graph\n"
            "from codesign.targets import load_target\n"
            f"graph = parse_graph({TINY_GRAPH!r})\n"
            "assert get_backend('triton').missing() == ['triton']\n"
            "for make in (lambda: build_program('triton', graph, {}, load_target('h100')),\n"
            "             lambda: __import__('codesign.codegen.triton', fromlist=['TritonModule'])"
            ".TritonModule(graph, {}, 'h100')):\n"
            "    try:\n"
            "        make()\n"
            "    except CodegenError as exc:\n"
            "        print('ERROR', exc)\n")
    env = {**os.environ, "CODESIGN_CACHE_DIR": str(tmp_path)}
    result = run_script(code, env)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2, result.stdout
    for line in errors:
        assert "triton is not installed" in line and "pip install 'codesign[gpu]'" in line
        assert 'backend="cpp"' in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where Triton finds no GPU driver")
def test_triton_on_cpu_tensors_without_the_interpreter_says_what_to_do(tmp_path):
    """CPU tensors through the Triton backend in a process without TRITON_INTERPRET (Triton
    has no driver here): one CodegenError naming CUDA, the interpreter and the C++ backend,
    instead of Triton's "0 active drivers" once per kernel."""
    import os
    code = ("import torch, warnings\n"
            "warnings.simplefilter('error')\n"
            "from codesign.codegen import CodegenError\n"
            "from codesign.codegen.registry import build_program\n"
            "from codesign.ir import parse_graph\n"
            "from codesign.targets import load_target\n"
            f"program = build_program('triton', parse_graph({TINY_GRAPH!r}), {{}}, load_target('h100'))\n"
            "try:\n"
            "    program(torch.randn(4, 8))\n"
            "except CodegenError as exc:\n"
            "    print('ERROR', exc)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CODESIGN_CACHE_DIR"] = str(tmp_path)
    result = run_script(code, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ERROR @tiny: the Triton backend runs CUDA tensors"), result.stdout
    assert "0 active drivers" not in result.stdout + result.stderr
    for hint in ("CUDA device", "TRITON_INTERPRET=1", 'backend="cpp"'):
        assert hint in result.stdout


def test_a_backend_class_needs_a_name_and_a_free_one():
    with pytest.raises(ValueError, match="needs a `name`"):
        @register_backend
        @dataclass(frozen=True)
        class Nameless(Backend):
            pass

    with pytest.raises(ValueError, match="'cpp' is already registered"):
        @register_backend
        @dataclass(frozen=True)
        class Impostor(Backend):
            name = "cpp"
    assert type(get_backend("cpp")).__name__ == "CppBackend"
    with pytest.raises(UnknownBackendError, match="cannot unregister"):
        unregister_backend(FALLBACK)


def test_a_toy_backend_registered_outside_the_compiler_runs_when_pinned(mlp):
    """One class and one decorator: compile(backend="toy") builds and calls it, with the
    options given for it, and the result matches eager."""
    model, inputs, captured = mlp
    calls: list[tuple] = []

    @register_backend
    @dataclass(frozen=True)
    class ToyBackend(Backend):
        name = "toy"
        summary = "the interpreter, counting calls"
        devices = ("cpu",)
        options = ("label",)

        def build(self, graph, state, target, options):
            calls.append(("build", graph.name, target.name, options.get("label")))
            inner = InterpreterProgram(graph, state)

            def run(*xs):
                calls.append(("run", len(xs)))
                return inner(*xs)
            run.source = f"// toy program for @{graph.name}\n"
            return run

    try:
        assert "toy" in available_backends()
        cm = codesign.compile(captured, target="cpu-host", backend="toy", backend_options={"toy": {"label": "x"}})
        assert cm.backend_for(inputs) == "toy"
        check_matches_eager(model, cm, inputs, seed=3)
        check_matches_eager(model, cm, inputs, seed=4)
        assert calls == [("build", cm.graph.name, "cpu-host", "x"), ("run", 1), ("run", 1)]
        with pytest.raises(ValueError, match=r"backend 'toy' has no option\(s\) blas \(options: label\)"):
            build_program("toy", cm.graph, cm.state, cm.target, {"blas": False})
    finally:
        unregister_backend("toy")
    assert "toy" not in available_backends()
    with pytest.raises(UnknownBackendError):
        get_backend("toy")


# -- choosing a backend --------------------------------------------------------------------------
def test_the_inputs_device_overrides_the_host_backend_only_where_it_cannot_run():
    assert choose_backend("cpp", "cpu").name == "cpp"
    assert choose_backend("cpp", "cuda").name == "triton"          # sn40l's host code, CUDA inputs
    assert choose_backend("triton", "cpu").name == "cpp"           # h100's host code, CPU inputs
    assert choose_backend("triton", "cuda").name == "triton"
    assert choose_backend("iree", "cpu").name == "iree"
    assert choose_backend("iree", "cuda").name == "triton"
    assert choose_backend("interpreter", "cpu").name == "interpreter"
    assert choose_backend("interpreter", "cuda").name == "interpreter"  # it runs on either
    assert choose_backend("cpp", "mps").name == "interpreter"          # nobody else claims mps
    assert device_of([torch.zeros(1)]) == "cpu" and device_of([], {"w": torch.zeros(1)}) == "cpu"
    assert device_of([torch.zeros(1, device="meta")]) == "meta"


def test_host_backend_interpreter_is_honoured_for_cpu_inputs(tmp_path, mlp):
    model, inputs, captured = mlp
    cm = codesign.compile(captured, target=target_with_host_backend(tmp_path, "interpreter"))
    assert cm.target.host_backend == "interpreter"
    assert cm.backend_for(fresh_like(inputs, 1)) == "interpreter"
    check_matches_eager(model, cm, inputs, seed=5)
    assert set(cm._programs) == {"interpreter"}


def test_host_backend_iree_runs_the_mlir_export_on_cpu(tmp_path, mlp):
    pytest.importorskip("iree.compiler")
    pytest.importorskip("iree.runtime")
    model, inputs, captured = mlp
    cm = codesign.compile(captured, target=target_with_host_backend(tmp_path, "iree"))
    assert cm.backend_for(fresh_like(inputs, 1)) == "iree"
    check_matches_eager(model, cm, inputs, seed=6)
    check_matches_eager(model, cm, inputs, seed=7)   # compiled once, run again
    assert set(cm._programs) == {"iree"} and "linalg" in cm.program("iree").source
    out = cm.save(tmp_path / "saved")
    assert "func.func" in (out / "kernels.mlir").read_text()


def test_a_bad_host_backend_is_refused_by_the_schema(tmp_path):
    from codesign.targets import TargetError, load_target
    with pytest.raises(TargetError, match="host_backend"):
        load_target(target_with_host_backend(tmp_path, "cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs_pick_triton_even_on_a_cpp_host(mlp):
    model, inputs, captured = mlp
    cm = codesign.compile(captured, target="sn40l")
    assert cm.target.host_backend == "cpp"
    fresh = tuple(x.cuda() for x in fresh_like(inputs, 8))
    assert cm.backend_for(fresh) == "triton"
    out = cm(*fresh)  # the weights move to the inputs' device once
    assert out.is_cuda and set(cm._programs) == {"triton"}
    with torch.no_grad():
        assert rel_err(out, copy.deepcopy(model).cuda()(*fresh)) <= 1e-4


# -- failures are CodegenError, and auto falls back to the interpreter ----------------------------
def test_a_refusal_from_supports_falls_back_with_a_warning_naming_backend_and_reason(tmp_path, mlp, monkeypatch):
    """The iree backend's supports() refuses a node without an MLIR lowering (gelu made so):
    the module warns, names the backend and the node, and runs the interpreter."""
    pytest.importorskip("iree.compiler")
    import codesign.export.mlir_lowerings as lowerings
    model, inputs, captured = mlp
    cm = codesign.compile(captured, target=target_with_host_backend(tmp_path, "iree"))
    assert any(n.op == "gelu" for n in cm.graph.nodes)
    monkeypatch.setattr(lowerings, "LOWERINGS", {k: v for k, v in lowerings.LOWERINGS.items() if k != "gelu"})
    with pytest.warns(UserWarning, match=r"^iree backend cannot compile @\w+ \(.*op 'gelu' has no MLIR "
                                         r"lowering.*\); running the reference interpreter instead"):
        check_matches_eager(model, cm, inputs, seed=9)
    assert cm._programs["iree"] is None and cm._programs["interpreter"] is not None
    check_matches_eager(model, cm, inputs, seed=10)   # no second build, no second warning


def test_a_backends_own_exception_type_leaves_it_as_codegen_error(tmp_path, mlp, monkeypatch):
    """MlirExportError raised while building becomes CodegenError at the registry boundary
    (so auto falls back, with the reason); pinned, the CodegenError reaches the caller."""
    pytest.importorskip("iree.compiler")
    import codesign.export.iree_run as iree_run
    from codesign.export import MlirExportError

    def refuse(graph, state):
        raise MlirExportError("%h = gelu(...): approximate='none' has no lowering here")
    monkeypatch.setattr(iree_run, "IreeProgram", refuse)
    model, inputs, captured = mlp
    cm = codesign.compile(captured, target=target_with_host_backend(tmp_path, "iree"))
    with pytest.warns(UserWarning, match=r"iree backend cannot compile.*approximate='none'.*interpreter"):
        check_matches_eager(model, cm, inputs, seed=11)
    pinned = codesign.compile(captured, target="cpu-host", backend="iree")
    with pytest.raises(CodegenError, match="approximate='none'") as info:
        pinned(*inputs)
    assert isinstance(info.value.__cause__, MlirExportError)


def test_triton_template_failures_are_codegen_errors_at_the_boundary(mlp, monkeypatch):
    from codesign.codegen.triton import TritonBackend
    from codesign.codegen.triton.overrides import Unsupported
    _, _, captured = mlp
    cm = codesign.compile(captured, target="h100")

    def refuse(self, graph, state, target, options):
        raise Unsupported("matmul in f64 or with an empty dim")
    monkeypatch.setattr(TritonBackend, "build", refuse)
    with pytest.raises(CodegenError, match="matmul in f64") as info:
        build_program("triton", cm.graph, cm.state, cm.target)
    assert isinstance(info.value.__cause__, Unsupported)


def test_a_bug_in_a_backend_is_not_hidden_by_the_fallback(mlp, monkeypatch):
    """Only CodegenError (and a backend's declared failure types) fall back; anything else is
    a bug and propagates."""
    from codesign.codegen.cpp import CppBackend

    def broken(self, graph, state, target, options):
        raise KeyError("oops")
    monkeypatch.setattr(CppBackend, "build", broken)
    _, inputs, captured = mlp
    cm = codesign.compile(captured, target="cpu-host")
    with pytest.raises(KeyError, match="oops"):
        cm(*inputs)


def test_a_pinned_backend_does_not_fall_back(mlp, monkeypatch):
    import codesign.codegen.cpp.module as cpp_module

    def refuse(graph, *_, **__):
        raise CodegenError("%y = mystery(...): not supported by the C++ backend yet")
    monkeypatch.setattr(cpp_module, "generate", refuse)
    _, inputs, captured = mlp
    cm = codesign.compile(captured, target="cpu-host", backend="cpp")
    with pytest.raises(CodegenError, match="mystery"):
        cm(*inputs)
