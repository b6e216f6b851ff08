"""`CppModule`: a graph compiled to C++ and callable with torch tensors; `export_cpp`.

torch appears only at the Python boundary: inputs are made contiguous and passed by
pointer, outputs are allocated with `torch.empty` and filled by the library.
"""

from __future__ import annotations

import ctypes
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import torch

from codesign.codegen import CodegenError
from codesign.codegen.cache import CacheWarning
from codesign.codegen.checks import DIVISION, INDEX, cpp_failure
from codesign.codegen.cpp import openmp
from codesign.codegen.cpp.build import Built, blas_fits_cpu, blas_kernels, build, find_blas, load
from codesign.codegen.cpp.wrapper import CppSource, entry_names, generate
from codesign.codegen.outdir import Stage, staged_directory
from codesign.ir.graph import Graph
from codesign.ir.printer import print_graph


class CppModule:
    """`graph` generated as one C++ translation unit, built (or found in the cache), loaded.

    `state` holds the weights by input name (as `CapturedModel.state`); call it with the
    runtime inputs. `source`, `built.cached` and `built.seconds` say what happened; `blas`
    names the BLAS the fp32 GEMMs run on ("OpenBLAS (scipy-openblas32)"), or is None when
    they run on the generated hand GEMM (`gemm` says which, as the library reports it).
    `blas=False` forces the hand GEMM; None (default) links scipy-openblas32 when installed
    (and `CODESIGN_BLAS` is not 0) and runs fp32 tiles on it where its kernels are as wide
    as the CPU's vectors (`build.blas_fits_cpu`; else on the hand GEMM, and `gemm` says so);
    True links it and runs it whatever its kernels.

    `profile=True` builds the per-kernel timers in (`codesign.codegen.cpp.profiling`; another
    source, so another cache entry): `kernel_seconds()` reads what the runs so far spent in
    each kernel call, `reset_profile()` clears it. The default build has no timers.
    """

    def __init__(self, graph: Graph, state: Mapping[str, torch.Tensor] | None = None, target: str = "host",
                 blas: bool | None = None, check_indices: bool = True, profile: bool = False):
        self.graph = graph
        self.target = target
        self.code: CppSource = generate(graph, check_indices, profile=profile)  # codesign.codegen.checks
        found = find_blas() if blas is None or blas else None
        if blas and found is None:
            raise CodegenError("blas=True but no BLAS found: pip install scipy-openblas32")
        ir_text = print_graph(graph)
        self.built: Built = build(graph.name, self.code.source, ir_text, target, found)
        try:
            self._lib = load(self.built.library, self.built.blas)
        except CodegenError as exc:
            if not self.built.cached:
                raise
            # a verified entry that still does not load (another toolchain's, a bad disk): rebuild once
            warnings.warn(f"{exc}; rebuilding the cache entry {self.built.library.parent}", CacheWarning,
                          stacklevel=2)
            self.built = build(graph.name, self.code.source, ir_text, target, found, use_cache=False)
            self._lib = load(self.built.library, self.built.blas)
        self.blas: str | None = found.name if found else None
        self.blas_kernels: str | None = blas_kernels(self._lib) if found else None  # "SkylakeX", "Haswell"
        # blas=True: BLAS whatever its kernels; None: where they fit the CPU. Set before each run too:
        # modules of one graph share one loaded library
        self._use_blas = ctypes.c_int(int(found is not None and (bool(blas) or blas_fits_cpu(self.blas_kernels))))
        self._lib.codesign_use_blas(self._use_blas)
        self.gemm: str = self._lib.codesign_gemm().decode()
        self._inputs = graph.inputs
        self._runtime = [i for i, inp in enumerate(graph.inputs) if not inp.kind.is_state]
        self._pointers = (ctypes.c_void_p * len(graph.inputs))()
        self._keep: dict[int, torch.Tensor] = {}
        self.bind_state(state or {})
        self._out_types = graph.output_types()
        self.profile = profile
        if profile:
            self._lib.codesign_profile_read.argtypes = [ctypes.POINTER(ctypes.c_double)]
            self._lib.codesign_profile_read.restype = ctypes.c_int64

    def kernel_seconds(self) -> tuple[dict[str, float], float, float, int]:
        """(seconds per timed kernel call by graph kernel key, the output copies' seconds, the
        whole runs' seconds, runs), accumulated since the last `reset_profile()`."""
        if not self.profile:
            raise CodegenError(f"@{self.graph.name} was built without timers (CppModule(..., profile=True))")
        slots = len(self.code.timers) + 2
        out = (ctypes.c_double * slots)()
        runs = int(self._lib.codesign_profile_read(out))
        kernels = {t.key: out[i] for i, t in enumerate(self.code.timers)}
        return kernels, out[slots - 2], out[slots - 1], runs

    def reset_profile(self) -> None:
        if self.profile:
            self._lib.codesign_profile_reset()

    def bind_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Point the library at these weights (by input name). A contiguous tensor of the
        graph's dtype is passed by pointer, so its in-place updates show without a rebind;
        call again when a tensor is replaced (`CompiledModule` does, by fingerprint)."""
        keep = {}
        for i, inp in enumerate(self._inputs):
            if inp.kind.is_state:
                if inp.name not in state:
                    raise CodegenError(f"no value for {inp.kind.value} %{inp.name} (source {inp.source})")
                keep[i] = self._checked(state[inp.name], inp)
        self._keep = keep
        for i, tensor in keep.items():
            self._pointers[i] = tensor.data_ptr()

    @property
    def source(self) -> str:
        return self.code.source

    @staticmethod
    def _checked(value: torch.Tensor, inp) -> torch.Tensor:
        if value.device.type != "cpu":
            raise CodegenError(f"%{inp.name}: the C++ backend runs on the CPU, got a {value.device} tensor")
        if tuple(value.shape) != inp.type.shape:
            raise CodegenError(f"%{inp.name} expects shape {list(inp.type.shape)}, got {list(value.shape)}")
        want = inp.type.dtype.torch
        return value.detach().to(want).contiguous()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outs = self.run(inputs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(inputs) != len(self._runtime):
            raise CodegenError(f"graph @{self.graph.name} takes {len(self._runtime)} inputs, got {len(inputs)}")
        keep = [self._checked(x, self._inputs[i]) for i, x in zip(self._runtime, inputs)]
        for i, x in zip(self._runtime, keep):
            self._pointers[i] = x.data_ptr()
        outs = [torch.empty(t.shape, dtype=t.dtype.torch) for t in self._out_types]
        out_ptrs = (ctypes.c_void_p * max(len(outs), 1))(*[o.data_ptr() for o in outs])
        openmp.set_threads(self._lib, torch.get_num_threads())  # torch's pool size (`openmp`)
        self._lib.codesign_use_blas(self._use_blas)
        rc = self._lib.run(self._pointers, out_ptrs)
        if rc in (INDEX, DIVISION):  # a run-time check failed: eager's IndexError / ZeroDivisionError
            raise cpp_failure(self._lib, rc, self.code.checks, f"@{self.graph.name}")
        if rc != 0:
            raise CodegenError(f"generated code for @{self.graph.name} returned {rc}")
        return outs


MAIN = r'''// Demo: load the weights, run @{graph} on {what} inputs, print output checksums.
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <chrono>
#include "{name}.h"
#include "{name}_weights.h"

int main(int argc, char** argv) {{
  const char* weights = argc > 1 ? argv[1] : "{name}.weights.bin";
  std::vector<void*> owned;
  const void* inputs[{NUM_INPUTS} > 0 ? {NUM_INPUTS} : 1] = {{}};
  if ({name}_load_weights(weights, inputs) != 0) {{ std::fprintf(stderr, "cannot read %s\n", weights); return 1; }}
  uint32_t seed = 12345;
{inputs}
  void* outputs[{NUM_OUTPUTS} > 0 ? {NUM_OUTPUTS} : 1];
{outputs}
  auto t0 = std::chrono::steady_clock::now();
  int rc = {run}(inputs, outputs);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (rc != 0) {{ std::fprintf(stderr, "run failed: %d\n", rc); return 1; }}
{checks}
  std::printf("time %.3f ms (GEMM: %s)\n", ms, {gemm}());
  for (void* p : owned) std::free(p);
  return 0;
}}
'''

LOADER = r'''// Weights of @{graph}: one blob, each tensor at a 64-byte aligned offset.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cstdint>
static const struct {{ int input; int64_t offset, bytes; }} {name}_weight_table[] = {{
{rows}
}};
// Fills inputs[i] for every weight input; the blob stays allocated for the program's life.
static inline int {name}_load_weights(const char* path, const void** inputs) {{
  const int n = (int)(sizeof({name}_weight_table) / sizeof({name}_weight_table[0]));
  if ({total} == 0) return 0;
  FILE* f = std::fopen(path, "rb");
  if (!f) return -1;
  void* blob = nullptr;
  if (posix_memalign(&blob, 64, {total}) != 0) {{ std::fclose(f); return -2; }}
  size_t got = std::fread(blob, 1, {total}, f);
  std::fclose(f);
  if (got != (size_t){total}) return -3;
  for (int i = 0; i < n; ++i)
    if ({name}_weight_table[i].input >= 0) inputs[{name}_weight_table[i].input] = (char*)blob + {name}_weight_table[i].offset;
  return 0;
}}
'''

CMAKE = '''cmake_minimum_required(VERSION 3.13)
project({name} CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
if(NOT CMAKE_BUILD_TYPE)
  set(CMAKE_BUILD_TYPE Release)
endif()
option(CODESIGN_NATIVE "build for this machine's CPU (-march=native)" ON)
add_library({name} SHARED {name}.cpp)
set_target_properties({name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
target_compile_options({name} PRIVATE -fno-math-errno -fno-trapping-math -w)
if(CODESIGN_NATIVE AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options({name} PRIVATE -march=native)
endif()
find_package(OpenMP)
if(OpenMP_CXX_FOUND)
  target_link_libraries({name} PUBLIC OpenMP::OpenMP_CXX)
endif()
# GEMM, found when this project is configured (nothing here names a folder of the machine
# that exported it): OpenBLAS from the scipy-openblas32 wheel, in CODESIGN_BLAS_DIR or, when
# that is empty, where the Python on PATH (or Python3_EXECUTABLE) has it installed; else a
# system OpenBLAS (unprefixed cblas_sgemm: find_library, then find_package(BLAS)); else the
# packed hand GEMM compiled into {name}.cpp. -DCODESIGN_USE_BLAS=OFF forces the hand GEMM.
option(CODESIGN_USE_BLAS "run fp32 GEMMs through OpenBLAS when it is found" ON)
set(CODESIGN_BLAS_DIR "" CACHE PATH "folder holding libscipy_openblas (scipy-openblas32 wheel); empty: ask Python")
if(CODESIGN_USE_BLAS)
  if(NOT CODESIGN_BLAS_DIR)
    find_package(Python3 COMPONENTS Interpreter QUIET)
    if(Python3_Interpreter_FOUND)
      execute_process(COMMAND ${{Python3_EXECUTABLE}} -c "import scipy_openblas32; print(scipy_openblas32.get_lib_dir())"
                      OUTPUT_VARIABLE CODESIGN_WHEEL_BLAS_DIR OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET
                      RESULT_VARIABLE CODESIGN_WHEEL_BLAS_RC)
      if(CODESIGN_WHEEL_BLAS_RC EQUAL 0)
        set(CODESIGN_BLAS_DIR "${{CODESIGN_WHEEL_BLAS_DIR}}")
      endif()
    endif()
  endif()
  if(CODESIGN_BLAS_DIR)
    find_library(CODESIGN_SCIPY_OPENBLAS NAMES scipy_openblas HINTS ${{CODESIGN_BLAS_DIR}} NO_DEFAULT_PATH)
  endif()
  if(CODESIGN_SCIPY_OPENBLAS)
    target_compile_definitions({name} PRIVATE CODESIGN_BLAS=1)
    target_link_libraries({name} PRIVATE ${{CODESIGN_SCIPY_OPENBLAS}})
    message(STATUS "GEMM: OpenBLAS (scipy-openblas32) ${{CODESIGN_SCIPY_OPENBLAS}}")
  else()
    find_library(CODESIGN_OPENBLAS NAMES openblas)
    if(NOT CODESIGN_OPENBLAS)
      set(BLA_VENDOR OpenBLAS)
      find_package(BLAS QUIET)
      if(BLAS_FOUND)
        set(CODESIGN_OPENBLAS ${{BLAS_LIBRARIES}})
      endif()
    endif()
    if(CODESIGN_OPENBLAS)
      target_compile_definitions({name} PRIVATE CODESIGN_BLAS=1 CODESIGN_BLAS_SYSTEM=1)
      target_link_libraries({name} PRIVATE ${{CODESIGN_OPENBLAS}})
      message(STATUS "GEMM: OpenBLAS (system) ${{CODESIGN_OPENBLAS}}")
    else()
      message(STATUS "GEMM: no BLAS found, using the packed hand GEMM")
    endif()
  endif()
endif()
add_executable({name}_main main.cpp)
target_link_libraries({name}_main PRIVATE {name})
'''


def _fill(t, name: str, var: str, random: bool) -> list[str]:
    from codesign.codegen.cpp import scalar as S
    ctype = S.storage(t.dtype)
    lines = [f"  {ctype}* {var} = ({ctype}*)std::calloc({max(t.numel, 1)}, sizeof({ctype}));  // %{name}: {t}",
             f"  owned.push_back({var});"]
    if random and t.dtype.is_float:
        conv = {"bf16": "cs_f32", "f16": "cs_f32"}.get(t.dtype.value)
        value = "(float)((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f"
        if conv:
            lines.append(f"  for (int64_t i = 0; i < {t.numel}; ++i) {{ float f = {value}; uint32_t u; std::memcpy(&u, &f, 4); "
                         f"{var}[i] = ({ctype})(u >> 16); }}  // truncated to 16 bits")
        else:
            lines.append(f"  for (int64_t i = 0; i < {t.numel}; ++i) {var}[i] = ({ctype})({value});")
    return lines


def export_name(graph_name: str) -> str:
    """The C identifier an export's files and entry points are named after (`mlp` ->
    `mlp.cpp`, `mlp_run`): the graph's name with other characters as `_`."""
    name = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in graph_name) or "model"
    return f"m_{name}" if name[0].isdigit() else name


def export_cpp(graph: Graph, state: Mapping[str, torch.Tensor], directory: str | Path,
               random_inputs: bool = True, overwrite: bool = False) -> Path:
    """Write `<name>.cpp`, `<name>.h`, the weights blob and its loader, `main.cpp`, `CMakeLists.txt`.

    `cmake -S dir -B dir/build && cmake --build dir/build && dir/build/<name>_main dir/<name>.weights.bin`
    builds and runs it on a machine with only cmake and a C++17 compiler (OpenMP if found;
    OpenBLAS found when configured — the scipy-openblas32 wheel of the Python on PATH, or
    `-DCODESIGN_BLAS_DIR=...`, or the system's —, `-DCODESIGN_USE_BLAS=OFF` for the hand GEMM).
    Float runtime inputs are pseudo-random (a fixed LCG), integer ones zero. The entry points
    are named after the model (`<name>_run(inputs, outputs)`, `<name>_error`, `<NAME>_NUM_INPUTS`:
    `export_name`), so two exported models link into one program.

    `directory` must be new, empty or a previous export (its `.codesign-export` marker lists
    what it wrote; `build/` is kept): anything else is refused with `ExportError` unless
    `overwrite` (then the files join the folder, over those of the same names), as is a
    symbolic link. Files are written into a staging folder that replaces `directory` only
    once all are written (`codesign.codegen.outdir`), so a failed export leaves no trace.
    """
    with staged_directory(directory, "codesign C++ export", keep=("build",), overwrite=overwrite) as stage:
        _write_export(graph, state, stage, random_inputs)
    return Path(directory)


def _write_export(graph: Graph, state: Mapping[str, torch.Tensor], stage: Stage, random_inputs: bool) -> None:
    from codesign.codegen.cpp import scalar as S
    name = export_name(graph.name)
    code = generate(graph, prefix=name)
    entry = entry_names(name)
    stage.write_text(f"{name}.cpp", code.source)
    stage.write_text(f"{name}.h", code.header)
    stage.write_text(f"{name}.csir", print_graph(graph))
    rows, offset = [], 0
    with stage.open(f"{name}.weights.bin") as blob:
        for i, inp in enumerate(graph.inputs):
            if not inp.kind.is_state:
                continue
            if inp.name not in state:
                raise CodegenError(f"export_cpp: no value for {inp.kind.value} %{inp.name}")
            tensor = CppModule._checked(state[inp.name], inp)
            data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""  # 0-d too
            pad = (-offset) % 64
            blob.write(b"\0" * pad)
            offset += pad
            rows.append(f"  {{{i}, {offset}, {len(data)}}},  // %{inp.name}: {inp.type}")
            blob.write(data)
            offset += len(data)
    if not rows:
        rows.append("  {-1, 0, 0},")
    stage.write_text(f"{name}_weights.h", LOADER.format(name=name, graph=graph.name, rows="\n".join(rows),
                                                     total=offset))
    inputs, outputs, checks = [], [], []
    for i, inp in enumerate(graph.inputs):
        if not inp.kind.is_state:
            inputs += _fill(inp.type, inp.name, f"in{i}", random_inputs)
            inputs.append(f"  inputs[{i}] = in{i};")
    for j, (o, t) in enumerate(zip(graph.outputs, graph.output_types())):
        outputs += _fill(t, o, f"out{j}", False)
        outputs.append(f"  outputs[{j}] = out{j};")
        ctype = S.storage(t.dtype)
        value = {"bf16": "(double)cs_bf16(p[i])", "f16": "(double)cs_f16(p[i])"}.get(t.dtype.value, "(double)p[i]")
        checks.append(f"  {{ const {ctype}* p = ({ctype}*)outputs[{j}]; double sum = 0, asum = 0;"
                      f" for (int64_t i = 0; i < {t.numel}; ++i) {{ double v = {value}; sum += v; asum += v < 0 ? -v : v; }}"
                      f" std::printf(\"output {j} %%{o} {t}: sum %.6e abs-sum %.6e\\n\", sum, asum); }}")
    helpers = ("static inline float cs_bf16(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; std::memcpy(&f, &u, 4); return f; }\n"
               "static inline float cs_f16(uint16_t h) { uint32_t s = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;"
               " if (e == 0) { float f = (float)m / 1024.0f / 16384.0f; return s ? -f : f; }"
               " u = e == 31 ? (s | 0x7f800000u | (m << 13)) : (s | ((e + 112) << 23) | (m << 13)); float f; std::memcpy(&f, &u, 4); return f; }\n")
    main = MAIN.format(name=name, graph=graph.name, what="pseudo-random" if random_inputs else "zero",
                       NUM_INPUTS=entry["NUM_INPUTS"], NUM_OUTPUTS=entry["NUM_OUTPUTS"], run=entry["run"],
                       gemm=entry["gemm"], inputs="\n".join(inputs), outputs="\n".join(outputs),
                       checks="\n".join(checks))
    main = main.replace('#include "' + name + '_weights.h"\n', '#include "' + name + '_weights.h"\n' + helpers)
    stage.write_text("main.cpp", main)
    stage.write_text("CMakeLists.txt", CMAKE.format(name=name))
