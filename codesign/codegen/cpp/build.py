"""Build a translation unit with the system compiler, cached on disk, and load it.

GEMMs go through BLAS when one is found: the `scipy-openblas32` wheel (OpenBLAS with
`scipy_`-prefixed symbols, installable from PyPI with no system packages) is linked with
an rpath to its folder and the source is compiled with `-DCODESIGN_BLAS`; without the
wheel, or with `CODESIGN_BLAS=0` in the environment, the generated code's own packed GEMM
runs. The cache key hashes the IR text, the target name, the compiler's version line, the
host CPU (the build uses -march=native), codesign's version, the BLAS and the generated
source; a hit skips the compiler entirely. The cache lives in `$CODESIGN_CACHE_DIR` or
`~/.cache/codesign/cpp`; writes go through a temporary name and an atomic rename.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from codesign.codegen import CodegenError

CXX_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17",
             "-fno-math-errno", "-fno-trapping-math", "-w")


def cache_dir() -> Path:
    root = os.environ.get("CODESIGN_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "codesign" / "cpp"


def compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not cxx:
        raise CodegenError("no C++ compiler found (install g++ or set CXX)")
    return cxx


@functools.lru_cache(maxsize=None)
def compiler_version(cxx: str) -> str:
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else cxx


@functools.lru_cache(maxsize=None)
def cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.uname().machine
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = (s.strip() for s in line.split(":", 1))
            if k in ("model name", "flags") and k not in fields:
                fields[k] = v
    return hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Blas:
    """A CBLAS to link: its name (for reports), library folder and `-l` name, header folder."""

    name: str
    lib_dir: Path
    library: str
    include_dir: Path | None = None

    @property
    def flags(self) -> list[str]:
        return ["-DCODESIGN_BLAS=1", f"-L{self.lib_dir}", f"-l{self.library}", f"-Wl,-rpath,{self.lib_dir}"]


BLAS_NAME = "OpenBLAS (scipy-openblas32)"


def blas_enabled() -> bool:
    return os.environ.get("CODESIGN_BLAS", "1").strip().lower() not in ("0", "off", "no", "false", "none")


@functools.lru_cache(maxsize=None)
def _scipy_openblas32() -> Blas | None:
    try:
        import scipy_openblas32 as wheel
    except ImportError:
        return None
    lib_dir = Path(wheel.get_lib_dir())
    library = wheel.get_library()
    if not any(lib_dir.glob(f"lib{library}.*")):
        return None
    return Blas(BLAS_NAME, lib_dir, library, Path(wheel.get_include_dir()))


def find_blas() -> Blas | None:
    """The BLAS that fp32 GEMMs go through, or None (hand GEMM): scipy-openblas32 if installed."""
    return _scipy_openblas32() if blas_enabled() else None


def cache_key(ir_text: str, source: str, target: str, blas: Blas | None = None) -> str:
    from codesign import __version__
    cxx = compiler()
    parts = [ir_text, target, compiler_version(cxx), cpu_id(), __version__, " ".join(CXX_FLAGS), source,
             " ".join(blas.flags) if blas else "no-blas"]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Built:
    library: Path
    source: Path
    key: str
    cached: bool  # True when the library came from the cache (no compiler run)
    seconds: float  # compile time (0 on a cache hit)
    blas: Blas | None = None  # the BLAS it links (None: the hand GEMM)


def build(name: str, source: str, ir_text: str, target: str = "host", blas: Blas | None = None) -> Built:
    """The shared library for `source`, from the cache or freshly compiled (linking `blas`)."""
    key = cache_key(ir_text, source, target, blas)
    folder = cache_dir() / key
    lib = folder / f"{name}.so"
    src = folder / f"{name}.cpp"
    if lib.exists():
        return Built(lib, src, key, True, 0.0, blas)
    folder.mkdir(parents=True, exist_ok=True)
    src.write_text(source)
    cxx = compiler()
    start = time.perf_counter()
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".so", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        proc = subprocess.run([cxx, *CXX_FLAGS, str(src), "-o", str(tmp_path), *(blas.flags if blas else [])], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CodegenError(f"{cxx} failed on {src}:\n{proc.stderr[-4000:]}")
        os.replace(tmp_path, lib)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return Built(lib, src, key, False, time.perf_counter() - start, blas)


def load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.run.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)]
    lib.run.restype = ctypes.c_int
    lib.codesign_arena_bytes.restype = ctypes.c_int64
    lib.codesign_gemm.restype = ctypes.c_char_p
    return lib
