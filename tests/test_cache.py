"""The generated-code cache (codesign/codegen/cache.py, used by the C++ and Triton backends):
planted or corrupt entries are never loaded (rebuilt with a warning), a cache folder others
can write is refused, writes are atomic, old temporaries are cleaned, the size is bounded
(LRU), and build/load failures of generated code fall back — for Triton, per kernel."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import warnings

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported anywhere

import pytest  # noqa: E402
import torch  # noqa: E402

import codesign  # noqa: E402
from codesign.codegen import CodegenError  # noqa: E402
from codesign.codegen.cache import MANIFEST, TMP_PREFIX, Cache, CacheWarning, max_bytes  # noqa: E402
from codesign.codegen.cpp import CppModule  # noqa: E402
from codesign.codegen.cpp import build as cpp_build  # noqa: E402
from codesign.codegen.cpp.wrapper import generate as cpp_generate  # noqa: E402
from codesign.frontend import load_factory  # noqa: E402
from codesign.ir import parse_graph  # noqa: E402
from codesign.ir.printer import print_graph  # noqa: E402
from helpers import EXAMPLES, fresh_like, rel_err  # noqa: E402


@pytest.fixture(autouse=True)
def root(tmp_path, monkeypatch):
    """A private cache root per test, with the default size bound."""
    path = tmp_path / "cache"
    monkeypatch.setenv("CODESIGN_CACHE_DIR", str(path))
    monkeypatch.delenv("CODESIGN_CACHE_MAX_BYTES", raising=False)
    return path


def exp_graph(name: str):
    return parse_graph(f"""graph @{name}(%x: f32[16]) -> (f32[16]) {{
  %y = exp(%x) : f32[16]
  return %y
}}
""")


def check_exp(module) -> None:
    x = torch.randn(16)
    assert torch.allclose(module(x), torch.exp(x), rtol=1e-6)


def cpp_build_only(graph) -> cpp_build.Built:
    """What CppModule(graph) builds (same key), without loading it."""
    source = cpp_generate(graph).source
    return cpp_build.build(graph.name, source, print_graph(graph), "host", cpp_build.find_blas())


def keyed_library(graph):
    """Where CppModule(graph) looks for its library: `<cpp cache>/<key>/<name>.so`."""
    source = cpp_generate(graph).source
    key = cpp_build.cache_key(print_graph(graph), source, "host", cpp_build.find_blas())
    return cpp_build.cache_dir() / key / f"{graph.name}.so"


PLANTED = r'''#include <cstdio>
extern "C" {
__attribute__((constructor)) static void planted() {
  if (FILE* f = std::fopen("%s", "w")) { std::fputs("ran", f); std::fclose(f); }
}
int run(void**, void**) { return 0; }
long long codesign_arena_bytes() { return 0; }
const char* codesign_gemm() { return "planted"; }
}
'''


def plant_library(path, marker, tmp_path) -> None:
    """A shared library at `path` whose constructor writes `marker` when it is dlopen'ed."""
    src = tmp_path / "planted.cpp"
    src.write_text(PLANTED % marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([cpp_build.compiler(), "-shared", "-fPIC", str(src), "-o", str(path)], check=True)


def manifest_for(folder, key: str, names) -> None:
    files = {n: {"sha256": hashlib.sha256((folder / n).read_bytes()).hexdigest(),
                 "size": (folder / n).stat().st_size} for n in names}
    (folder / MANIFEST).write_text(json.dumps({"format": "codesign-cache/1", "key": key, "files": files}))


# -- 1. trust: nothing planted or corrupt is loaded ---------------------------------------------------
def test_a_planted_library_without_manifest_is_not_loaded(tmp_path):
    graph = exp_graph("planted_nomanifest")
    lib = keyed_library(graph)
    marker = tmp_path / "marker"
    plant_library(lib, marker, tmp_path)
    with pytest.warns(CacheWarning, match=f"{lib.parent}.*no {MANIFEST}.*rebuilding"):
        module = CppModule(graph)
    assert not marker.exists(), "the planted library was loaded"
    assert not module.built.cached and module.gemm != "planted"
    check_exp(module)


def test_a_library_replaced_after_the_build_is_not_loaded(tmp_path):
    graph = exp_graph("planted_replaced")
    built = cpp_build_only(graph)
    marker = tmp_path / "marker"
    plant_library(built.library, marker, tmp_path)  # same path, the manifest still records the real one
    with pytest.warns(CacheWarning, match=f"{built.library.parent}.*(sha256|truncated or replaced)"):
        module = CppModule(graph)
    assert not marker.exists(), "the planted library was loaded"
    assert not module.built.cached
    check_exp(module)


def test_a_truncated_library_is_rebuilt(root):
    graph = exp_graph("truncated")
    built = cpp_build_only(graph)
    data = built.library.read_bytes()
    built.library.write_bytes(data[: len(data) // 2])
    with pytest.warns(CacheWarning, match=f"{built.library.parent}.*truncated"):
        module = CppModule(graph)
    assert not module.built.cached and module.built.library == built.library
    check_exp(module)
    again = CppModule(graph)  # the rebuilt entry verifies: a hit
    assert again.built.cached


def test_a_corrupt_manifest_is_rebuilt_not_fatal():
    graph = exp_graph("corrupt_manifest")
    built = cpp_build_only(graph)
    (built.library.parent / MANIFEST).write_text("{not json")
    with pytest.warns(CacheWarning, match=f"{built.library.parent}.*corrupt {MANIFEST}"):
        module = CppModule(graph)
    assert not module.built.cached
    check_exp(module)


def test_an_entry_file_writable_by_group_is_rebuilt():
    graph = exp_graph("group_writable_entry")
    built = cpp_build_only(graph)
    built.library.chmod(0o775)
    with pytest.warns(CacheWarning, match=f"{built.library.parent}.*writable by group"):
        module = CppModule(graph)
    assert not module.built.cached
    check_exp(module)


def test_a_group_writable_root_is_refused(root, tmp_path):
    graph = exp_graph("shared_root")
    root.mkdir()
    root.chmod(0o770)
    # a planted library there, with a manifest that matches it: only refusing the folder stops it
    source = cpp_generate(graph).source
    key = cpp_build.cache_key(print_graph(graph), source, "host", cpp_build.find_blas())
    lib = root / "cpp" / key / f"{graph.name}.so"
    marker = tmp_path / "marker"
    plant_library(lib, marker, tmp_path)
    (lib.parent / f"{graph.name}.cpp").write_text(source)
    manifest_for(lib.parent, key, [lib.name, f"{graph.name}.cpp"])
    for path in (root / "cpp", lib.parent, lib, lib.parent / MANIFEST):
        path.chmod(0o700 if path.is_dir() else 0o600)
    with pytest.warns(CacheWarning, match=rf"{root} is writable by group.*chmod 700 {root}.*CODESIGN_CACHE_DIR"):
        module = CppModule(graph)
    assert not marker.exists(), "a library from a group-writable cache was loaded"
    assert not module.built.cached and not str(module.built.library).startswith(str(root))
    assert sorted(p.name for p in (root / "cpp").iterdir()) == [key]  # nothing written there
    check_exp(module)


def test_a_root_owned_by_someone_else_is_refused(root, monkeypatch):
    root.mkdir(mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(root).st_uid + 1)  # as if another user made it
    with pytest.warns(CacheWarning, match=rf"{root} is owned by uid .*not by you.*CODESIGN_CACHE_DIR"):
        module = CppModule(exp_graph("foreign_root"))
    assert list(root.iterdir()) == [] and not str(module.built.library).startswith(str(root))
    check_exp(module)


def test_a_planted_triton_wrapper_is_not_imported(tmp_path):
    pytest.importorskip("triton")
    from codesign.codegen.triton import TritonModule
    graph = exp_graph("planted_py")
    first = TritonModule(graph, {}, "test")
    marker = tmp_path / "marker"
    first.path.write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + first.source)
    with pytest.warns(CacheWarning, match=f"{first.path.parent}.*sha256|{first.path.parent}.*truncated or replaced"):
        again = TritonModule(graph, {}, "test")
    assert not marker.exists(), "the planted wrapper was imported"
    assert not again.cache_hit and again.path == first.path and "marker" not in again.path.read_text()
    check_exp(again)


def test_a_triton_wrapper_without_manifest_is_not_imported(tmp_path):
    pytest.importorskip("triton")
    from codesign.codegen.triton import TritonModule
    graph = exp_graph("planted_py_nomanifest")
    first = TritonModule(graph, {}, "test")
    (first.path.parent / MANIFEST).unlink()
    marker = tmp_path / "marker"
    first.path.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.warns(CacheWarning, match=f"{first.path.parent}.*no {MANIFEST}"):
        again = TritonModule(graph, {}, "test")
    assert not marker.exists() and not again.cache_hit
    check_exp(again)


# -- 2. atomic writes, temporaries, the size bound ---------------------------------------------------
def _bytes(n: int):
    return lambda folder: (folder / "a.bin").write_bytes(b"x" * n)


def test_a_failed_build_leaves_no_entry_and_no_temporary():
    cache = Cache("cpp")

    def fail(folder):
        (folder / "a.bin").write_bytes(b"half")
        raise RuntimeError("compiler killed")
    with pytest.raises(RuntimeError):
        cache.build("ab" * 16, ["a.bin"], fail)
    assert list(cache.directory().iterdir()) == []
    entry = cache.build("ab" * 16, ["a.bin"], _bytes(10))
    assert sorted(p.name for p in entry.path.iterdir()) == ["a.bin", MANIFEST]
    assert cache.lookup("ab" * 16, ["a.bin"]).cached


def test_temporaries_of_killed_builds_are_removed_on_the_next_build():
    folder = cpp_build.cache_dir()
    stale = folder / f"{TMP_PREFIX}0123456789abcdef-killed"
    stale.mkdir()
    (stale / "model.so").write_bytes(b"half a library")
    stale_file = folder / "model_0123.4242.tmp"  # the old writer's temporaries
    stale_file.write_text("half")
    fresh = folder / f"{TMP_PREFIX}fedcba9876543210-running"  # a build in progress elsewhere
    fresh.mkdir()
    old = time.time() - 2 * 3600
    for path in (stale / "model.so", stale, stale_file):
        os.utime(path, (old, old))
    CppModule(exp_graph("after_a_killed_build"))
    assert not stale.exists() and not stale_file.exists()
    assert fresh.exists()


def test_the_least_recently_used_entry_is_evicted(monkeypatch):
    cache = Cache("cpp")
    a = cache.build("aa" * 16, ["a.bin"], _bytes(1000))
    b = cache.build("bb" * 16, ["a.bin"], _bytes(1000))
    size = sum(p.stat().st_size for p in a.path.iterdir())
    now = time.time()
    os.utime(a.path / MANIFEST, (now - 100, now - 100))
    os.utime(b.path / MANIFEST, (now - 50, now - 50))
    assert cache.lookup(a.key, ["a.bin"]) is not None  # a use: a is now the most recent
    monkeypatch.setenv("CODESIGN_CACHE_MAX_BYTES", str(2 * size + 100))
    c = cache.build("cc" * 16, ["a.bin"], _bytes(1000))
    assert a.path.exists() and c.path.exists() and not b.path.exists()
    # the bound covers every backend's entries under the root
    t = Cache("triton").build("dd" * 16, ["a.bin"], _bytes(1000))
    assert t.path.exists() and not a.path.exists() and c.path.exists()


def test_eviction_through_the_cpp_backend(monkeypatch):
    monkeypatch.setenv("CODESIGN_CACHE_MAX_BYTES", "1")  # every build evicts all the others
    first = CppModule(exp_graph("evicted_first"))
    second = CppModule(exp_graph("evicted_second"))
    assert not first.built.library.exists() and second.built.library.exists()
    check_exp(first)  # already loaded: eviction does not hurt a running module
    assert not CppModule(exp_graph("evicted_first")).built.cached


def test_max_bytes_reads_sizes(monkeypatch):
    assert max_bytes() == 2 << 30
    for text, want in (("1000", 1000), ("64K", 64 << 10), ("2G", 2 << 30), ("1.5MB", 3 << 19)):
        monkeypatch.setenv("CODESIGN_CACHE_MAX_BYTES", text)
        assert max_bytes() == want
    monkeypatch.setenv("CODESIGN_CACHE_MAX_BYTES", "lots")
    with pytest.warns(CacheWarning, match="not a size"):
        assert max_bytes() == 2 << 30


# -- 3. failures of generated code fall back -----------------------------------------------------------
@pytest.fixture(scope="module")
def mlp():
    model, inputs = load_factory(str(EXAMPLES / "mlp.py:tiny"))
    return model, inputs


def matches_eager(model, cm, inputs, seed: int = 1, tol: float = 1e-5) -> None:
    fresh = fresh_like(inputs, seed)
    out = cm(*fresh)
    with torch.no_grad():
        assert rel_err(out, model(*fresh)) <= tol


def test_a_compiler_that_cannot_run_falls_back_to_the_interpreter(mlp, monkeypatch):
    model, inputs = mlp
    monkeypatch.setenv("CXX", "/nonexistent/bin/g++")
    cm = codesign.compile(model, inputs, target="cpu-host")
    with pytest.warns(UserWarning, match=r"cpp backend cannot compile .*/nonexistent/bin/g\+\+.*interpreter"):
        matches_eager(model, cm, inputs)


def test_a_library_that_does_not_load_falls_back_to_the_interpreter(mlp, monkeypatch):
    model, inputs = mlp

    def broken(path, *args, **kwargs):
        raise OSError(f"{path}: invalid ELF header")
    monkeypatch.setattr(cpp_build.ctypes, "CDLL", broken)
    cm = codesign.compile(model, inputs, target="cpu-host")
    with pytest.warns(UserWarning, match=r"cpp backend cannot compile .*cannot load the generated library "
                                         r".*\.so.*interpreter"):
        matches_eager(model, cm, inputs)


def test_a_verified_entry_that_does_not_load_is_rebuilt_once(monkeypatch):
    graph = exp_graph("loads_badly_once")
    cpp_build_only(graph)
    real = cpp_build.ctypes.CDLL
    calls = []

    def flaky(path, *args, **kwargs):  # the generated library's first load fails (the BLAS loads)
        if "openblas" not in str(path):
            calls.append(path)
            if len(calls) == 1:
                raise OSError(f"{path}: file too short")
        return real(path, *args, **kwargs)
    monkeypatch.setattr(cpp_build.ctypes, "CDLL", flaky)
    with pytest.warns(CacheWarning, match=r"cannot load the generated library .*rebuilding"):
        module = CppModule(graph)
    assert not module.built.cached and len(calls) == 2
    check_exp(module)


def test_a_triton_wrapper_that_does_not_import_is_a_codegen_error(monkeypatch):
    pytest.importorskip("triton")
    from codesign.codegen.triton import TritonModule
    from codesign.codegen.triton import module as triton_module
    monkeypatch.setattr(triton_module, "wrapper_source", lambda program: "def run(:\n")
    with pytest.raises(CodegenError, match=r"Triton wrapper .*bad_wrapper.*\.py for @bad_wrapper does not load"):
        TritonModule(exp_graph("bad_wrapper"), {}, "test")


def test_a_triton_kernel_failing_at_launch_falls_back_for_that_kernel(mlp, monkeypatch):
    pytest.importorskip("triton")
    from triton.runtime.errors import OutOfResources
    from triton.runtime.interpreter import InterpretedFunction

    from codesign.codegen.triton.fallback import KernelFallbackWarning
    model, inputs = mlp
    cm = codesign.compile(model, inputs, target="h200", backend="triton")
    program = cm.program("triton")
    names = [k["name"] for k in program.meta["kernels"]]
    assert len(names) >= 2, program.report()
    victim = names[0]
    real = InterpretedFunction.run

    def run(self, *args, **kwargs):
        if self.fn.__name__ == victim:  # as a card without enough shared memory would
            raise OutOfResources(300_000, 232_448, "shared memory")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(InterpretedFunction, "run", run)
    with pytest.warns(KernelFallbackWarning, match=rf"Triton kernel {victim} \(%.*\) failed at launch "
                                                   r"\(OutOfResources: out of resource: shared memory"):
        matches_eager(model, cm, inputs, seed=1)
    assert isinstance(program.guards[victim].failure, OutOfResources)
    assert all(program.guards[n].failure is None for n in names[1:])  # the others stayed Triton
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelFallbackWarning)  # warned once, then the fallback is quiet
        matches_eager(model, cm, inputs, seed=2)


def test_a_fallen_back_gemm_writes_its_kernel_buffer_without_a_copy(monkeypatch):
    """The reference form of a kernel (the library form a measured choice runs, and the
    fallback) runs a GEMM or residual add ending the kernel straight into the kernel's buffer
    (`OpDef.run_into`: addmm / mm / add with out=) — and still matches eager."""
    pytest.importorskip("triton")
    from triton.runtime.errors import OutOfResources
    from triton.runtime.interpreter import InterpretedFunction

    from codesign.codegen.triton import fallback
    from codesign.codegen.triton.fallback import KernelFallbackWarning

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32, bias=False)

        def forward(self, x):
            return x + self.down(torch.relu(self.up(x)))
    model, inputs = Residual().eval(), (torch.randn(4, 8, 32),)
    cm = codesign.compile(model, inputs, target="h200", backend="triton")

    def run(self, *args, **kwargs):  # every kernel fails: all run through their reference form
        raise OutOfResources(300_000, 232_448, "shared memory")
    monkeypatch.setattr(InterpretedFunction, "run", run)
    written = []
    real = fallback._written_into

    def spy(node, buffer, value, env):
        done = real(node, buffer, value, env)
        written.append((node.op if node is not None else None, done))
        return done
    monkeypatch.setattr(fallback, "_written_into", spy)
    with pytest.warns(KernelFallbackWarning):
        matches_eager(model, cm, inputs, seed=1)
    assert ("add", True) in written, written  # the residual add ending down-projection's kernel
    assert ("relu", False) in written, written  # relu has no out= form: computed, then copied


def test_a_gemm_written_into_its_buffer_is_not_run_again_for_its_epilogue(monkeypatch):
    """A kernel whose outputs are a GEMM and a chain after it: the reference form writes the
    GEMM into its buffer once and the chain reads that (it once ran the GEMM a second time,
    which also slowed the library form a measured choice times)."""
    pytest.importorskip("triton")
    from triton.runtime.errors import OutOfResources
    from triton.runtime.interpreter import InterpretedFunction

    from codesign.codegen.triton import fallback
    from codesign.codegen.triton.fallback import KernelFallbackWarning

    class Both(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.Linear(32, 64)

        def forward(self, x):
            y = self.up(x)
            return y, torch.relu(y) * 3.0
    model, inputs = Both().eval(), (torch.randn(4, 32),)
    cm = codesign.compile(model, inputs, target="h200", backend="triton")

    def run(self, *args, **kwargs):
        raise OutOfResources(300_000, 232_448, "shared memory")
    monkeypatch.setattr(InterpretedFunction, "run", run)
    ran = []
    real = fallback.run_node
    monkeypatch.setattr(fallback, "run_node", lambda node, *a: ran.append(node.op) or real(node, *a))
    fresh = fresh_like(inputs, 1)
    with pytest.warns(KernelFallbackWarning):
        got = cm(*fresh)
    with torch.no_grad():
        want = model(*fresh)
    assert all(rel_err(g, w) <= 1e-5 for g, w in zip(got, want))
    assert "linear" not in ran, ran  # addmm wrote it; nothing ran it again


def test_a_kernel_out_of_shared_memory_is_retried_with_one_stage(mlp, monkeypatch):
    """A kernel that fits only without software pipelining runs with num_stages=1 and stays
    Triton (a KernelRetileWarning names it); nothing falls back."""
    pytest.importorskip("triton")
    from triton.runtime.errors import OutOfResources
    from triton.runtime.interpreter import InterpretedFunction

    from codesign.codegen.triton.fallback import KernelFallbackWarning, KernelRetileWarning
    model, inputs = mlp
    cm = codesign.compile(model, inputs, target="h200", backend="triton")
    program = cm.program("triton")
    staged = [k["name"] for k in program.meta["kernels"] if f"{k['name']}[" in program.source
              and "num_stages=1)" not in program.source.split(f"{k['name']}[", 1)[1].split("\n", 1)[0]]
    assert staged, program.report()
    victim = staged[0]
    real = InterpretedFunction.run
    stages: list[int] = []

    def run(self, *args, **kwargs):
        if self.fn.__name__ == victim:
            stages.append(kwargs.get("num_stages"))
            if kwargs.get("num_stages", 1) > 1:
                raise OutOfResources(300_000, 232_448, "shared memory")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(InterpretedFunction, "run", run)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelFallbackWarning)
        with pytest.warns(KernelRetileWarning, match=rf"Triton kernel {victim} did not fit .* num_stages=1"):
            matches_eager(model, cm, inputs, seed=1)
        matches_eager(model, cm, inputs, seed=2)
    assert program.guards[victim].failure is None and program.guards[victim].overrides == {"num_stages": 1}
    assert stages[0] > 1 and set(stages[1:]) == {1}


def test_entries_built_under_a_permissive_umask_are_trusted():
    old = os.umask(0o002)
    try:
        first = CppModule(exp_graph("umask_002"))
    finally:
        os.umask(old)
    assert not first.built.library.stat().st_mode & 0o022
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        assert CppModule(exp_graph("umask_002")).built.cached
