"""`codesign compile ... --emit KIND DIR`: the generated code of a compiled model, as files.

| kind     | what DIR receives                                                            |
|----------|------------------------------------------------------------------------------|
| `cpp`    | `export_cpp`: `<name>.cpp` / `.h`, weights blob and loader, `main.cpp`, `CMakeLists.txt` |
| `triton` | `<name>.py`: the `@triton.jit` kernels and host wrapper the Triton backend runs |
| `mlir`   | `<name>.mlir`: linalg on tensors (`codesign.export`)                         |
| `ir`     | `<name>.csir`: the compiled graph's text form                                |

Generating code needs no device: the Triton source is text (triton is imported only to run
it), the C++ is not compiled here. Each kind writes through `codegen.outdir.staged_directory`:
DIR must be new, empty or an earlier emit of the same kind, unless `overwrite`; nothing is
written when generation fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codesign.compiler import CompiledModule

KINDS = ("cpp", "triton", "mlir", "ir")
"""What `--emit` can write to a folder (`ir` and `mlir` also print to stdout without one)."""


def emit(module: CompiledModule, kind: str, directory: str | Path, overwrite: bool = False) -> list[Path]:
    """Write `module`'s generated code of `kind` (see the module docstring) into `directory`;
    returns the files written. Raises `CodegenError` when the backend cannot generate the
    graph, `ExportError` when `directory` holds files codesign did not write."""
    from codesign.codegen.cpp.module import export_name
    from codesign.codegen.outdir import staged_directory
    if kind not in KINDS:
        raise ValueError(f"--emit {kind}: not one of {', '.join(KINDS)}")
    if kind == "cpp":
        out = module.export_cpp(directory, overwrite=overwrite)
        return sorted(p for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    name = export_name(module.graph.name)
    text, suffix = generated_source(module, kind)
    with staged_directory(directory, f"codesign {kind} emit", overwrite=overwrite) as stage:
        stage.write_text(f"{name}.{suffix}", text)
    return [Path(directory) / f"{name}.{suffix}"]


def generated_source(module: CompiledModule, kind: str) -> tuple[str, str]:
    """(text, file suffix) of one single-file kind."""
    if kind == "ir":
        from codesign.ir import print_graph
        return print_graph(module.graph), "csir"
    if kind == "mlir":
        return module.to_mlir().rstrip("\n") + "\n", "mlir"
    return triton_source(module), "py"


def triton_source(module: CompiledModule) -> str:
    """The Triton wrapper module the `triton` backend would run for `module` (its graph after
    `partition{backend=triton}`), generated without importing triton or needing a GPU."""
    from codesign.codegen import CodegenError
    from codesign.codegen.registry import get_backend
    from codesign.codegen.triton.wrapper import generate, wrapper_source
    backend = get_backend("triton")
    graph = module.graph_for("triton")
    check = module.backend_options.get("triton", {}).get("check_indices", True)
    try:
        program = generate(graph, tuple(module.target.tier_names), bool(check))
    except backend.failures() as exc:
        raise CodegenError(f"triton backend cannot generate @{graph.name}: {exc}") from exc
    return wrapper_source(program)
